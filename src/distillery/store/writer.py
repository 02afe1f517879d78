"""`StoreWriter`: stores finished trajectories from an event loop without stalling it.

A store whose `put` is quick (`put_is_quick`: SQLite with synchronous=NORMAL, a write() into the
page cache) is written from the loop itself: handing each row to a thread and back costs the loop
more than the write. A store that waits on the disk (FULL: an fsync per commit) or a server goes to
one dedicated writer thread, in batches: the rows that finish while one batch is written go together
in the next hand-off. One thread also means commits never contend for SQLite's write lock. Either
way each trajectory is its own transaction, and `put` returns only once its row is committed, so a
crash never loses a run counted as done. The figures behind this choice are in BENCHMARKS.md
(`benchmarks/collect_throughput.py`).

    async with StoreWriter(store) as writer:
        await writer.put(trajectory)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from distillery.store.base import TrajectoryStore
from distillery.trajectory import Trajectory


class StoreWriter:
    """Writes trajectories to `store` for coroutines on one event loop; use as `async with`."""

    def __init__(self, store: TrajectoryStore):
        self.store = store
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="distillery-store")
        self.inline = bool(getattr(store, "put_is_quick", False))
        self.pending: list[tuple[Trajectory, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()
        self.closing = False
        self.task: asyncio.Task[None] | None = None

    async def put(self, trajectory: Trajectory) -> None:
        """Store one trajectory; returns once it is committed (raises what the store raised)."""
        if self.inline:
            self.store.put(trajectory)
            return
        done = asyncio.get_running_loop().create_future()
        self.pending.append((trajectory, done))
        self.wake.set()
        await done

    async def __aenter__(self) -> StoreWriter:
        if not self.inline:
            self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if self.task is not None:  # let the thread commit what is queued, even after an error
                self.closing = True
                self.wake.set()
                await asyncio.shield(self.task)
        finally:
            # The writer thread closes the store connection it opened, then stops.
            self.executor.submit(self.store.release_thread)
            self.executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                if self.closing:
                    return
                await self.wake.wait()
                self.wake.clear()
                continue
            batch, self.pending = self.pending, []
            try:
                outcomes = await loop.run_in_executor(self.executor, self._write, [t for t, _ in batch])
            except BaseException as error:  # cancelled, or the thread is gone: nobody may wait forever
                for _, done in batch:
                    if not done.done():
                        done.cancel() if isinstance(error, asyncio.CancelledError) else done.set_exception(error)
                raise
            for (_, done), error in zip(batch, outcomes):
                if done.done():
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)

    def _write(self, trajectories: list[Trajectory]) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for trajectory in trajectories:
            try:
                self.store.put(trajectory)
                outcomes.append(None)
            except Exception as error:  # the worker that waits for this row raises it
                outcomes.append(error)
        return outcomes
