"""A local server speaking the OpenAI Chat Completions wire format, for tests of real SDK clients.

    with ScriptedOpenAIServer() as server:
        server.enqueue(chat_completion([choice("Paris.")]))
        client = openai.OpenAI(api_key="test", base_url=server.base_url)   # base_url ends in /v1
        ...
        server.requests[0].json["messages"]

Bodies follow https://platform.openai.com/docs/api-reference/chat/object (`object:
"chat.completion"`, choices with `finish_reason` and `logprobs`, usage with the token details)
and errors the `{"error": {"message", "type", "param", "code"}}` envelope, so the official SDK
parses them as it parses the real API's. The same server stands in for any OpenAI-compatible
upstream (vLLM, a gateway): `GET /v1/models` lists `server.models`.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

from tests.wire.scripted_server import RecordedRequest, ScriptedServer

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}


class ScriptedOpenAIServer(ScriptedServer):
    """`POST /v1/chat/completions` answered from the queue (or `responder`); `GET /v1/models`."""

    def __init__(self, responder=None, *, models: Sequence[str] = ("gpt-4o",)):
        self.models = list(models)
        super().__init__(responder)

    def add_routes(self, app: FastAPI) -> None:
        app.add_api_route("/v1/chat/completions", self.handle, methods=["POST"])
        app.add_api_route("/v1/models", self.list_models, methods=["GET"])

    async def list_models(self) -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": created, "owned_by": "scripted"} for m in self.models],
        }

    def not_found_body(self, message: str) -> dict:
        return error_body(400, message)[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def function_tool_call(name: str, arguments: dict[str, Any] | str, id: str | None = None) -> dict[str, Any]:
    """A `tool_calls` entry. `arguments` may be a dict (serialized) or a raw string (sent as is)."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    call_id = id or "call_" + uuid.uuid4().hex[:24]
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def token_logprobs(tokens: Sequence[tuple[str, float, Sequence[tuple[str, float]]]]) -> dict[str, Any]:
    """A choice's `logprobs` object from (token, logprob, [(alternative, logprob), ...]) triples."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        "content": [
            {**entry(token, lp), "top_logprobs": [entry(alt, alt_lp) for alt, alt_lp in top]}
            for token, lp, top in tokens
        ],
        "refusal": None,
    }


def choice(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    refusal: str | None = None,
    logprobs: dict[str, Any] | None = None,
    index: int = 0,
    **message_extra: Any,
) -> dict[str, Any]:
    """One entry of `choices`; `finish_reason` defaults to `tool_calls` when there are tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    message.update(message_extra)
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
    }


def usage(
    prompt_tokens: int = 10, completion_tokens: int = 5, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    choices: list[dict[str, Any]], *, model: str = "gpt-4o-2024-08-06", usage_: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Chat Completions response body. Choices are re-indexed in order."""
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{**c, "index": i} for i, c in enumerate(choices)],
        "usage": usage_ if usage_ is not None else usage(),
        "service_tier": "default",
        "system_fingerprint": "fp_" + uuid.uuid4().hex[:10],
    }


def error_body(
    status: int, message: str, headers: dict[str, str] | None = None, *, code: str | None = None
) -> tuple[int, dict, dict]:
    """An error reply `(status, body, headers)` in the documented envelope."""
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": None, "code": code}}
    return status, body, {"x-request-id": "req_" + uuid.uuid4().hex[:24], **(headers or {})}


def last_user_text(request: RecordedRequest) -> str:
    for msg in reversed(request.json.get("messages", [])):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            return "".join(part.get("text", "") for part in content or [] if part.get("type") == "text")
    return ""


def echo(request: RecordedRequest) -> dict[str, Any]:
    """A responder that answers every request with the last user text (n choices when asked)."""
    n = int(request.json.get("n") or 1)
    text = last_user_text(request)
    return chat_completion([choice(text) for _ in range(n)], model=request.json.get("model", "gpt-4o"))


def logprob_of(p: float) -> float:
    """ln(p), for writing readable logprob fixtures."""
    return math.log(p)
