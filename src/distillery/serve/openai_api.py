"""OpenAI Chat Completions on the wire: request -> neutral messages, routed turns -> response or SSE.

Shapes follow https://platform.openai.com/docs/api-reference/chat: `chat.completion` bodies,
`chat.completion.chunk` streams ending in `data: [DONE]`, tool-call arguments as JSON *strings*,
and errors in the `{"error": {"message", "type", "param", "code"}}` envelope. Routing facts ride in
an extra top-level `distillery` object, which the official SDK keeps (`completion.model_extra`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery.formats.openai import stop_reason_to_wire
from distillery.serve.backend import GatewayError, RoutedTurn, StepOptions, json_dumps
from distillery.trajectory import Message, ThinkingBlock, ToolCall, ToolSpec, Turn


ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 502: "server_error", 503: "server_error", 504: "server_error"}
ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 413: "request_too_large"}


@dataclass
class ChatRequest:
    model: str
    messages: list[Message]
    tools: list[ToolSpec]
    options: StepOptions
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": ERROR_CODES.get(status)}}


# --------------------------------------------------------------------------------------------------
# Request
# --------------------------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    """A message's content as text: a string, null, or a list of `{"type": "text"}` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise GatewayError(f"{where}[{i}]: content part of type {kind!r} is not supported; send text",
                                 param=f"{where}[{i}]")
            texts.append(str(part.get("text", part.get("refusal", ""))))
        return "".join(texts)
    raise GatewayError(f"{where}: content must be a string or a list of text parts", param=where)


def _tool_call(raw: Any, where: str) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise GatewayError(f"{where}: each tool call needs a 'function' object", param=where)
    function = raw["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise GatewayError(f"{where}.function.name is missing", param=f"{where}.function.name")
    arguments = function.get("arguments", "{}")
    call = ToolCall(id=str(raw.get("id") or "call_" + uuid.uuid4().hex[:24]), name=name)
    if isinstance(arguments, dict):  # lenient: some clients send the object itself
        call.arguments = arguments
        return call
    try:
        parsed = json.loads(arguments or "{}")
    except (TypeError, json.JSONDecodeError) as exc:
        # What the model wrote earlier is kept exactly, so the conversation replays as it happened.
        call.raw_arguments, call.parse_error = str(arguments), f"invalid JSON: {exc}"
        return call
    if isinstance(parsed, dict):
        call.arguments = parsed
    else:
        call.raw_arguments, call.parse_error = arguments, "arguments are not a JSON object"
    return call


def parse_messages(raw_messages: Any) -> list[Message]:
    if not isinstance(raw_messages, list) or not raw_messages:
        raise GatewayError("'messages' must be a non-empty list", param="messages")
    messages: list[Message] = []
    call_names: dict[str, str] = {}
    # The calls of the last assistant message that still want a tool message, and where it was:
    # OpenAI answers 400 when a tool message answers nothing or a call goes unanswered.
    unanswered: dict[str, None] = {}
    calls_at: int | None = None
    for i, raw in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(raw, dict):
            raise GatewayError(f"{where} must be an object", param=where)
        role = raw.get("role")
        if role != "tool":
            _check_answered(unanswered, calls_at)
            calls_at = None
        if role in ("system", "developer"):
            messages.append(Message(role="system", content=_text_of(raw.get("content"), f"{where}.content")))
        elif role == "user":
            messages.append(Message(role="user", content=_text_of(raw.get("content"), f"{where}.content")))
        elif role == "assistant":
            raw_calls = raw.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise GatewayError(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
            calls = [_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls)]
            call_names.update({c.id: c.name for c in calls})
            if calls:
                unanswered, calls_at = dict.fromkeys(c.id for c in calls), i
            reasoning = raw.get("reasoning_content")
            messages.append(Message(
                role="assistant",
                content=_text_of(raw.get("content"), f"{where}.content"),
                tool_calls=calls,
                thinking=[ThinkingBlock(thinking=reasoning)] if isinstance(reasoning, str) and reasoning else [],
            ))
        elif role == "tool":
            call_id = raw.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise GatewayError(f"{where}.tool_call_id is missing", param=f"{where}.tool_call_id")
            if calls_at is None:
                raise GatewayError("Invalid parameter: messages with role 'tool' must be a response to a preceding "
                                   "message with 'tool_calls'.", param=f"{where}.role")
            if call_id not in unanswered:
                raise GatewayError(f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
                                   "previous message.", param=f"{where}.tool_call_id")
            del unanswered[call_id]
            messages.append(Message(role="tool", content=_text_of(raw.get("content"), f"{where}.content"),
                                    tool_call_id=call_id, name=call_names.get(call_id, raw.get("name"))))
        else:
            raise GatewayError(f"{where}.role {role!r} is not supported; use system, developer, user, assistant or tool",
                             param=f"{where}.role")
    _check_answered(unanswered, calls_at)
    return messages


def _check_answered(unanswered: dict[str, None], calls_at: int | None) -> None:
    """OpenAI's rule: an assistant message's tool calls are each answered before anything else."""
    if calls_at is not None and unanswered:
        raise GatewayError(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(unanswered)}",
            param=f"messages[{calls_at}].role",
        )


def parse_tools(raw_tools: Any) -> list[ToolSpec]:
    if raw_tools is None:
        return []
    if not isinstance(raw_tools, list):
        raise GatewayError("'tools' must be a list", param="tools")
    specs = []
    for i, raw in enumerate(raw_tools):
        where = f"tools[{i}]"
        if not isinstance(raw, dict) or raw.get("type", "function") != "function" or not isinstance(raw.get("function"), dict):
            raise GatewayError(f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}", param=where)
        function = raw["function"]
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise GatewayError(f"{where}.function.name is missing", param=f"{where}.function.name")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise GatewayError(f"{where}.function.parameters must be a JSON Schema object", param=f"{where}.function.parameters")
        specs.append(ToolSpec(name=function["name"], description=function.get("description") or "", parameters=parameters))
    return specs


def _number(body: dict, key: str, kind: type, low: float, high: float | None) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise GatewayError(f"'{key}' must be {'an integer' if kind is int else 'a number'}", param=key)
    if value < low or (high is not None and value > high):
        raise GatewayError(f"'{key}' = {value} is outside [{low}, {high if high is not None else 'inf'}]", param=key)
    return kind(value)


def parse_tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        return {"type": "function", "function": {"name": choice["function"]["name"]}}
    raise GatewayError("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                     "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")


def parse_request(body: Any) -> ChatRequest:
    """Validate a chat completions body; a `GatewayError` names the offending field."""
    if not isinstance(body, dict):
        raise GatewayError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError("'model' is required", param="model")
    messages = parse_messages(body.get("messages"))
    tools = parse_tools(body.get("tools"))
    max_tokens = _number(body, "max_completion_tokens", int, 1, None) or _number(body, "max_tokens", int, 1, None)
    top_logprobs = _number(body, "top_logprobs", int, 0, 20) or 0
    logprobs = body.get("logprobs") or False
    if not isinstance(logprobs, bool):
        raise GatewayError("'logprobs' must be true or false", param="logprobs")
    if top_logprobs and not logprobs:
        raise GatewayError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise GatewayError("'stop' must be a string or a list of strings", param="stop")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise GatewayError("'parallel_tool_calls' must be true or false", param="parallel_tool_calls")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise GatewayError("'stream' must be true or false", param="stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise GatewayError("'stream_options' must be an object", param="stream_options")
    overrides = body.get("distillery") or {}
    if not isinstance(overrides, dict):
        raise GatewayError("'distillery' must be an object, e.g. {\"threshold\": 0.4} or {\"tier\": 0}", param="distillery")
    temperature = _number(body, "temperature", float, 0.0, 2.0)
    options = StepOptions(
        # Omitted means greedy (the API's default is 1.0): thresholds are calibrated on greedy proposals.
        temperature=0.0 if temperature is None else temperature,
        max_tokens=max_tokens,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        tool_choice=parse_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=parallel,
        stop=stop,
    )
    return ChatRequest(model=model, messages=messages, tools=tools, options=options,
                       n=_number(body, "n", int, 1, 16) or 1, stream=stream,
                       include_usage=bool(stream_options.get("include_usage")), overrides=overrides)


# --------------------------------------------------------------------------------------------------
# Response
# --------------------------------------------------------------------------------------------------


def _arguments_json(call: ToolCall) -> str:
    if call.parse_error is not None and call.raw_arguments is not None:
        return call.raw_arguments
    return json.dumps(call.arguments, ensure_ascii=False)


def _logprobs(turn: Turn) -> dict[str, Any] | None:
    if turn.logprobs is None:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        "content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(a.token, a.logprob) for a in t.top]}
                    for t in turn.logprobs],
        "refusal": None,
    }


def _message(turn: Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text if (turn.text or not turn.tool_calls) else None,
                               "refusal": None, "annotations": []}
    if turn.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": _arguments_json(c)}}
                                 for c in turn.tool_calls]
    thinking = "".join(b.thinking for b in turn.thinking if b.type == "thinking")
    if thinking:
        message["reasoning_content"] = thinking  # the vLLM / DeepSeek spelling for visible reasoning
    return message


def usage_body(routed: list[RoutedTurn]) -> dict[str, Any]:
    prompt = sum(r.usage.input_tokens + r.usage.cache_read_input_tokens + r.usage.cache_creation_input_tokens
                 for r in routed)
    completion = sum(r.usage.output_tokens for r in routed)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(r.usage.cache_read_input_tokens for r in routed)},
        "completion_tokens_details": {"reasoning_tokens": sum(r.usage.reasoning_tokens for r in routed)},
    }


def distillery_field(routed: list[RoutedTurn]) -> dict[str, Any]:
    """Routing facts for the response: the first choice's at top level, every choice's in `choices`."""
    first = routed[0].summary()
    if len(routed) > 1:
        first["choices"] = [r.summary() for r in routed]
        first["cost_usd"] = sum(r.cost_usd for r in routed)
    return first


def completion_body(routed: list[RoutedTurn], *, model: str, request_id: str, created: int,
                    logprobs: bool) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": i, "message": _message(r.turn), "logprobs": _logprobs(r.turn) if logprobs else None,
             "finish_reason": stop_reason_to_wire(r.turn.stop_reason)}
            for i, r in enumerate(routed)
        ],
        "usage": usage_body(routed),
        "system_fingerprint": None,
        "service_tier": "default",
        "distillery": distillery_field(routed),
    }


_PIECE = re.compile(r"\s*\S+\s*|\s+")


def text_pieces(text: str, size: int = 24) -> list[str]:
    """Split finished text into stream deltas of about `size` characters at word boundaries."""
    pieces: list[str] = []
    current = ""
    for word in _PIECE.findall(text):
        if current and len(current) + len(word) > size:
            pieces.append(current)
            current = ""
        current += word
    if current:
        pieces.append(current)
    return pieces


def _fragments(text: str, size: int = 32) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sse(data: Any) -> bytes:
    return b"data: " + json_dumps(data).encode("utf-8") + b"\n\n"


def stream_chunks(routed: list[RoutedTurn], *, model: str, request_id: str, created: int, logprobs: bool,
                  include_usage: bool) -> Iterator[bytes]:
    """The finished turns as `chat.completion.chunk` events, then `data: [DONE]`.

    Per choice: a role delta, content deltas (logprobs ride on the first), tool-call deltas (index,
    id, type and name first, then argument fragments), and a chunk with the finish reason. With
    `stream_options.include_usage` every chunk has `usage: null` and a last chunk with no choices
    carries the usage, as the API documents.
    """
    base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None, "service_tier": "default"}
    usage_null = {"usage": None} if include_usage else {}

    def chunk(index: int, delta: dict[str, Any], *, finish: str | None = None, lp: Any = None,
              extra: dict[str, Any] | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return sse({**base, "choices": [choice], **usage_null, **(extra or {})})

    for index, r in enumerate(routed):
        turn = r.turn
        # The routing record goes on the very first chunk: it was decided before the stream began.
        yield chunk(index, {"role": "assistant", "content": "", "refusal": None},
                    extra={"distillery": distillery_field(routed)} if index == 0 else None)
        lp = _logprobs(turn) if logprobs else None
        pieces = text_pieces(turn.text)
        if lp is not None and not pieces:
            pieces = [""]
        for j, piece in enumerate(pieces):
            yield chunk(index, {"content": piece}, lp=lp if j == 0 else None)
        thinking = "".join(b.thinking for b in turn.thinking if b.type == "thinking")
        if thinking:
            yield chunk(index, {"reasoning_content": thinking})
        for k, call in enumerate(turn.tool_calls):
            yield chunk(index, {"tool_calls": [{"index": k, "id": call.id, "type": "function",
                                                "function": {"name": call.name, "arguments": ""}}]})
            for fragment in _fragments(_arguments_json(call)):
                yield chunk(index, {"tool_calls": [{"index": k, "function": {"arguments": fragment}}]})
        yield chunk(index, {}, finish=stop_reason_to_wire(turn.stop_reason))
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage_body(routed)})
    yield b"data: [DONE]\n\n"


def new_ids() -> tuple[str, int]:
    return "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
