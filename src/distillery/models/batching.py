"""Batch a local model's concurrent calls: many tasks on one event loop, one `generate_many` per batch.

    model = batched(load_model("world:teacher"))   # HFModel -> BatchingModel; hosted models unchanged
    collector = TeacherCollector(model, tools, concurrency=32)

Used by the demo; useful anywhere a local model serves many concurrent agent loops (collection,
evaluation, calibration).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from distillery.trajectory import Message


class BatchingModel:
    """A local `HFModel` whose concurrent `agenerate` calls are answered by one `generate_many` batch.

    The collector, the evaluator and the cascade run many tasks concurrently on one event loop, but
    a local model generates one conversation at a time. A few-million-parameter model spends most of
    a decoding step in Python overhead, so decoding 32 conversations together costs little more than
    one (see BENCHMARKS.md, "hf provider"). Calls with the same generation options that arrive while
    a batch runs (or within `gather_s` of each other) form the next batch. Each turn's `latency_s`
    is its batch's wall time; usage and cost stay per conversation.
    """

    def __init__(self, model: Any, *, max_batch: int = 32, gather_s: float = 0.01):
        self.model = model
        self.uri = model.uri
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._pending: list[tuple[str, list[Message], Any, dict[str, Any], asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0  # generate_many calls so far, and the calls they answered
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)  # tokenizer, render_completion, ... of the wrapped model

    def __repr__(self) -> str:
        return f"BatchingModel({self.uri!r})"

    def generate(self, messages, tools=None, **options):
        return self.model.generate(messages, tools, **options)

    async def agenerate(self, messages, tools=None, **options):
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new asyncio.run(): nothing pending belongs to it
            self._loop, self._pending, self._drainer = loop, [], None
        future = loop.create_future()
        key = json.dumps(options, sort_keys=True, default=str)
        self._pending.append((key, list(messages), list(tools) if tools else None, options, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            # Let the other tasks queue their calls: wait until the queue stops growing (or is full).
            seen = -1
            while seen != len(self._pending) and len(self._pending) < self.max_batch:
                seen = len(self._pending)
                await asyncio.sleep(self.gather_s)
            key = self._pending[0][0]
            batch = [request for request in self._pending if request[0] == key][: self.max_batch]
            taken = {id(request) for request in batch}
            self._pending = [request for request in self._pending if id(request) not in taken]
            live = [request for request in batch if not request[4].done()]  # skip callers that gave up
            if not live:
                continue
            self.batches += 1
            self.calls += len(live)
            try:
                results = await asyncio.to_thread(
                    self.model.generate_many, [r[1] for r in live], [r[2] for r in live], **live[0][3]
                )
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
                for request in live:
                    if not request[4].done():
                        request[4].set_exception(exc)
            else:
                for request, turns in zip(live, results):
                    if not request[4].done():
                        request[4].set_result(turns)


def batched(model: Any, max_batch: int = 32) -> Any:
    """Wrap local models that can batch (`generate_many`); hosted models already run concurrently."""
    return BatchingModel(model, max_batch=max_batch) if hasattr(model, "generate_many") else model
