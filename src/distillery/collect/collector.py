"""`TeacherCollector` and `collect_teacher_trajectories`: the teacher agent over many tasks, into the store.

The guarantees (bounded concurrency, retries, timeouts, resume, budget) are listed in
`distillery.collect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.agent import DEFAULT_MAX_STEPS, Agent
from distillery.collect.progress import ProgressBar
from distillery.collect.shards import check_shardable, collect_in_processes
from distillery.errors import ConfigError, TransientModelError
from distillery.models import load_model
from distillery.models._hosted import one_line
from distillery.models.base import ChatModel
from distillery.models.blocking import RUN_THREAD_PREFIX, run_blocking
from distillery.models.retrying import RetryingModel, SleepFn
from distillery.redaction import redact_secrets
from distillery.store import StoreWriter, TrajectoryStore, open_store
from distillery.tasks import Task, load_tasks, task_id_for
from distillery.tools import Tool, ToolBox, load_tools
from distillery.trajectory import ToolSpec, Trajectory

log = logging.getLogger("distillery.collect")


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
            check_shardable(model, tools, store)
        self.model = _load(model, model_options) if isinstance(model, str) else model
        if isinstance(tools, str):
            tools = load_tools(tools)
        self.tools = tools if isinstance(tools, ToolBox) else ToolBox(tools)
        if tool_schemas:
            self.tools = override_tool_specs(self.tools, tool_schemas)
        self.store = open_store(store) if store is not None else None
        self.processes = processes
        # What a child process needs to build the same collector (see `shards.collect_in_processes`).
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
        with ProgressBar(total=len(jobs), enabled=self.progress, model=self.model_name) as bar:
            if self.processes > 1 and len(jobs) > 1:
                await collect_in_processes(self, jobs, result, bar)
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

        store_writer = StoreWriter(self.store) if self.store is not None else None
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
