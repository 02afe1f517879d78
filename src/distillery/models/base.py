"""The one protocol every model speaks, whatever is behind it.

`ChatModel.generate(messages, tools, n=..., temperature=..., logprobs=...) -> list[Turn]` returns
`n` alternative turns for the same conversation. Hosted providers implement `agenerate` natively
(so collection can run many requests concurrently on one event loop); local models implement
`generate` and get `agenerate` for free through a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

from distillery.trajectory import Message, ToolSpec, Turn


@runtime_checkable
class ChatModel(Protocol):
    uri: str

    def generate(
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
    ) -> list[Turn]: ...

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
    ) -> list[Turn]: ...


class SyncChatModel:
    """Base for models whose natural interface is blocking (local transformers)."""

    uri: str = ""

    def generate(self, messages, tools=None, **kwargs) -> list[Turn]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def agenerate(self, messages, tools=None, **kwargs) -> list[Turn]:
        return await asyncio.to_thread(self.generate, messages, tools, **kwargs)


class AsyncChatModel:
    """Base for models whose natural interface is async (hosted APIs)."""

    uri: str = ""

    async def agenerate(self, messages, tools=None, **kwargs) -> list[Turn]:  # pragma: no cover - abstract
        raise NotImplementedError

    def generate(self, messages, tools=None, **kwargs) -> list[Turn]:
        return asyncio.run(self.agenerate(messages, tools, **kwargs))
