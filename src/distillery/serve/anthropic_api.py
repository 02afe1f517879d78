"""Anthropic Messages on the wire: request -> neutral messages, routed turns -> message or SSE events.

Shapes follow https://docs.anthropic.com/en/api/messages and the streaming guide: a `message`
with content blocks (`text`, `tool_use`, `thinking`), `stop_reason` and `usage`; streams as
`message_start`, then per block `content_block_start` / `content_block_delta` (`text_delta`,
`input_json_delta`, `thinking_delta`, `signature_delta`) / `content_block_stop`, then
`message_delta` (stop reason, output tokens) and `message_stop`. Errors use
`{"type": "error", "error": {"type", "message"}}`. Routing facts ride in an extra top-level
`distillery` object, which the official SDK keeps (`message.model_extra`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery.formats.anthropic import stop_reason_to_wire
from distillery.serve.backend import GatewayError, RoutedTurn, StepOptions, json_dumps
from distillery.serve.openai_api import text_pieces
from distillery.trajectory import Message, ThinkingBlock, ToolCall, ToolSpec, Turn


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               502: "api_error", 503: "overloaded_error", 504: "api_error", 529: "overloaded_error"}


@dataclass
class MessagesRequest:
    model: str
    messages: list[Message]
    tools: list[ToolSpec]
    options: StepOptions
    stream: bool = False
    thinking: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


# --------------------------------------------------------------------------------------------------
# Request
# --------------------------------------------------------------------------------------------------


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise GatewayError(f"{where}: content must be a string or a list of content blocks")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise GatewayError(f"{where}[{i}]: each content block needs a 'type'")
    return content


def _tool_result_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text":
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise GatewayError(f"{where}[{i}]: tool_result content of type {kind!r} is not supported; send text")
            texts.append(str(block.get("text", "")))
        return "\n".join(texts)
    raise GatewayError(f"{where}: tool_result content must be a string or a list of text blocks")


def _system_text(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(str(b.get("text", "")) for b in _blocks(system, "system") if b.get("type") == "text")
    raise GatewayError("'system' must be a string or a list of text blocks")


def parse_messages(raw_messages: Any, system: Any = None) -> list[Message]:
    if not isinstance(raw_messages, list) or not raw_messages:
        raise GatewayError("messages: must be a non-empty list")
    messages: list[Message] = []
    system_text = _system_text(system)
    if system_text:
        messages.append(Message(role="system", content=system_text))
    call_names: dict[str, str] = {}
    # Anthropic's rule: the tool_use blocks of an assistant turn are answered, each by a
    # tool_result, in the very next (user) message, and a tool_result answers only those.
    previous_uses: dict[str, None] = {}
    for i, raw in enumerate(raw_messages):
        where = f"messages.{i}"
        if not isinstance(raw, dict):
            raise GatewayError(f"{where}: must be an object with 'role' and 'content'")
        role = raw.get("role")
        blocks = _blocks(raw.get("content"), f"{where}.content")
        uses, previous_uses = previous_uses, {}
        if role != "user":
            _check_answered(uses, [], i - 1)
        if role == "user":
            texts: list[str] = []
            for j, block in enumerate(blocks):
                kind = block["type"]
                if kind == "text":
                    texts.append(str(block.get("text", "")))
                elif kind == "tool_result":
                    call_id = block.get("tool_use_id")
                    if not isinstance(call_id, str) or not call_id:
                        raise GatewayError(f"{where}.content.{j}.tool_use_id: Field required")
                    if call_id not in uses:
                        raise GatewayError(
                            f"{where}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {call_id}. "
                            "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        )
                    messages.append(Message(
                        role="tool", tool_call_id=call_id, name=call_names.get(call_id),
                        content=_tool_result_text(block.get("content"), f"{where}.content.{j}.content"),
                        is_error=bool(block.get("is_error", False)),
                    ))
                else:
                    raise GatewayError(f"{where}.content.{j}: block type {kind!r} is not supported here; "
                                     "send text or tool_result")
            _check_answered(uses, [b.get("tool_use_id") for b in blocks if b["type"] == "tool_result"], i - 1)
            if texts:
                messages.append(Message(role="user", content="\n".join(texts)))
        elif role == "assistant":
            text_parts: list[str] = []
            calls: list[ToolCall] = []
            thinking: list[ThinkingBlock] = []
            for j, block in enumerate(blocks):
                kind = block["type"]
                if kind == "text":
                    text_parts.append(str(block.get("text", "")))
                elif kind == "tool_use":
                    name, call_id, arguments = block.get("name"), block.get("id"), block.get("input", {})
                    if not isinstance(name, str) or not isinstance(call_id, str) or not isinstance(arguments, dict):
                        raise GatewayError(f"{where}.content.{j}: tool_use needs 'id', 'name' and an 'input' object")
                    calls.append(ToolCall(id=call_id, name=name, arguments=arguments))
                    call_names[call_id] = name
                    previous_uses[call_id] = None
                elif kind == "thinking":
                    thinking.append(ThinkingBlock(thinking=str(block.get("thinking", "")), signature=block.get("signature")))
                elif kind == "redacted_thinking":
                    thinking.append(ThinkingBlock(type="redacted_thinking", data=block.get("data")))
                else:
                    raise GatewayError(f"{where}.content.{j}: block type {kind!r} is not supported in an assistant turn")
            messages.append(Message(role="assistant", content="".join(text_parts), tool_calls=calls, thinking=thinking))
        else:
            raise GatewayError(f"{where}.role: Input should be 'user' or 'assistant'")
    return messages


def _check_answered(uses: dict[str, None], answered: list[Any], at: int) -> None:
    missing = [call_id for call_id in uses if call_id not in answered]
    if missing:
        raise GatewayError(
            f"messages.{at}: `tool_use` ids were found without `tool_result` blocks immediately after: "
            f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the "
            "next message."
        )


def parse_tools(raw_tools: Any) -> list[ToolSpec]:
    if raw_tools is None:
        return []
    if not isinstance(raw_tools, list):
        raise GatewayError("tools: must be a list")
    specs = []
    for i, raw in enumerate(raw_tools):
        if not isinstance(raw, dict):
            raise GatewayError(f"tools.{i}: must be an object")
        if raw.get("type") not in (None, "custom"):
            raise GatewayError(f"tools.{i}: server tool {raw.get('type')!r} is not supported by this gateway; "
                             "define client tools with name, description and input_schema")
        name, schema = raw.get("name"), raw.get("input_schema")
        if not isinstance(name, str) or not name:
            raise GatewayError(f"tools.{i}.name: Field required")
        if not isinstance(schema, dict):
            raise GatewayError(f"tools.{i}.input_schema: Field required")
        specs.append(ToolSpec(name=name, description=raw.get("description") or "", parameters=schema))
    return specs


def parse_tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """Anthropic's tool_choice as the neutral (OpenAI) spelling, plus its parallel-call setting."""
    if choice is None:
        return None, None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise GatewayError("tool_choice: must be {\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice["type"]
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise GatewayError("tool_choice.name: Field required")
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[kind], parallel


def parse_request(body: Any) -> MessagesRequest:
    if not isinstance(body, dict):
        raise GatewayError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError("model: Field required")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise GatewayError("max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise GatewayError("max_tokens: must be a positive integer")
    # Omitted temperature means greedy here (the API's default is 1.0): the cascade's thresholds
    # were calibrated on greedy proposals. Send a temperature to sample.
    temperature = body.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.0 <= temperature <= 1.0:
        raise GatewayError("temperature: must be a number in [0, 1]")
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise GatewayError("stop_sequences: must be a list of strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise GatewayError("stream: must be true or false")
    overrides = body.get("distillery") or {}
    if not isinstance(overrides, dict):
        raise GatewayError("distillery: must be an object, e.g. {\"threshold\": 0.4} or {\"tier\": 0}")
    tool_choice, parallel = parse_tool_choice(body.get("tool_choice"))
    thinking = body.get("thinking")
    options = StepOptions(temperature=float(temperature), max_tokens=max_tokens, tool_choice=tool_choice,
                          parallel_tool_calls=parallel, stop=stop)
    return MessagesRequest(
        model=model,
        messages=parse_messages(body.get("messages"), body.get("system")),
        tools=parse_tools(body.get("tools")),
        options=options,
        stream=stream,
        thinking=isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"),
        overrides=overrides,
    )


# --------------------------------------------------------------------------------------------------
# Response
# --------------------------------------------------------------------------------------------------


def content_blocks(turn: Turn, *, thinking: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if thinking:
        for block in turn.thinking:
            if block.type == "redacted_thinking":
                blocks.append({"type": "redacted_thinking", "data": block.data or ""})
            else:
                blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature or ""})
    if turn.text or not turn.tool_calls:
        blocks.append({"type": "text", "text": turn.text})
    for call in turn.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    return blocks


def usage_body(routed: RoutedTurn) -> dict[str, Any]:
    usage = routed.usage
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens}


def message_body(routed: RoutedTurn, *, model: str, message_id: str, thinking: bool) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(routed.turn, thinking=thinking),
        "stop_reason": stop_reason_to_wire(routed.turn.stop_reason),
        "stop_sequence": None,
        "usage": usage_body(routed),
        "distillery": routed.summary(),
    }


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + json_dumps(data).encode("utf-8") + b"\n\n"


def _pieces(text: str, size: int) -> list[str]:
    return text_pieces(text, size) or [""]


def stream_events(routed: RoutedTurn, *, model: str, message_id: str, thinking: bool) -> Iterator[bytes]:
    """The finished turn as the documented Messages stream event sequence."""
    usage = usage_body(routed)
    start = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 0},
             # Routed before the first byte: the record is already final here.
             "distillery": routed.summary()}
    yield event("message_start", {"type": "message_start", "message": start})
    yield event("ping", {"type": "ping"})
    for index, block in enumerate(content_blocks(routed.turn, thinking=thinking)):
        kind = block["type"]
        if kind == "text":
            yield event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "text", "text": ""}})
            for piece in _pieces(block["text"], 24):
                if piece:
                    yield event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "text_delta", "text": piece}})
        elif kind == "tool_use":
            yield event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "tool_use", "id": block["id"],
                                                                  "name": block["name"], "input": {}}})
            arguments = json.dumps(block["input"], ensure_ascii=False)
            for i in range(0, len(arguments), 32):
                yield event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "input_json_delta",
                                                              "partial_json": arguments[i : i + 32]}})
        elif kind == "thinking":
            yield event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            for piece in _pieces(block["thinking"], 48):
                if piece:
                    yield event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "thinking_delta", "thinking": piece}})
            if block["signature"]:
                yield event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "signature_delta", "signature": block["signature"]}})
        else:  # redacted_thinking arrives whole
            yield event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        yield event("content_block_stop", {"type": "content_block_stop", "index": index})
    yield event("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": stop_reason_to_wire(routed.turn.stop_reason),
                                            "stop_sequence": None},
                                  "usage": usage})
    yield event("message_stop", {"type": "message_stop"})


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]
