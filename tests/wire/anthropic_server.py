"""A local server speaking the Anthropic Messages API wire format, for tests of real SDK clients.

    with ScriptedAnthropicServer() as server:
        server.enqueue(message([tool_use_block("toolu_1", "add", {"a": 2, "b": 3})], stop_reason="tool_use"))
        client = anthropic.Anthropic(api_key="test", base_url=server.base_url)
        ...
        server.requests[0].json            # the body the SDK sent
        server.requests[0].headers["x-api-key"]

Response bodies follow https://docs.anthropic.com/en/api/messages (ids, `type: "message"`,
`usage` with the cache counters) and errors the documented `{"type": "error", "error": {...}}`
envelope with a `request-id` header, so the official SDK parses them exactly as it parses the
real API's.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI

from tests.wire.scripted_server import RecordedRequest, ScriptedServer

# HTTP status -> the `error.type` the API documents for it.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ScriptedAnthropicServer(ScriptedServer):
    """`POST /v1/messages` answered from the queue (or `responder`)."""

    def add_routes(self, app: FastAPI) -> None:
        app.add_api_route("/v1/messages", self.handle, methods=["POST"])

    def not_found_body(self, message: str) -> dict:
        return error_body(400, message)[1]

    @property
    def base_url(self) -> str:
        # The SDK appends `/v1/messages` itself.
        return f"http://127.0.0.1:{self.port}"


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def thinking_block(thinking: str, signature: str | None = None) -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature or "sig_" + uuid.uuid4().hex}


def redacted_thinking_block(data: str) -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


def tool_use_block(id: str | None, name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id or _id("toolu_"), "name": name, "input": input}


def message(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "end_turn",
    model: str = "claude-opus-4-6",
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    stop_sequence: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Messages API response body."""
    return {
        "id": _id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": cache_creation_input_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
            "service_tier": "standard",
        },
        **extra,
    }


def error_body(status: int, message: str, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    """An error reply `(status, body, headers)` in the documented envelope, with a request id."""
    request_id = _id("req_")
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }
    return status, body, {"request-id": request_id, **(headers or {})}


def last_user_text(request: RecordedRequest) -> str:
    """The text of the last user message in a recorded request (string or text blocks)."""
    for msg in reversed(request.json.get("messages", [])):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if texts:
            return "".join(texts)
    return ""


def echo(request: RecordedRequest) -> dict[str, Any]:
    """A responder that answers every request with the last user text, for load and smoke tests."""
    model = request.json.get("model", "claude-opus-4-6")
    return message([text_block(last_user_text(request))], model=model)
