"""`RetryingModel`: the retry policy for model calls.

    model = RetryingModel(load_model("anthropic:claude-opus-4-6"), max_retries=6)

Transient errors (429, 529, 5xx, timeouts, unreadable 2xx bodies: `TransientModelError`, raised by
the providers in `models/_hosted.py`) are retried with exponential backoff and full jitter, or after
the server's `retry_after`. The SDK clients themselves never retry (`max_retries=0`), so this is the
one place the policy lives; the collector wraps its teacher in it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from distillery.errors import TransientModelError
from distillery.models.base import ChatModel
from distillery.models.blocking import run_blocking
from distillery.trajectory import Message, ToolSpec, Turn

# Retries are reported under the collector's logger, where `distillery collect --log-file` users look.
log = logging.getLogger("distillery.collect")

SleepFn = Callable[[float], Awaitable[Any]]


class RetryingModel:
    """A `ChatModel` that retries `TransientModelError` from the model it wraps.

    The delay before retry k (0-based) is uniform in [0, min(backoff_max_s, backoff_base_s * 2**k)]
    ("full jitter": many clients that were rate-limited together do not retry together). When the
    error carries the server's `retry_after`, that is the delay instead, capped at `backoff_max_s`.
    After `max_retries` retries the last error is raised, and the Agent records it.
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        sleep: SleepFn = asyncio.sleep,
        rng: random.Random | None = None,
        on_retry: Callable[[TransientModelError, int, float], None] | None = None,
    ):
        self.model = model
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.on_retry = on_retry

    @property
    def uri(self) -> str:
        # Trajectories are keyed by the model's name; the wrapper must not change it.
        return getattr(self.model, "uri", type(self.model).__name__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def delay(self, attempt: int, error: TransientModelError) -> float:
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.backoff_max_s)
        return self.rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))

    async def agenerate(self, messages: list[Message], tools: list[ToolSpec] | None = None, **kwargs: Any) -> list[Turn]:
        attempt = 0
        while True:
            try:
                return await self.model.agenerate(messages, tools, **kwargs)
            except TransientModelError as error:
                if attempt >= self.max_retries:
                    if self.max_retries == 0:
                        raise
                    raise TransientModelError(
                        f"{error} (gave up after {self.max_retries} retries)",
                        status=error.status,
                        retry_after=error.retry_after,
                    ) from error
                wait = self.delay(attempt, error)
                if self.on_retry is not None:
                    self.on_retry(error, attempt, wait)
                log.info("retrying %s in %.2fs (retry %d/%d): %s", self.uri, wait, attempt + 1, self.max_retries, error)
                await self.sleep(wait)
                attempt += 1

    def generate(self, messages: list[Message], tools: list[ToolSpec] | None = None, **kwargs: Any) -> list[Turn]:
        return run_blocking(lambda: self.agenerate(messages, tools, **kwargs))
