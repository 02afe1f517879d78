"""OpenAI Chat Completions on the wire: request -> neutral messages, routed turns -> response or SSE.

Messages, tool calls and tools convert in `distillery.formats.openai`; this module reads the rest of
a request (sampling options, streaming, routing overrides) and writes whole responses and streams.

Shapes follow https://platform.openai.com/docs/api-reference/chat: `chat.completion` bodies,
`chat.completion.chunk` streams ending in `data: [DONE]`, tool-call arguments as JSON *strings*,
and errors in the `{"error": {"message", "type", "param", "code"}}` envelope. Routing facts ride in
an extra top-level `distillery` object, which the official SDK keeps (`completion.model_extra`).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery.formats import WireFormatError
from distillery.formats import openai as openai_format
from distillery.formats.openai import stop_reason_to_wire
from distillery.serve.backend import GatewayError, RoutedTurn, StepOptions, json_dumps
from distillery.trajectory import Message, ToolSpec, Turn


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


def from_wire(convert: Callable[..., Any], *values: Any) -> Any:
    """`convert(*values)`, with a payload that breaks the format answered as a 400 naming the field."""
    try:
        return convert(*values)
    except WireFormatError as exc:
        raise GatewayError(str(exc), param=exc.param) from None


def _number(body: dict, key: str, kind: type, low: float, high: float | None) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise GatewayError(f"'{key}' must be {'an integer' if kind is int else 'a number'}", param=key)
    if value < low or (high is not None and value > high):
        raise GatewayError(f"'{key}' = {value} is outside [{low}, {high if high is not None else 'inf'}]", param=key)
    return kind(value)


def parse_request(body: Any) -> ChatRequest:
    """Validate a chat completions body; a `GatewayError` names the offending field."""
    if not isinstance(body, dict):
        raise GatewayError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError("'model' is required", param="model")
    messages = from_wire(openai_format.messages_from_wire, body.get("messages"))
    tools = from_wire(openai_format.tools_from_wire, body.get("tools"))
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
        tool_choice=from_wire(openai_format.tool_choice_from_wire, body.get("tool_choice")),
        parallel_tool_calls=parallel,
        stop=stop,
    )
    return ChatRequest(model=model, messages=messages, tools=tools, options=options,
                       n=_number(body, "n", int, 1, 16) or 1, stream=stream,
                       include_usage=bool(stream_options.get("include_usage")), overrides=overrides)


# --------------------------------------------------------------------------------------------------
# Response
# --------------------------------------------------------------------------------------------------


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
            {"index": i, "message": openai_format.turn_to_wire(r.turn), "logprobs": _logprobs(r.turn) if logprobs else None,
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
        thinking = openai_format.thinking_to_wire(turn.thinking)
        if thinking:
            yield chunk(index, {"reasoning_content": thinking})
        for k, call in enumerate(turn.tool_calls):
            # The call's id, type and name come first, its arguments after in fragments.
            yield chunk(index, {"tool_calls": [{"index": k, **openai_format.tool_call_dict(call.id, call.name, "")}]})
            for fragment in _fragments(openai_format.call_arguments(call)):
                yield chunk(index, {"tool_calls": [{"index": k, "function": {"arguments": fragment}}]})
        yield chunk(index, {}, finish=stop_reason_to_wire(turn.stop_reason))
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage_body(routed)})
    yield b"data: [DONE]\n\n"


def new_ids() -> tuple[str, int]:
    return "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
