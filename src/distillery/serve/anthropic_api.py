"""Anthropic Messages on the wire: request -> neutral messages, routed turns -> message or SSE events.

Shapes follow https://docs.anthropic.com/en/api/messages and the streaming guide: a `message`
with content blocks (`text`, `tool_use`, `thinking`), `stop_reason` and `usage`; streams as
`message_start`, then per block `content_block_start` / `content_block_delta` (`text_delta`,
`input_json_delta`, `thinking_delta`, `signature_delta`) / `content_block_stop`, then
`message_delta` (stop reason, output tokens) and `message_stop`. Errors use
`{"type": "error", "error": {"type", "message"}}`. Routing facts ride in an extra top-level
`distillery` object, which the official SDK keeps (`message.model_extra`). Messages, content blocks
and tools convert in `distillery.formats.anthropic`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery.formats import anthropic as anthropic_format
from distillery.formats.anthropic import stop_reason_to_wire
from distillery.serve.backend import GatewayError, RoutedTurn, StepOptions, json_dumps
from distillery.serve.openai_api import from_wire, text_pieces
from distillery.trajectory import Message, ToolSpec


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
    tool_choice, parallel = from_wire(anthropic_format.tool_choice_from_wire, body.get("tool_choice"))
    thinking = body.get("thinking")
    options = StepOptions(temperature=float(temperature), max_tokens=max_tokens, tool_choice=tool_choice,
                          parallel_tool_calls=parallel, stop=stop)
    return MessagesRequest(
        model=model,
        messages=from_wire(anthropic_format.messages_from_wire, body.get("messages"), body.get("system")),
        tools=from_wire(anthropic_format.tools_from_wire, body.get("tools")),
        options=options,
        stream=stream,
        thinking=isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"),
        overrides=overrides,
    )


# --------------------------------------------------------------------------------------------------
# Response
# --------------------------------------------------------------------------------------------------


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
        "content": anthropic_format.turn_to_wire(routed.turn, thinking=thinking),
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
    for index, block in enumerate(anthropic_format.turn_to_wire(routed.turn, thinking=thinking)):
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
