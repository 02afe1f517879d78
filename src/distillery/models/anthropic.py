"""Claude through the Anthropic Messages API: `load_model("anthropic:claude-opus-4-6")`.

The neutral, OpenAI-shaped `Message`s become Messages API requests (top-level `system`, content
blocks, tool results gathered into one user turn: `distillery.formats.anthropic`), and each response
becomes a `Turn`. Thinking
blocks keep their signatures byte for byte and the raw response blocks ride along in
`Turn.provider_content`, because the API requires them back unmodified inside a tool loop and
after a `pause_turn`.

What the Messages API does not offer is said plainly rather than faked: there are no token
logprobs (`Turn.logprobs` is None) and no `n` (n > 1 sends n requests concurrently). The
`anthropic` SDK 2.x sends `anthropic-version: 2026-10-21`, which rejects `temperature`, `top_p` and
`top_k` at any value, so `temperature` is not sent (see docs/providers.md).
"""

from __future__ import annotations

import os
import time
from typing import Any

import anthropic

from distillery.errors import ConfigError, MissingAPIKeyError
from distillery.formats import anthropic as anthropic_format
from distillery.formats.anthropic import stop_reason_from_wire
from distillery.models._hosted import (
    HostedChatModel,
    check_http_transport,
    gather_or_cancel,
    log,
    to_model_error,
)
from distillery.pricing import cost_usd
from distillery.trajectory import Message, ToolSpec, Turn, Usage

THINKING_MODES = (None, "adaptive", "enabled", "off", "auto")
MIN_THINKING_BUDGET = 1024  # the API's minimum for budget_tokens
# API versions before 2026-10-21 still accept sampling parameters; pin one with
# extra_headers={"anthropic-version": "2023-06-01"} to send `temperature`.
SAMPLING_API_VERSIONS = ("2023-06-01",)



class AnthropicModel(HostedChatModel):
    """A Claude model behind the Messages API (or any server that speaks it, via `base_url`).

    Args:
        name: The model as the API names it, e.g. "claude-opus-4-6".
        api_key: Defaults to $ANTHROPIC_API_KEY; construction fails, naming the variable, without one.
        base_url: Defaults to $ANTHROPIC_BASE_URL, then the public API.
        thinking: None (the default) sends no thinking setting; "adaptive" lets Claude decide
            (Claude 4.6 and later); "enabled" is extended thinking with `thinking_budget` tokens
            (earlier models); "auto" picks adaptive for "-4-6" models and enabled otherwise;
            "off" sends `{"type": "disabled"}`. Giving only `thinking_budget` means "enabled".
        thinking_budget: Tokens for "enabled" thinking; at least 1024 and below max_tokens.
            Defaults to half of max_tokens (at least 1024).
        max_tokens: The default output limit per call (the API requires one).
        timeout_s: Per-request timeout.
        extra_headers: Sent with every request (e.g. `anthropic-beta` flags).
        http_transport: "auto" (aiohttp when installed, else httpx), "aiohttp" or "httpx": the
            transport under the official SDK client.
    """

    provider = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        thinking: str | None = None,
        thinking_budget: int | None = None,
        max_tokens: int = 4096,
        timeout_s: float = 600,
        extra_headers: dict[str, str] | None = None,
        http_transport: str = "auto",
    ):
        super().__init__()
        if thinking not in THINKING_MODES:
            raise ConfigError(
                f"anthropic:{name}: thinking={thinking!r} is not one of adaptive, enabled, auto, off (or None)"
            )
        if thinking is None and thinking_budget is not None:
            thinking = "enabled"
        self.name = name
        self.uri = f"anthropic:{name}"
        self._api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not self._api_key:
            raise MissingAPIKeyError("anthropic", "ANTHROPIC_API_KEY")
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self.thinking = thinking
        self.thinking_budget = thinking_budget
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.extra_headers = dict(extra_headers or {})
        api_version = {k.lower(): v for k, v in self.extra_headers.items()}.get("anthropic-version")
        self.sends_temperature = api_version in SAMPLING_API_VERSIONS
        self.http_transport = check_http_transport(self.uri, http_transport)

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(**self.client_options(anthropic))

    # --- request --------------------------------------------------------------------------

    def thinking_config(self, max_tokens: int) -> dict[str, Any] | None:
        """The `thinking` request field for this model, or None to leave it out."""
        mode = self.thinking
        if mode is None:
            return None
        if mode == "off":
            return {"type": "disabled"}
        if mode == "auto":
            mode = "adaptive" if "-4-6" in self.name else "enabled"
        if mode == "adaptive":
            return {"type": "adaptive"}
        budget = self.thinking_budget or max(MIN_THINKING_BUDGET, max_tokens // 2)
        if budget < MIN_THINKING_BUDGET or budget >= max_tokens:
            raise ConfigError(
                f"{self.uri}: thinking_budget={budget} must be at least {MIN_THINKING_BUDGET} and below "
                f"max_tokens={max_tokens}"
            )
        return {"type": "enabled", "budget_tokens": budget}

    def build_request(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The keyword arguments for `messages.create`. Unknown options travel in `extra_body`."""
        max_tokens = max_tokens or self.max_tokens
        system, wire_messages = anthropic_format.messages_to_wire(messages)
        request: dict[str, Any] = {"model": self.name, "max_tokens": max_tokens, "messages": wire_messages}
        if system:
            request["system"] = system
        if tools:
            request["tools"] = anthropic_format.tools_to_wire(tools)
        thinking = self.thinking_config(max_tokens)
        if thinking is not None:
            request["thinking"] = thinking
        extra_body: dict[str, Any] = dict(options.pop("extra_body", None) or {})
        stop = options.pop("stop", None)
        stop = options.pop("stop_sequences", None) or stop
        if stop:
            request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        tool_choice = options.pop("tool_choice", None)
        if tool_choice is not None:
            request["tool_choice"] = anthropic_format.tool_choice_to_wire(tool_choice)
        thinking_on = thinking is not None and thinking["type"] != "disabled"
        if self.sends_temperature and not thinking_on:
            extra_body["temperature"] = temperature
        elif temperature not in (0.0, 1.0):
            self.warn_once(
                "temperature",
                "%s: temperature=%s is not sent: %s (see docs/providers.md)",
                self.uri,
                temperature,
                "the API rejects it with thinking on"
                if self.sends_temperature
                else "anthropic-version 2026-10-21 rejects sampling parameters",
            )
        extra_body.update(options)  # anything else (metadata, cache_control, output_config, ...) as given
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
        if logprobs or top_logprobs:
            self.warn_once("logprobs", "%s: the Messages API returns no logprobs; Turn.logprobs is None", self.uri)
        request = self.build_request(messages, tools, temperature=temperature, max_tokens=max_tokens, **options)
        # The API has no `n`: sample n times concurrently.
        return await gather_or_cancel(self._create(request) for _ in range(max(1, n)))

    async def _create(self, request: dict[str, Any]) -> Turn:
        client = await self.client()
        start = time.perf_counter()
        try:
            response = await client.messages.create(**request)
        except anthropic.AnthropicError as exc:
            raise to_model_error(exc, anthropic, self.uri, secrets=[self._api_key]) from None
        return self.to_turn(response, latency_s=time.perf_counter() - start)

    def to_turn(self, response: Any, *, latency_s: float = 0.0) -> Turn:
        """A Messages API response (the SDK's `Message`) as a `Turn`."""
        # exclude_unset: exactly the fields the API sent, so they go back unmodified.
        content = [block.to_dict(mode="json", exclude_unset=True) for block in response.content]
        text, thinking, tool_calls = anthropic_format.assistant_from_wire(content)
        stop_reason = stop_reason_from_wire(response.stop_reason)
        if stop_reason is None:
            log.warning("%s: unknown stop_reason %r; keeping the turn as end_turn", self.uri, response.stop_reason)
            stop_reason = "end_turn"
        usage = anthropic_usage(response.usage)
        return Turn(
            text=text,
            thinking=thinking,
            tool_calls=tool_calls,
            stop_reason=stop_reason,
            logprobs=None,
            usage=usage,
            model=self.uri,
            latency_s=latency_s,
            cost_usd=cost_usd(self.uri, usage),
            provider_content=content,
        )


def anthropic_usage(usage: Any) -> Usage:
    details = getattr(usage, "output_tokens_details", None)
    return Usage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        reasoning_tokens=(getattr(details, "thinking_tokens", None) or 0) if details is not None else 0,
    )
