"""Chat Completions models: `load_model("openai:gpt-4o-mini")`, or any OpenAI-compatible server.

    load_model("openai:gpt-4o")                                              # api.openai.com, $OPENAI_API_KEY
    load_model("openai:Qwen/Qwen3-8B", base_url="http://127.0.0.1:8000/v1")  # vLLM, no key needed
    load_model("openai:llama3.1", base_url="http://127.0.0.1:11434/v1")      # Ollama

One request gives `n` choices, one `Turn` each, with token logprobs and top-k alternatives when
asked: the offline sparse teacher signal (`distill.signals`) comes from exactly these fields.
Tool-call arguments that are not valid JSON are kept verbatim on the `ToolCall`
(`raw_arguments`, `parse_error`), never raised. Messages, tool calls and tools convert in
`distillery.formats.openai`.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletion

from distillery.errors import MissingAPIKeyError
from distillery.formats import openai as openai_format
from distillery.formats.openai import stop_reason_from_wire
from distillery.models._hosted import HostedChatModel, check_http_transport, log, to_model_error
from distillery.pricing import cost_usd
from distillery.trajectory import Message, ThinkingBlock, TokenLogprob, ToolCall, ToolSpec, TopLogprob, Turn, Usage

OFFICIAL_HOST = "api.openai.com"
# OpenAI-compatible servers run without auth more often than not; the SDK still insists on a key.
PLACEHOLDER_KEY = "EMPTY"


def resolve_endpoint(base_url: str | None, api_key: str | None, *, service: str) -> tuple[str | None, bool, str]:
    """`(base_url, official, api_key)` for a client of the OpenAI API or a server speaking it.

    Each falls back to $OPENAI_BASE_URL / $OPENAI_API_KEY. A key is required on api.openai.com
    (`service` names what needs it in the error); a custom server without one gets `PLACEHOLDER_KEY`.
    """
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    official = base_url is None or urlparse(base_url).hostname == OFFICIAL_HOST
    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        if official:
            raise MissingAPIKeyError(service, "OPENAI_API_KEY")
        api_key = PLACEHOLDER_KEY
    return base_url, official, api_key


# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...) accept only the default temperature.
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")


class OpenAIModel(HostedChatModel):
    """A model behind the Chat Completions API: OpenAI itself, vLLM, Ollama, llama.cpp, a gateway.

    Args:
        name: The model name the server knows, e.g. "gpt-4o-mini" or "Qwen/Qwen3-8B".
        api_key: Defaults to $OPENAI_API_KEY. Required for the official endpoint; for a custom
            `base_url` a placeholder ("EMPTY") is used when none is set.
        base_url: Defaults to $OPENAI_BASE_URL, then https://api.openai.com/v1.
        timeout_s: Per-request timeout.
        extra_body: Extra request fields sent with every call (vLLM's `top_k`,
            `chat_template_kwargs`, ...); per-call options are merged over them.
        extra_headers: Sent with every request.
        max_tokens_param: The request field for the output limit. Default: `max_completion_tokens`
            on api.openai.com, `max_tokens` elsewhere (what most compatible servers still read).
        http_transport: "auto" (aiohttp when installed, else httpx), "aiohttp" or "httpx": the
            transport under the official SDK client. aiohttp halves the client CPU per request.
    """

    provider = "openai"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 600,
        extra_body: dict[str, Any] | None = None,
        extra_headers: dict[str, str] | None = None,
        max_tokens_param: str | None = None,
        http_transport: str = "auto",
    ):
        super().__init__()
        self.name = name
        self.uri = f"openai:{name}"
        self.base_url, self.official, self._api_key = resolve_endpoint(base_url, api_key, service="openai")
        self.timeout_s = timeout_s
        self.extra_body = dict(extra_body or {})
        self.extra_headers = dict(extra_headers or {})
        self.max_tokens_param = max_tokens_param or ("max_completion_tokens" if self.official else "max_tokens")
        self.http_transport = check_http_transport(self.uri, http_transport)

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(**self.client_options(openai))

    # --- request --------------------------------------------------------------------------

    def build_request(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None = None,
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        **options: Any,
    ) -> dict[str, Any]:
        """The keyword arguments for `chat.completions.create`. Unknown options travel in `extra_body`."""
        request: dict[str, Any] = {"model": self.name, "messages": openai_format.messages_to_wire(messages)}
        if tools:
            request["tools"] = openai_format.tools_to_wire(tools)
        if n > 1:
            request["n"] = n
        if REASONING_MODEL.match(self.name):
            if temperature not in (0.0, 1.0):
                self.warn_once(
                    "temperature", "%s: reasoning models accept only the default temperature; not sent", self.uri
                )
        else:
            request["temperature"] = temperature
        if max_tokens:
            request[self.max_tokens_param] = max_tokens
        if logprobs or top_logprobs:
            request["logprobs"] = True
            if top_logprobs:
                request["top_logprobs"] = top_logprobs
        for key in ("tool_choice", "parallel_tool_calls", "stop", "seed", "top_p", "response_format"):
            if key in options:
                request[key] = options.pop(key)
        extra_body = {**self.extra_body, **(options.pop("extra_body", None) or {}), **options}
        if extra_body:
            request["extra_body"] = extra_body
        return request

    # --- call -----------------------------------------------------------------------------

    async def agenerate(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None = None,
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        **options: Any,
    ) -> list[Turn]:
        request = self.build_request(
            messages,
            tools,
            n=n,
            temperature=temperature,
            max_tokens=max_tokens,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            **options,
        )
        client = await self.client()
        start = time.perf_counter()
        try:
            # The SDK's typed `create()` first re-walks the whole request against its TypedDict
            # definitions (`async_maybe_transform`), CPU spent for nothing since `build_request`
            # already gives plain JSON, and the largest single cost of a busy collection
            # (BENCHMARKS.md). So the body goes through the SDK's documented low-level `post` on
            # the same path: same client, auth, headers, error types and `ChatCompletion` parsing
            # (tests/test_provider_openai.py checks that the server receives the same body either way).
            completion = await client.post("/chat/completions", body=request_body(request), cast_to=ChatCompletion)
        except openai.OpenAIError as exc:
            raise to_model_error(exc, openai, self.uri, secrets=[self._api_key]) from None
        return self.to_turns(completion, latency_s=time.perf_counter() - start)

    def to_turns(self, completion: Any, *, latency_s: float = 0.0) -> list[Turn]:
        """One `Turn` per choice, in choice order.

        Usage is billed per request, not per choice, so the first turn carries the whole request's
        usage and cost and the others carry zero: summing over turns gives the bill exactly.
        """
        usage = openai_usage(completion.usage)
        turns = []
        for position, choice in enumerate(sorted(completion.choices, key=lambda c: c.index)):
            turn_usage = usage if position == 0 else Usage()
            turns.append(self.choice_to_turn(choice, turn_usage, latency_s=latency_s))
        return turns

    def choice_to_turn(self, choice: Any, usage: Usage, *, latency_s: float = 0.0) -> Turn:
        message = choice.message
        tool_calls = [to_tool_call(call) for call in (message.tool_calls or [])]
        if not tool_calls and getattr(message, "function_call", None) is not None:
            # The deprecated single `function_call` field, still returned by some servers.
            fc = message.function_call
            tool_calls = [openai_format.tool_call_from_wire(None, fc.name, fc.arguments)]
        text = message.content or ""
        stop_reason = stop_reason_from_wire(choice.finish_reason)
        if stop_reason is None:
            log.warning("%s: unknown finish_reason %r; keeping the turn as end_turn", self.uri, choice.finish_reason)
            stop_reason = "end_turn"
        if stop_reason == "end_turn" and tool_calls:
            # Some compatible servers say "stop" for a forced (named) tool call.
            stop_reason = "tool_use"
        if getattr(message, "refusal", None):
            stop_reason = "refusal"
            text = message.refusal
        return Turn(
            text=text,
            thinking=_reasoning(message),
            tool_calls=tool_calls,
            stop_reason=stop_reason,
            logprobs=to_token_logprobs(choice.logprobs),
            usage=usage,
            model=self.uri,
            latency_s=latency_s,
            cost_usd=cost_usd(self.uri, usage),
        )


def request_body(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON body `chat.completions.create(**request)` sends: `extra_body` merged in at the top."""
    body = {key: value for key, value in request.items() if key != "extra_body"}
    body.update(request.get("extra_body") or {})
    return body


def openai_usage(usage: Any) -> Usage:
    """Chat Completions usage in our terms.

    `prompt_tokens` includes cached tokens, which are billed at the cache-read price. So that
    `input_tokens * input_price + cache_read_input_tokens * cache_read_price` is the bill, cached
    tokens move out of `input_tokens` into `cache_read_input_tokens`.
    """
    if usage is None:
        return Usage()
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    cached = (getattr(prompt_details, "cached_tokens", None) or 0) if prompt_details else 0
    reasoning = (getattr(completion_details, "reasoning_tokens", None) or 0) if completion_details else 0
    return Usage(
        input_tokens=max(0, (usage.prompt_tokens or 0) - cached),
        output_tokens=usage.completion_tokens or 0,
        cache_read_input_tokens=cached,
        reasoning_tokens=reasoning,
    )


def to_tool_call(call: Any) -> ToolCall:
    if getattr(call, "type", "function") == "function":
        return openai_format.tool_call_from_wire(call.id, call.function.name, call.function.arguments)
    # A custom (free-text) tool: nothing we offered, but keep what the model wrote.
    custom = getattr(call, "custom", None)
    return ToolCall(
        id=call.id,
        name=getattr(custom, "name", "") or "",
        raw_arguments=getattr(custom, "input", None),
        parse_error=f"{call.type} tool calls carry free text, not JSON arguments",
    )


def to_token_logprobs(logprobs: Any) -> list[TokenLogprob] | None:
    if logprobs is None:
        return None
    entries = logprobs.content if logprobs.content is not None else getattr(logprobs, "refusal", None)
    if entries is None:
        return None
    return [
        TokenLogprob(
            token=entry.token,
            logprob=entry.logprob,
            top=[TopLogprob(token=alt.token, logprob=alt.logprob) for alt in (entry.top_logprobs or [])],
        )
        for entry in entries
    ]


def _reasoning(message: Any) -> list[ThinkingBlock]:
    """Reasoning text that OpenAI-compatible servers return beside the answer.

    vLLM (with a reasoning parser) and DeepSeek send `reasoning_content`; newer servers send
    `reasoning`. The official API returns neither for Chat Completions.
    """
    return openai_format.thinking_from_wire(getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None))
