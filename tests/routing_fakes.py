"""Scripted chat models for the routing tests: hand-made turns and logprobs, no SDK, no network.

These are test doubles of *our* `ChatModel` protocol (not of any provider SDK). Each records every
call it receives so tests can check what the router asked for and what it cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from distillery.formats.hermes import parse_tool_calls
from distillery.errors import ModelError
from distillery.models.base import AsyncChatModel
from distillery.trajectory import Message, TokenLogprob, ToolSpec, Turn, Usage


def turn_from_tokens(tokens: list[tuple[str, float]], *, model: str = "fake:student", usage: Usage | None = None) -> Turn:
    """A turn whose generated text is the concatenation of `tokens`, with those logprobs."""
    text = "".join(t for t, _ in tokens)
    content, calls = parse_tool_calls(text)
    return Turn(
        text=content,
        tool_calls=calls,
        stop_reason="tool_use" if calls else "end_turn",
        logprobs=[TokenLogprob(token=t, logprob=lp) for t, lp in tokens],
        usage=usage or Usage(input_tokens=100, output_tokens=len(tokens)),
        model=model,
    )


def tool_call_tokens(name: str, args_json: str, *, lp_name: float, lp_args: float, lp_scaffold: float = -0.001,
                     reasoning: tuple[str, float] | None = None) -> list[tuple[str, float]]:
    """Tokens of `[reasoning]<tool_call>\\n{"name": "NAME", "arguments": ARGS}\\n</tool_call>`."""
    tokens = [reasoning] if reasoning else []
    tokens += [("<tool_call>", lp_scaffold), ('\n{"name": "', lp_scaffold), (name, lp_name),
               ('", "arguments": ', lp_scaffold), (args_json, lp_args), ("}\n", lp_scaffold),
               ("</tool_call>", lp_scaffold), ("<|im_end|>", lp_scaffold)]
    return tokens


def answer_tokens(answer: str, lp: float) -> list[tuple[str, float]]:
    return [(answer, lp), ("<|im_end|>", -0.001)]


class ScriptedModel(AsyncChatModel):
    """A chat model that answers from a script: `script(messages, call_index, n, temperature)` -> turns.

    `delay_s` simulates a slow model; `fail` makes every call raise `ModelError` (a 5xx, say).
    """

    def __init__(self, uri: str, script: Callable[..., list[Turn]], *, delay_s: float = 0.0, fail: bool = False):
        self.uri = uri
        self.script = script
        self.delay_s = delay_s
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    async def agenerate(self, messages: list[Message], tools: list[ToolSpec] | None = None, **kwargs: Any) -> list[Turn]:
        self.calls.append({"messages": list(messages), **kwargs})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ModelError(f"{self.uri}: HTTP 503 service unavailable")
        n = kwargs.get("n", 1)
        turns = self.script(messages, len(self.calls) - 1, n, kwargs.get("temperature", 0.0))
        return [t.model_copy(update={"model": self.uri}) for t in turns][:n] if len(turns) >= n else turns


def n_tool_messages(messages: list[Message]) -> int:
    return sum(1 for m in messages if m.role == "tool")
