"""Claude through the Anthropic Messages API: `load_model("anthropic:claude-opus-4-6")`.

The neutral, OpenAI-shaped `Message`s become Messages API requests (top-level `system`, content
blocks, tool results gathered into one user turn), and each response becomes a `Turn`. Thinking
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

from distillery.formats.anthropic import stop_reason_from_wire
from distillery.errors import ConfigError, MissingAPIKeyError
from distillery.models._hosted import (
    HostedChatModel,
    check_http_transport,
    gather_or_cancel,
    http_client,
    log,
    to_model_error,
)
from distillery.pricing import cost_usd
from distillery.trajectory import Message, ThinkingBlock, ToolCall, ToolSpec, Turn, Usage

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
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=0,  # the collector owns retries
            timeout=self.timeout_s,
            default_headers=self.extra_headers or None,
            http_client=http_client(anthropic, self.http_transport, self.timeout_s),
        )

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
        system, wire_messages = to_anthropic_messages(messages)
        request: dict[str, Any] = {"model": self.name, "max_tokens": max_tokens, "messages": wire_messages}
        if system:
            request["system"] = system
        if tools:
            request["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
            ]
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
            request["tool_choice"] = anthropic_tool_choice(tool_choice)
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
        texts: list[str] = []
        thinking: list[ThinkingBlock] = []
        tool_calls: list[ToolCall] = []
        for block in response.content:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "thinking":
                thinking.append(ThinkingBlock(type="thinking", thinking=block.thinking, signature=block.signature))
            elif kind == "redacted_thinking":
                thinking.append(ThinkingBlock(type="redacted_thinking", data=block.data))
            elif kind == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {}
                parse_error = None if isinstance(block.input, dict) else "tool input is not a JSON object"
                tool_calls.append(
                    ToolCall(
                        id=block.id,
                        name=block.name,
                        arguments=arguments,
                        raw_arguments=None if parse_error is None else repr(block.input),
                        parse_error=parse_error,
                    )
                )
            # Server-side tool blocks (web search, code execution, ...) are not calls for us to run;
            # they stay in provider_content and go back to the API verbatim.
        stop_reason = stop_reason_from_wire(response.stop_reason)
        if stop_reason is None:
            log.warning("%s: unknown stop_reason %r; keeping the turn as end_turn", self.uri, response.stop_reason)
            stop_reason = "end_turn"
        usage = anthropic_usage(response.usage)
        return Turn(
            text="".join(texts),
            thinking=thinking,
            tool_calls=tool_calls,
            stop_reason=stop_reason,
            logprobs=None,
            usage=usage,
            model=self.uri,
            latency_s=latency_s,
            cost_usd=cost_usd(self.uri, usage),
            # exclude_unset: exactly the fields the API sent, so they go back unmodified.
            provider_content=[block.to_dict(mode="json", exclude_unset=True) for block in response.content],
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


def anthropic_tool_choice(choice: Any) -> dict[str, Any]:
    """Accept Anthropic's `{"type": ...}` or the OpenAI spellings ("auto", "required", "none", a name)."""
    if isinstance(choice, dict):
        if choice.get("type") == "function":  # OpenAI's {"type": "function", "function": {"name": ...}}
            return {"type": "tool", "name": choice["function"]["name"]}
        return choice
    if choice in ("auto", "any", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": str(choice)}


def _thinking_blocks(message: Message) -> list[dict[str, Any]]:
    """Thinking the API will accept back: signed thinking and redacted thinking, unchanged.

    Unsigned thinking (from another provider or a local model) cannot be verified by the API and
    would be rejected, so it is left out.
    """
    blocks = []
    for block in message.thinking:
        if block.type == "redacted_thinking" and block.data:
            blocks.append({"type": "redacted_thinking", "data": block.data})
        elif block.type == "thinking" and block.signature:
            blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
    return blocks


def _usable_provider_content(message: Message) -> bool:
    """Whether `provider_content` can be sent back as is.

    It must be a list of typed blocks, and its tool_use ids must be exactly the message's tool
    calls: the tool results that follow refer to those ids, so content edited or produced elsewhere
    (a cascade that replaced the call) falls back to the neutral conversion.
    """
    content = message.provider_content
    if not content or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in content):
        return False
    block_ids = [b.get("id") for b in content if b["type"] == "tool_use"]
    return block_ids == [call.id for call in message.tool_calls]


def _assistant_blocks(message: Message) -> list[dict[str, Any]]:
    if _usable_provider_content(message):
        return [dict(block) for block in message.provider_content]
    blocks = _thinking_blocks(message)
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        # A call whose arguments did not parse goes back with empty input: the API needs an object,
        # and the tool result that follows tells the model what went wrong.
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    return blocks


def to_anthropic_messages(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Neutral messages as the Messages API wants them: `(system, messages)`.

    System messages become the top-level `system` (joined by blank lines). Tool results become
    `tool_result` blocks in a user turn, and consecutive turns of the same role are merged into one,
    so any run of tool messages is one user message, as the API requires.
    """
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": list(blocks)})

    for message in messages:
        if message.role == "system":
            if message.content:
                system_parts.append(message.content)
        elif message.role == "user":
            append("user", [{"type": "text", "text": message.content}] if message.content else [])
        elif message.role == "assistant":
            append("assistant", _assistant_blocks(message))
        elif message.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
            if message.is_error:
                block["is_error"] = True
            append("user", [block])
    # Within a user turn the API wants tool results before any text.
    for turn in out:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    return ("\n\n".join(system_parts) or None), out
