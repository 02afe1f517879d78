"""Teacher collection: run the teacher agent over many tasks, concurrently, into the store.

    collector = TeacherCollector("anthropic:claude-opus-4-6", tools, store=SQLiteStore(), n=4,
                                 concurrency=16, budget_usd=20.0)
    result = collector.collect(load_tasks("queries.jsonl"))
    print(result.summary())

Or, the seed's one-liner: `collect_teacher_trajectories(["What is ...?"], "openai:gpt-4o")`.

What it guarantees:
* **Bounded concurrency**: at most `concurrency` (task, sample) runs are in flight, from a fixed
  pool of that many workers on one event loop (or, with `processes=P`, split over P processes).
* **Retries**: transient model errors (429, 529, 5xx, timeouts, unreadable 2xx bodies) are retried
  with exponential backoff and full jitter, or after the server's `retry_after`, up to `max_retries`
  times. After that the trajectory is stored with status "error" and a one-line message naming the
  model, the HTTP status and what the server said; the batch carries on.
* **Timeouts**: each request to a hosted teacher gets `timeout_s` (default 120 s) to answer.
* **No task kills the batch**: any exception from one run becomes a failed ("error") trajectory.
* **Resume**: with a store, (task_id, model, sample_index) keys already stored as finished are
  skipped and reported as "resumed"; failed ones are run again and replace the failed row.
* **Budget**: with `budget_usd`, no new run starts unless spent + (in-flight + 1) x the most
  expensive trajectory so far fits under the cap. In-flight runs finish.
* **n samples**: each task runs `n` times (sample_index 0..n-1), at temperature 1.0 unless set.
* **Shards die with the collection**: with `processes > 1`, a shard process ends the moment the
  collecting process does, even by SIGKILL (`_die_with_parent`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.agent import DEFAULT_MAX_STEPS, Agent
from distillery.errors import ConfigError, TransientModelError
from distillery.models import load_model
from distillery.models._hosted import one_line
from distillery.models.base import ChatModel
from distillery.store import TrajectoryStore, open_store
from distillery.tasks import Task, load_tasks, task_id_for
from distillery.tools import Tool, ToolBox, load_tools
from distillery.trajectory import Message, ToolSpec, Trajectory, Turn

log = logging.getLogger("distillery.collect")

SleepFn = Callable[[float], Awaitable[Any]]


# -- secrets -------------------------------------------------------------------------------------

_SECRET_ENV = re.compile(r"(_API_KEY|_AUTH_TOKEN|_SECRET|_TOKEN)$")


def redact_secrets(text: str) -> str:
    """Replace the value of any API-key-like environment variable found in `text` with "[redacted]".

    Provider error messages sometimes echo the key they were given; those messages end up in
    stored trajectories and logs, which must never hold a key.
    """
    for name, value in os.environ.items():
        if value and len(value) >= 8 and _SECRET_ENV.search(name) and value in text:
            text = text.replace(value, "[redacted]")
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts API keys from every record it passes (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# -- retries -------------------------------------------------------------------------------------


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


RUN_THREAD_PREFIX = "distillery-run"


def run_blocking(make_coroutine: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to the end from blocking code, also where a loop already runs (a notebook
    cell): asyncio.run cannot nest, so then it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=RUN_THREAD_PREFIX) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


# -- results -------------------------------------------------------------------------------------


@dataclass
class CollectResult:
    """What one collection run did.

    `ok`: status "ok" (a final answer). `failed`: status "error" (run again to retry them).
    `incomplete`: finished without an answer (max_steps, max_tokens, refused); final, not retried.
    `resumed`: already in the store, skipped. `skipped_budget`: not started because of the budget.
    """

    ok: int = 0
    failed: int = 0
    incomplete: int = 0
    resumed: int = 0
    skipped_budget: int = 0
    succeeded: int = 0  # judged correct by the task's checker
    checked: int = 0  # had a checker
    retries: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    budget_usd: float | None = None
    stopped_by_budget: bool = False
    by_status: Counter = field(default_factory=Counter)
    trajectories: list[Trajectory] = field(default_factory=list)
    first_error: str | None = None

    @property
    def total(self) -> int:
        """Runs that ended in this collection (stored), not counting resumed or skipped ones."""
        return self.ok + self.failed + self.incomplete

    def budget_line(self) -> str | None:
        if not self.stopped_by_budget:
            return None
        return (
            f"stopped by budget: ${self.cost_usd:.4f} of ${self.budget_usd:.4f}, "
            f"{self.skipped_budget} tasks not started"
        )

    def summary(self) -> str:
        parts = [
            f"{self.ok} ok",
            f"{self.failed} failed",
            f"{self.incomplete} incomplete",
            f"{self.resumed} resumed",
            f"${self.cost_usd:.4f}",
            f"{self.wall_s:.1f}s",
        ]
        if self.checked:
            parts.insert(3, f"{self.succeeded}/{self.checked} correct")
        line = ", ".join(parts)
        budget = self.budget_line()
        return f"{line}; {budget}" if budget else line


# -- the collector -------------------------------------------------------------------------------


def as_tasks(queries: str | Path | Iterable[str | Task]) -> list[Task]:
    """Tasks from a task file path, or a list of query strings and/or `Task`s (ids from the text)."""
    if isinstance(queries, (str, Path)):
        return load_tasks(queries)
    tasks: list[Task] = []
    seen: set[str] = set()
    for item in queries:
        if isinstance(item, Task):
            task = item
        elif isinstance(item, str):
            # The same id a text task file gives the same query, so list and file runs resume each other.
            task = Task(id=task_id_for(item), query=item)
        else:
            raise ConfigError(f"queries: expected a string or a Task, got {type(item).__name__}")
        if task.id in seen:
            raise ConfigError(f"queries: duplicate task id {task.id!r}")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def override_tool_specs(tools: ToolBox, specs: Sequence[ToolSpec], *, source: str = "tool_schemas") -> ToolBox:
    """Replace the schemas the model sees with `specs`, for tools of the same name.

    The functions still run (and validate arguments against the new schema). A schema alone
    cannot answer a call, so each one must name a tool in `tools`.
    """
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(by_name) - {t.name for t in tools})
    if unknown:
        known = ", ".join(t.name for t in tools) or "none"
        raise ConfigError(f"{source}: tool schema {unknown[0]!r} has no implementation in the tools (known: {known})")
    return ToolBox(
        Tool(t.fn, by_name[t.name], timeout_s=t.timeout_s) if t.name in by_name and by_name[t.name] != t.spec else t
        for t in tools
    )


def _check_shardable(model: Any, tools: Any, store: Any) -> None:
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
    import logging.handlers

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


def _load(uri: str, options: dict[str, Any]) -> ChatModel:
    """`load_model`, with a provider whose module cannot be imported reported as one line."""
    try:
        return load_model(uri, **options)
    except ImportError as exc:
        raise ConfigError(f"model {uri!r}: its provider cannot be imported ({exc})") from None


class _Budget:
    """Decides whether one more run may start without the total passing the cap.

    The next run's cost is estimated as the most expensive finished trajectory so far (a
    conservative bound; the mean would spend closer to the cap but can pass it). Until the first
    run finishes there is no estimate, so only one run is in flight at a time.
    """

    def __init__(self, cap: float | None):
        self.cap = cap
        self.spent = 0.0
        self.max_cost: float | None = None

    def allows(self, in_flight: int) -> bool:
        if self.cap is None:
            return True
        if self.spent >= self.cap:
            return False
        if self.max_cost is None:
            return in_flight == 0
        return self.spent + (in_flight + 1) * self.max_cost <= self.cap

    def record(self, cost: float) -> None:
        self.spent += cost
        self.max_cost = cost if self.max_cost is None else max(self.max_cost, cost)


# The per-request timeout for hosted teachers (anthropic:, openai:), in seconds. One request is one
# agent step: a tool call or a short answer, rarely more than 1-2k output tokens, which the hosted
# APIs write in 10-40 s even for their largest models. 120 s leaves room for a slow 4k-token turn
# (about 100 s at 40 tokens/s) and still gives up on a stalled connection five times sooner than the
# SDKs' own 600 s. Longer outputs (--max-tokens 16000, extended thinking) need a longer timeout:
# a timed-out request is retried, and the abandoned one may still be billed.
DEFAULT_TIMEOUT_S = 120.0
# Providers whose `load_model` options take `timeout_s` (the official SDK clients).
TIMEOUT_SCHEMES = ("anthropic", "openai")


class TeacherCollector:
    """Runs the teacher agent over tasks with bounded concurrency, retries, resume and a budget."""

    def __init__(
        self,
        model: str | ChatModel,
        tools: ToolBox | Iterable[Tool] = (),
        *,
        store: TrajectoryStore | str | Path | None = None,
        system: str | None = None,
        n: int = 1,
        concurrency: int = 8,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        budget_usd: float | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        progress: bool = True,
        tags: Iterable[str] = (),
        keep_trajectories: bool = True,
        model_options: dict[str, Any] | None = None,
        tool_schemas: Sequence[ToolSpec] | None = None,
        processes: int = 1,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        sleep: SleepFn = asyncio.sleep,
    ):
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {max_retries}")
        if budget_usd is not None and budget_usd < 0:
            raise ConfigError(f"budget_usd must be 0 or more, got {budget_usd}")
        if top_logprobs and not logprobs:
            logprobs = True  # asking for top-k alternatives implies logprobs
        if processes < 1:
            raise ConfigError(f"processes must be at least 1, got {processes}")
        model_options = dict(model_options or {})
        if timeout_s is not None:
            if not 0 < timeout_s < float("inf"):
                raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
            if isinstance(model, str) and model.partition(":")[0] in TIMEOUT_SCHEMES:
                # Each request through the SDK client; an explicit model_options["timeout_s"] wins.
                model_options.setdefault("timeout_s", timeout_s)
        self.tools_path = tools if isinstance(tools, str) else None
        if processes > 1:
            _check_shardable(model, tools, store)
        self.model = _load(model, model_options) if isinstance(model, str) else model
        if isinstance(tools, str):
            tools = load_tools(tools)
        self.tools = tools if isinstance(tools, ToolBox) else ToolBox(tools)
        if tool_schemas:
            self.tools = override_tool_specs(self.tools, tool_schemas)
        self.store = open_store(store) if store is not None else None
        self.processes = processes
        # What a child process needs to build the same collector (see _collect_in_processes).
        self._shard_options = {
            "model": model if isinstance(model, str) else None,
            "model_options": model_options, "timeout_s": None,  # the timeout is in model_options
            "system": system, "n": n, "max_retries": max_retries, "backoff_base_s": backoff_base_s,
            "backoff_max_s": backoff_max_s, "max_steps": max_steps, "temperature": temperature,
            "max_tokens": max_tokens, "logprobs": logprobs, "top_logprobs": top_logprobs, "tags": list(tags),
        }
        self.system = system
        self.n = n
        self.concurrency = concurrency
        self.budget_usd = budget_usd
        self.temperature = temperature if temperature is not None else (0.0 if n == 1 else 1.0)
        self.progress = progress
        self.tags = list(tags)
        self.keep_trajectories = keep_trajectories
        self._retries = 0
        self.retrying_model = RetryingModel(
            self.model,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            sleep=sleep,
            on_retry=self._count_retry,
        )
        self.agent = Agent(
            self.retrying_model,
            self.tools,
            system=system,
            max_steps=max_steps,
            temperature=self.temperature,
            max_tokens=max_tokens,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )

    @property
    def model_name(self) -> str:
        """The name trajectories are stored under (the model's URI); resume matches on it."""
        return self.agent.name

    def _count_retry(self, error: TransientModelError, attempt: int, wait: float) -> None:
        self._retries += 1

    async def _run_one(self, task: Task, sample_index: int) -> Trajectory:
        """One (task, sample) through the shared Agent loop. Never raises for a task's own failure."""
        metadata = {"collect": {"temperature": self.temperature, "n": self.n}}
        try:
            trajectory = await self.agent.arun(task, sample_index=sample_index, tags=self.tags, metadata=metadata)
        except Exception as exc:  # a bug in a checker, a tool wrapper, a provider: this task fails, not the batch
            # The failure is logged once, as one line, when the run is counted (`finish`); the
            # traceback only at DEBUG, for whoever debugs the checker or provider.
            log.debug("task %s sample %d raised %s", task.id, sample_index, type(exc).__name__, exc_info=True)
            trajectory = Trajectory(
                task_id=task.id,
                query=task.query,
                system=task.system if task.system is not None else self.system,
                tools=self.tools.specs,
                model=self.model_name,
                sample_index=sample_index,
                tags=[*task.tags, *self.tags],
                metadata={**task.metadata, **metadata},
                status="error",
                error=one_line(f"{type(exc).__name__}: {exc}"),
            )
        if trajectory.error:
            trajectory.error = redact_secrets(trajectory.error)
        return trajectory

    async def acollect(self, tasks: str | Path | Iterable[str | Task]) -> CollectResult:
        tasks = as_tasks(tasks)
        started = time.perf_counter()
        result = CollectResult(budget_usd=self.budget_usd)
        done = self.store.done_keys(self.model_name) if self.store is not None else set()
        jobs: list[tuple[Task, int]] = []
        for task in tasks:
            for sample_index in range(self.n):
                if (task.id, sample_index) in done:
                    result.resumed += 1
                else:
                    jobs.append((task, sample_index))
        if result.resumed:
            log.info("resuming: %d of %d runs already stored", result.resumed, len(tasks) * self.n)

        retries_before = self._retries
        with _ProgressBar(total=len(jobs), enabled=self.progress, model=self.model_name) as bar:
            if self.processes > 1 and len(jobs) > 1:
                await self._collect_in_processes(jobs, result, bar)
            else:
                await self._collect_jobs(jobs, result, bar.advance)
                result.retries = self._retries - retries_before
        result.wall_s = time.perf_counter() - started
        if result.stopped_by_budget:
            log.warning(result.budget_line())
        return result

    async def _collect_jobs(
        self, jobs: list[tuple[Task, int]], result: CollectResult, on_done: Callable[[str, float], None]
    ) -> None:
        """Run (task, sample) jobs with `concurrency` workers on this event loop, into `result`."""
        queue = deque(jobs)
        budget = _Budget(result.budget_usd)
        in_flight = 0
        changed = asyncio.Condition()

        def finish(trajectory: Trajectory) -> None:
            result.by_status[trajectory.status] += 1
            if trajectory.status == "ok":
                result.ok += 1
            elif trajectory.status == "error":
                result.failed += 1
                result.first_error = result.first_error or trajectory.error
                log.warning("task %s sample %d failed: %s", trajectory.task_id, trajectory.sample_index, trajectory.error)
            else:
                result.incomplete += 1
            if trajectory.outcome is not None and trajectory.outcome.success is not None:
                result.checked += 1
                result.succeeded += int(trajectory.outcome.success)
            if self.keep_trajectories:
                result.trajectories.append(trajectory)

        async def worker() -> None:
            nonlocal in_flight
            while True:
                async with changed:
                    while True:
                        if not queue:
                            return
                        if budget.allows(in_flight):
                            break
                        if in_flight == 0:
                            # Nothing running could free budget, and the next run does not fit.
                            result.stopped_by_budget = True
                            return
                        await changed.wait()
                    task, sample_index = queue.popleft()
                    in_flight += 1
                cost = 0.0
                try:
                    trajectory = await self._run_one(task, sample_index)
                    cost = trajectory.cost_usd
                    if store_writer is not None:
                        await store_writer.put(trajectory)
                    finish(trajectory)
                    on_done(trajectory.status, cost)
                finally:
                    async with changed:
                        in_flight -= 1
                        budget.record(cost)
                        changed.notify_all()

        writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="distillery-store")
        store_writer = _StoreWriter(self.store, writer) if self.store is not None else None
        with _shutdown(writer, self.store):
            try:
                async with store_writer or contextlib.nullcontext(), asyncio.TaskGroup() as group:
                    for _ in range(min(self.concurrency, len(queue))):
                        group.create_task(worker())
            except BaseExceptionGroup as group_error:
                # Only the store can fail a worker (a task's own failure is a stored row); say why plainly.
                raise group_error.exceptions[0] from None

        result.skipped_budget += len(queue)
        result.stopped_by_budget = result.stopped_by_budget or bool(queue)
        result.cost_usd += budget.spent

    async def _collect_in_processes(self, jobs: list[tuple[Task, int]], result: CollectResult, bar: _ProgressBar) -> None:
        """Shard the jobs over `processes` child processes, each with its own event loop and SDK client.

        One event loop spends a few ms of CPU per request in the SDK and HTTP stack, which caps one
        process at a few hundred requests per second; shards lift that cap on a multi-core machine.
        Children write to the same SQLite file (SQLite serialises their commits) and send progress
        and log records back over a queue. The budget is split evenly between shards, so the total
        still stays under the cap (each shard may stop a little earlier than one process would).
        """
        import logging.handlers
        import multiprocessing

        k = min(self.processes, len(jobs))
        context = multiprocessing.get_context("spawn")  # fork would copy the parent's event loop and threads
        events = context.Queue()
        specs = [
            {
                **self._shard_options,
                "tools_path": self.tools_path,
                "tool_specs": [spec.model_dump() for spec in self.tools.specs],
                "store_path": str(self.store.path),
                "synchronous": getattr(self.store, "synchronous", "NORMAL"),
                "concurrency": -(-self.concurrency // k),
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

    def collect(self, tasks: str | Path | Iterable[str | Task]) -> CollectResult:
        """Blocking `acollect`, for scripts and notebooks without an event loop."""

        async def collect_then_close() -> CollectResult:
            try:
                return await self.acollect(tasks)
            finally:
                # The SDK client belongs to this event loop, which is about to close: release its
                # connection pool now rather than leave it to the garbage collector.
                aclose = getattr(self.model, "aclose", None)
                if aclose is not None:
                    await aclose()
                # Inside a running loop (a notebook) this ran on a throwaway thread of run_blocking;
                # the store connection that thread opened would outlive it.
                if self.store is not None and threading.current_thread().name.startswith(RUN_THREAD_PREFIX):
                    self.store.release_thread()

        return run_blocking(collect_then_close)


class _StoreWriter:
    """Stores finished trajectories without stalling the event loop, and with little CPU per row.

    A store whose `put` is quick (SQLite with synchronous=NORMAL: a write() into the page cache) is
    written from the loop itself. Handing each row to a thread and back would cost more than the
    write: a wake-up of the thread, a wake-up of the loop and a fight for the GIL took 0.3-0.6 ms of
    the loop's time per trajectory at 64 requests in flight, which cut the collection rate from
    85% to 68% of ideal (benchmarks/collect_throughput.py). A store that waits on the disk (FULL:
    an fsync per commit) or a server goes to one dedicated writer thread instead, in batches: the
    rows that finish while one batch is written go together in the next hand-off. One thread also
    means commits never contend for SQLite's write lock. Either way each trajectory is its own
    transaction, and `put` returns only once its row is committed, so a crash never loses a run
    counted as done.
    """

    def __init__(self, store: TrajectoryStore, executor: concurrent.futures.Executor):
        self.store = store
        self.executor = executor
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

    async def __aenter__(self) -> _StoreWriter:
        if not self.inline:
            self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.task is not None:  # let the thread commit what is queued, even after an error
            self.closing = True
            self.wake.set()
            await asyncio.shield(self.task)

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


class _shutdown:
    """`with _shutdown(writer, store):` on the way out (even after an error), lets the writer thread
    finish its pending writes and close its store connection, then stops it."""

    def __init__(self, executor: concurrent.futures.Executor, store: TrajectoryStore | None):
        self.executor = executor
        self.store = store

    def __enter__(self) -> concurrent.futures.Executor:
        return self.executor

    def __exit__(self, *exc_info: Any) -> None:
        if self.store is not None:
            self.executor.submit(self.store.release_thread)
        self.executor.shutdown(wait=True)


class _ProgressBar:
    """A rich progress bar with done/failed counts and running cost; a no-op when disabled."""

    def __init__(self, *, total: int, enabled: bool, model: str):
        self.enabled = enabled and total > 0
        self.total = total
        self.model = model
        self.counts: Counter = Counter()
        self.cost = 0.0
        self._progress = None
        self._task_id = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]collect[/] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/] ${task.fields[cost]:.4f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                refresh_per_second=4,  # redraws run on rich's own thread; fewer of them cost the event loop less
            )
            self._progress.start()
            self._task_id = self._progress.add_task(self.model, total=self.total, ok=0, failed=0, cost=0.0)
        return self

    def advance(self, status: str, cost: float) -> None:
        """One run finished with `status`, having cost `cost` dollars."""
        self.counts[status] += 1
        self.cost += cost
        if self._progress is not None:
            self._progress.update(
                self._task_id,
                advance=1,
                ok=self.counts["ok"],
                failed=self.counts["error"],
                cost=self.cost,
            )

    def __exit__(self, *exc_info: Any) -> None:
        if self._progress is not None:
            self._progress.stop()


def collect_teacher_trajectories(
    queries: str | Path | Sequence[str | Task],
    model: str | ChatModel,
    tools: ToolBox | Iterable[Tool] = (),
    **kwargs: Any,
) -> list[Trajectory]:
    """Run the teacher on each query and return its trajectories (the seed's entry point).

    `queries` is a list of strings or `Task`s, or a task file path. `model` is a URI
    (`anthropic:claude-opus-4-6`) or a `ChatModel`. Other keywords go to `TeacherCollector`
    (`store=`, `n=`, `concurrency=`, `budget_usd=`, ...). With a store, trajectories stored by an
    earlier run are returned too (loaded, not re-run), in task order.
    """
    kwargs.setdefault("progress", False)
    collector = TeacherCollector(model, tools, **kwargs)
    tasks = as_tasks(queries)
    result = collector.collect(tasks)
    if collector.store is None:
        new = result.trajectories
    else:
        # Everything the store holds for these tasks (this run's rows included), filtered in Python
        # because a task_ids filter with 100k ids would pass SQLite's parameter limit.
        wanted = {task.id for task in tasks}
        new = [
            t
            for t in collector.store.iter_trajectories(model=collector.model_name)
            if t.task_id in wanted and t.sample_index < collector.n
        ]
    order = {task.id: k for k, task in enumerate(tasks)}
    return sorted(new, key=lambda t: (order[t.task_id], t.sample_index))
