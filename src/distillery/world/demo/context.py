"""What every stage shares: the output paths, the models, one sealed toolbox per split, the runners.

Models load only when a stage that needs them runs, so a fully cached re-run loads none. Each
split's tasks run against that split's toolbox (`world.tools.toolbox(split)`): collection and the
queries on train, calibration on validation, the summary on test. A model that invents another
split's order id gets "not found", so no test-split row reaches training or calibration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from distillery.world.demo.queries import world_split
from distillery.world.demo.settings import DemoSettings
from distillery.errors import ConfigError, DistilleryError, ModelError
from distillery.models.batching import batched
from distillery.tasks import Task
from distillery.tools import ToolBox
from distillery.trajectory import Message, Trajectory

SPLITS = ("train", "validation", "test")


class DemoContext:
    """Paths, lazily loaded models and toolboxes, and the helpers the stages run tasks with."""

    def __init__(self, settings: DemoSettings, console: Console):
        self.s = settings
        self.out = settings.out
        self.console = console
        self.summaries: dict[str, dict[str, Any]] = {}  # each finished stage's summary, for the stages after it
        self._teacher: Any = None
        self._student: Any = None
        self._tools: dict[str, ToolBox] = {}

    # -- paths ---------------------------------------------------------------------------------

    @property
    def store_path(self) -> Path:
        return self.out / "store.db"

    @property
    def data_path(self) -> Path:
        return self.out / "data" / "train.jsonl"

    @property
    def init_dir(self) -> Path:
        """The student pruned from the teacher, before training."""
        return self.out / "student-init"

    @property
    def student_dir(self) -> Path:
        return self.out / "student"

    @property
    def config_path(self) -> Path:
        return self.out / "cascade.toml"

    @property
    def results_path(self) -> Path:
        return self.out / "results.json"

    @property
    def report_path(self) -> Path:
        return self.out / "report.html"

    def runs_path(self, name: str) -> Path:
        return self.out / "runs" / f"{name}.jsonl"

    # -- models, tools and tasks ---------------------------------------------------------------

    def tools(self, split: str) -> ToolBox:
        """The world's tools sealed to one split: its lookups see only that split's rows."""
        if split not in self._tools:
            from distillery.world.tools import toolbox

            self._tools[split] = toolbox(split)
        return self._tools[split]

    @property
    def teacher(self) -> Any:
        if self._teacher is None:
            self._teacher = batched(load_teacher(self.s.teacher, self.s.max_tokens), self.s.concurrency)
        return self._teacher

    @property
    def student(self) -> Any:
        if self._student is None:
            from distillery.models.hf import HFModel

            # Named for what it is; a local model, it is priced by its parameter count ([self_hosted], prices.toml).
            model = HFModel(str(self.student_dir), uri=self.s.trained_student_uri, max_new_tokens=self.s.max_tokens)
            self._student = batched(model, self.s.concurrency)
        return self._student

    def tasks(self, split: str) -> list[Task]:
        n = {"train": self.s.n_train, "validation": self.s.n_validation, "test": self.s.n_test}[split]
        return world_split(split, n, self.s.seed)

    @property
    def threshold(self) -> float:
        return self.summaries["calibrate"]["threshold"]

    # -- the teacher's stored runs -------------------------------------------------------------

    def teacher_runs(self, tasks: Sequence[Task]) -> dict[str, Trajectory]:
        """The teacher's stored run for each task (sample 0), by task id."""
        from distillery.store import SQLiteStore

        wanted = {task.id for task in tasks}
        with SQLiteStore(self.store_path) as store:
            return {t.task_id: t for t in store.iter_trajectories(model=self.s.teacher)
                    if t.task_id in wanted and t.sample_index == 0}

    def with_teacher_runs(self, tasks: list[Task]) -> tuple[list[Task], list[Trajectory]]:
        """The tasks the teacher has a stored run for, and those runs, in the same order."""
        runs = self.teacher_runs(tasks)
        kept = [task for task in tasks if task.id in runs]
        if not kept:
            raise ConfigError(f"{self.store_path}: no teacher runs for these tasks; run with --fresh")
        return kept, [runs[task.id] for task in kept]

    # -- running the student and the cascade ---------------------------------------------------

    def run_alone(self, tasks: Sequence[Task], split: str, label: str) -> list[Trajectory]:
        from distillery.routing import Cascade

        agent = Cascade([self.student], [], self.tools(split), scorer=[self.s.scorer], max_tokens=self.s.max_tokens)
        return self.run_agent(agent, tasks, label)

    def run_cascade(self, tasks: Sequence[Task], split: str, label: str) -> list[Trajectory]:
        from distillery.routing import StudentAgent

        agent = StudentAgent(self.student, self.teacher, scorer=self.s.scorer, threshold=self.threshold,
                             escalate=self.s.escalate, tools=self.tools(split), max_tokens=self.s.max_tokens)
        return self.run_agent(agent, tasks, label)

    def teacher_takeovers(self, student: Sequence[Trajectory], tasks: Sequence[Task], split: str) -> list[dict[int, Any]]:
        """The teacher taking over each student run at every step it could first be doubted at
        (`evaluation.runs.handover_runs`): what calibrating `escalate="task"` exactly needs."""
        from distillery.evaluation.runs import handover_runs

        with Progress(TextColumn("[bold]run[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console) as progress:
            bar = progress.add_task("teacher taking over from the student on validation", total=None)
            update = lambda _label, done, total: progress.update(bar, completed=done, total=total)  # noqa: E731
            return asyncio.run(handover_runs(student, self.teacher, tasks, tools=self.tools(split),
                                             concurrency=self.s.concurrency, progress=update,
                                             max_tokens=self.s.max_tokens))

    def run_agent(self, agent: Any, tasks: Sequence[Task], label: str) -> list[Trajectory]:
        from distillery.evaluation.runs import run_tasks

        with Progress(TextColumn("[bold]run[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console) as progress:
            bar = progress.add_task(label, total=len(tasks))
            update = lambda _label, done, _total: progress.update(bar, completed=done)  # noqa: E731
            return asyncio.run(run_tasks(agent, tasks, concurrency=self.s.concurrency, progress=update))


def load_teacher(uri: str, max_tokens: int) -> Any:
    """The teacher model, with a one-line error when a hosted one has no key or cannot be reached."""
    from distillery.models import load_model

    options: dict[str, Any] = {"max_new_tokens": max_tokens} if uri.startswith(("world:", "hf:")) else {}
    model = load_model(uri, **options)  # MissingAPIKeyError names the variable
    if not uri.startswith(("world:", "hf:")):
        check_reachable(model)
    return model


def check_reachable(model: Any, timeout_s: float = 30.0) -> None:
    """One tiny call before a batch of hundreds: no network or a bad key fails in seconds, not after retries."""

    async def ping() -> None:
        try:
            await asyncio.wait_for(model.agenerate([Message(role="user", content="Reply with OK.")], None, max_tokens=5),
                                   timeout_s)
        finally:
            aclose = getattr(model, "aclose", None)
            if aclose is not None:
                await aclose()

    try:
        asyncio.run(ping())
    except asyncio.TimeoutError:
        raise ModelError(f"teacher {model.uri}: no answer within {timeout_s:g}s; is the network up?") from None
    except DistilleryError as exc:
        raise ModelError(f"teacher {model.uri} is not usable: {exc}") from None


__all__ = ["SPLITS", "DemoContext", "check_reachable", "load_teacher"]
