"""Process sharding for a collection: `processes=P` splits the runs over P child processes.

One event loop spends a few ms of CPU per request in the SDK and HTTP stack, which caps one process
at a few hundred requests per second; shards lift that cap on a multi-core machine. Each child builds
its own model, tools and store from names, collects its share of the runs into the same SQLite file,
and sends progress and log records back over a queue. A shard ends the moment the collecting process
does, even by SIGKILL (`_die_with_parent`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import logging.handlers
import multiprocessing
import os
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery.errors import ConfigError
from distillery.tasks import Task
from distillery.tools import ToolBox, load_tools
from distillery.trajectory import ToolSpec

if TYPE_CHECKING:
    from distillery.collect.collector import CollectResult, TeacherCollector
    from distillery.collect.progress import ProgressBar


def check_shardable(model: Any, tools: Any, store: Any) -> None:
    """Child processes rebuild the model, tools and store from names, so those must be names."""
    if not isinstance(model, str):
        raise ConfigError("processes > 1 needs the model as a URI string, so each process can build its own")
    if not isinstance(tools, str) and list(tools):
        raise ConfigError("processes > 1 needs tools as an import path ('module:attr'), so each process can import them")
    if store is None or not isinstance(store, (str, Path)) and not hasattr(store, "path"):
        raise ConfigError("processes > 1 needs a SQLite store: the shards write their trajectories there")


_shard_events: Any = None

# How often a shard process checks that the collecting process is still alive (the portable
# fallback; on Linux the kernel kills the shard at once, see `_die_with_parent`).
PARENT_POLL_S = 0.1
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int, *, poll_s: float = PARENT_POLL_S, pdeathsig: bool = True) -> None:
    """Make this shard process end as soon as the collecting process that started it ends.

    A shard left running after its parent was killed (SIGKILL, OOM, a closed terminal) goes on
    sending paid requests and races the re-run that resumes the collection. Two mechanisms:

    * Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills this process the moment its
      parent dies (the parent's event-loop thread started it and lives as long as the pool).
    * everywhere: a daemon thread that polls `os.getppid()` every `poll_s` seconds and exits
      the process when the parent has changed (it is re-parented to init or a subreaper).

    The parent may already be gone before prctl takes effect, hence the check right after it.
    `pdeathsig=False` leaves only the thread (the path other systems take; the tests use it).
    """
    import ctypes
    import signal
    import sys

    if pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc symbol (an unusual libc): the thread below suffices
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)  # no cleanup: in-flight requests are dropped, committed rows are safe (WAL)

    threading.Thread(target=watch, name="distillery-parent-watch", daemon=True).start()


def _init_shard_process(events: Any, level: int, parent_pid: int | None = None) -> None:
    """In a shard process: die with the parent; send log records to the parent (which formats,
    redacts and writes them)."""
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    global _shard_events
    _shard_events = events
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(events)]
    root.setLevel(level)


def _kill_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Stop a process pool's workers now (their in-flight runs are lost, and resumed by a re-run)."""
    kill = getattr(pool, "kill_workers", None)  # Python 3.14+
    if kill is not None:
        with contextlib.suppress(Exception):
            kill()
            return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()


def _run_shard(spec: dict[str, Any]) -> dict[str, Any]:
    """In a shard process: collect this shard's jobs into the shared store; return the counts."""
    from distillery.collect.collector import CollectResult, TeacherCollector, override_tool_specs
    from distillery.store import SQLiteStore

    spec = dict(spec)
    tools_path = spec.pop("tools_path")
    tools = load_tools(tools_path) if tools_path else ToolBox()
    # The parent may have replaced schemas (tool_schemas): offer exactly what it offered.
    tools = override_tool_specs(tools, [ToolSpec.model_validate(s) for s in spec.pop("tool_specs")])
    store = SQLiteStore(spec.pop("store_path"), synchronous=spec.pop("synchronous"))
    jobs = [(Task.model_validate(task), index) for task, index in spec.pop("jobs")]
    budget_usd = spec.pop("budget_usd")
    collector = TeacherCollector(spec.pop("model"), tools, store=store, progress=False, keep_trajectories=False, **spec)
    result = CollectResult(budget_usd=budget_usd)

    async def collect_then_close() -> None:
        try:
            await collector._collect_jobs(jobs, result, lambda status, cost: _shard_events.put((status, cost)))
        finally:
            aclose = getattr(collector.model, "aclose", None)
            if aclose is not None:
                await aclose()

    try:
        asyncio.run(collect_then_close())
    finally:
        store.close()
    return {
        "ok": result.ok, "failed": result.failed, "incomplete": result.incomplete,
        "skipped_budget": result.skipped_budget, "succeeded": result.succeeded, "checked": result.checked,
        "retries": collector._retries, "cost_usd": result.cost_usd, "by_status": dict(result.by_status),
        "stopped_by_budget": result.stopped_by_budget, "first_error": result.first_error,
    }


async def collect_in_processes(collector: TeacherCollector, jobs: list[tuple[Task, int]], result: CollectResult,
                               bar: ProgressBar) -> None:
    """Run the collector's jobs over `collector.processes` child processes, counting into `result`.

    Children write to the same SQLite file (SQLite serialises their commits). The budget is split
    evenly between shards, so the total still stays under the cap (each shard may stop a little
    earlier than one process would).
    """
    k = min(collector.processes, len(jobs))
    context = multiprocessing.get_context("spawn")  # fork would copy the parent's event loop and threads
    events = context.Queue()
    specs = [
        {
            **collector._shard_options,
            "tools_path": collector.tools_path,
            "tool_specs": [spec.model_dump() for spec in collector.tools.specs],
            "store_path": str(collector.store.path),
            "synchronous": getattr(collector.store, "synchronous", "NORMAL"),
            "concurrency": -(-collector.concurrency // k),
            "budget_usd": None if result.budget_usd is None else result.budget_usd / k,
            "jobs": [(task.model_dump(mode="json"), index) for task, index in jobs[shard::k]],
        }
        for shard in range(k)
    ]

    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def relay() -> None:
        # A daemon thread, not asyncio.to_thread: a worker killed while writing to the queue could
        # leave a reader blocked for good, and a blocked default-executor thread would hang exit.
        while not stop.is_set():
            try:
                item = events.get(timeout=0.1)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            if item is None:
                return
            if isinstance(item, logging.LogRecord):
                logging.getLogger(item.name).handle(item)
            else:
                bar.advance(*item)  # rich's Progress takes its own lock

    level = logging.getLogger().getEffectiveLevel()
    relaying = threading.Thread(target=relay, name="distillery-shard-relay", daemon=True)
    relaying.start()
    pool = concurrent.futures.ProcessPoolExecutor(
        k, mp_context=context, initializer=_init_shard_process, initargs=(events, level, os.getpid())
    )
    finished = False
    shards = [loop.run_in_executor(pool, _run_shard, spec) for spec in specs]
    try:
        outcomes = await asyncio.gather(*shards)
        finished = True
    finally:
        if not finished:
            # A shard failed, or this collection was cancelled (Ctrl-C): stop the other shards now
            # instead of waiting for them to finish their share of the runs.
            _kill_workers(pool)
            for shard in shards:
                shard.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        events.put(None)
        relaying.join(timeout=5 if finished else 0.5)
        stop.set()
    for outcome in outcomes:
        for name in ("ok", "failed", "incomplete", "skipped_budget", "succeeded", "checked", "retries", "cost_usd"):
            setattr(result, name, getattr(result, name) + outcome[name])
        result.by_status.update(outcome["by_status"])
        result.stopped_by_budget = result.stopped_by_budget or outcome["stopped_by_budget"]
        result.first_error = result.first_error or outcome["first_error"]
