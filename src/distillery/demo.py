"""`distillery demo`: the whole seed pipeline end to end, on real (small) models, in a few minutes.

    from distillery.demo import DemoSettings, run_demo
    results = run_demo(DemoSettings(out="distillery-demo"))        # or DemoSettings.quick(...)

Six stages, each one call into the public API of the stage that owns it (nothing is
re-implemented here):

1. collect   `TeacherCollector` runs the teacher over the hard-coded `DEMO_QUERIES` plus a world
             training split into `store.db`; the same run also records the teacher alone on the
             validation and test splits, which calibration and the summary table reuse.
2. build     `DatasetBuilder` writes `data/train.jsonl` (OpenAI format, teacher successes only)
             and its top-k KD sidecar `data/train.topk.parquet` (teacher logprobs, shared vocab).
3. train     `train_student` distils the smallest world student with sparse top-k KD from that
             sidecar (sequence-level KD when the teacher is a black box such as Claude).
4. calibrate the student alone on validation, then `offline.calibrate` over the cached runs picks
             the escalation threshold; written to `cascade.toml`.
5. queries   `StudentAgent` (student, teacher as fallback) answers each hard-coded query.
6. evaluate  student alone and the cascade run on the test split; the teacher-alone row reuses
             stage 1's runs; rows are `evaluate.run_row`'s figures. Everything lands in `results.json`.

At the end, the test split's runs become an eval result (`eval.json`, `evaluate.summarise_runs`) and
its HTML report (`report.html`, `distillery report`), whose path is printed.

Each stage writes `stages/<name>.json` with the hash of its inputs (settings, upstream stage
hashes, the teacher's weights); a re-run skips every stage whose hash still matches, and a
collection that was interrupted resumes from the store. Every number printed comes from this run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distillery.errors import ConfigError, DistilleryError, ModelError
from distillery.models.batching import BatchingModel, batched  # noqa: F401  (BatchingModel re-exported)
from distillery.tasks import Task
from distillery.trajectory import Message, Trajectory

RESULTS_KIND = "distillery.demo"
QUERY_TAG = "demo-query"


# --------------------------------------------------------------------------------------------------
# The hard-coded queries: world tasks whose expected answers come from the shop database
# --------------------------------------------------------------------------------------------------

# (family, entities, query). Every entity combination is in the world's *train* split, so these
# queries (which the seed's flow collects and trains on) never leak into the held-out test split.
DEMO_QUERIES: list[tuple[str, dict[str, Any], str]] = [
    ("smalltalk", {"greeting": 1, "question": 0}, "Hello. What can you do?"),
    ("decline", {"topic": 1, "city": "Paris"}, "Book me a flight to Paris."),
    ("price", {"product": "Quartz Blender"}, "How much does the Quartz Blender cost?"),
    ("convert", {"value": 337, "from_unit": "kg", "to_unit": "lb"}, "Convert 337 kilograms to pounds."),
    ("order_status", {"order_id": "ORD-26091"}, "What is the status of order ORD-26091?"),
    ("stock_by_name", {"product": "Lunar Backpack", "city": "Lima"}, "How many Lunar Backpacks are in the Lima warehouse?"),
    ("order_total", {"order_id": "ORD-93842"}, "What is the total price of order ORD-93842?"),
    ("stock_value", {"product": "Onyx Heater", "city": "Tokyo", "city2": "Madrid"},
     "What is the total value of the Onyx Heater stock in Tokyo and Madrid?"),
]


def demo_tasks() -> list[Task]:
    """`DEMO_QUERIES` as world tasks, with the checker and expected answer of their family."""
    from distillery.world import SYSTEM_PROMPT
    from distillery.world.tasks import FAMILIES, NUMERIC_TOLERANCE

    tasks = []
    for index, (name, entities, query) in enumerate(DEMO_QUERIES, start=1):
        family = FAMILIES[name]
        tasks.append(Task(
            id=f"demo-query-{index}", query=query, system=SYSTEM_PROMPT,
            expected=family.expected(entities), checker=family.checker, tolerance=NUMERIC_TOLERANCE,
            tags=[family.name, f"tier:{family.tier}", QUERY_TAG, "split:train"],
            metadata={"family": family.name, "tier": family.tier, "entities": entities, "split": "train"},
        ))
    return tasks


def world_split(split: str, n: int, seed: int) -> list[Task]:
    """`n` world tasks of one split, tagged `split:<split>` so the store can tell them apart."""
    from distillery.world.tasks import generate_tasks

    return [task.model_copy(update={"tags": [*task.tags, f"split:{split}"]}) for task in generate_tasks(split, n, seed)]


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


ESCALATION_WORDS = {
    "restart": "such a task starts over with the teacher; the student's abandoned steps are paid for, not kept",
    "task": "the teacher takes over mid-task",
    "step": "the teacher answers that step only",
}


@dataclass
class DemoSettings:
    """What the demo runs. The defaults fit the 5-minute budget on 2 CPU cores (BENCHMARKS.md)."""

    out: Path = Path("distillery-demo")
    teacher: str = "world:teacher"
    student: str = "world:student-xs"
    n_train: int = 320  # world train-split tasks collected with the teacher (plus DEMO_QUERIES)
    n_validation: int = 100  # calibration tasks
    n_test: int = 100  # held-out tasks for the summary table
    train_steps: int = 300
    batch_size: int = 16
    learning_rate: float = 3e-3  # high, for a tiny student trained from scratch (as the world teacher was)
    alpha: float = 0.5  # L = alpha * CE + (1 - alpha) * T^2 * KD
    temperature: float = 2.0
    topk: int = 8  # teacher logprobs kept per token in the sidecar
    target: float = 0.95  # calibrate: cheapest threshold reaching target x teacher success on validation
    scorer: str = "logprob-mean"  # the student's confidence (docs/routing.md)
    escalate: str = "restart"  # "restart": a doubted task starts over with the teacher; "task": the teacher takes over mid-task; "step": only that step
    max_tokens: int = 192  # per model call; world answers and tool calls are far shorter
    concurrency: int = 32  # tasks in flight; local models batch their calls (BatchingModel)
    budget_usd: float | None = 5.0  # cap on a hosted teacher's collection spend (world: prices are stand-ins)
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_settings(cls, **overrides: Any) -> DemoSettings:
        """Tiny budgets for the test suite: every stage runs, on a handful of tasks and steps."""
        values = dict(n_train=48, n_validation=24, n_test=24, train_steps=150, batch_size=8, quick=True)
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("n_train", "n_validation", "n_test", "train_steps", "batch_size", "topk", "max_tokens", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 < self.target <= 1.0:
            raise ConfigError(f"--target must be in (0, 1], got {self.target}")
        from distillery.routing.cascade import ESCALATE_MODES

        if self.escalate not in ESCALATE_MODES:
            raise ConfigError(f"--escalate {self.escalate!r}: use restart, task or step")

    @property
    def local_teacher(self) -> bool:
        """A teacher whose weights and logprobs we have (world:, hf:): top-k KD is possible."""
        return self.teacher.startswith(("world:", "hf:"))

    @property
    def offline_world(self) -> bool:
        return self.teacher.startswith("world:")

    @property
    def signal(self) -> str:
        # A black-box teacher (Claude, GPT-4o) returns no logits: only its text can be distilled.
        return "sparse" if self.local_teacher else "sequence"


# --------------------------------------------------------------------------------------------------
# Batching concurrent calls to a local model
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Stage bookkeeping: a done-marker per stage, keyed by the hash of its inputs
# --------------------------------------------------------------------------------------------------


def fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_fingerprint(uri: str) -> dict[str, Any] | None:
    """Size and mtime of a local model's weights, so a retrained teacher invalidates cached stages."""
    directory: Path | None = None
    if uri == "world:teacher":
        from distillery.world.models import TEACHER_DIR

        directory = TEACHER_DIR
    elif uri.startswith("hf:"):
        directory = Path(uri[3:])
    if directory is None:
        return None
    files = sorted(directory.glob("*.safetensors"))
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files} or None


class Stages:
    """`stages/<name>.json` markers: {"hash", "summary", "seconds"}; a marker whose hash matches means done."""

    def __init__(self, out: Path):
        self.dir = out / "stages"

    def cached(self, name: str, key: str) -> dict[str, Any] | None:
        path = self.dir / f"{name}.json"
        try:
            marker = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return marker if marker.get("hash") == key else None

    def finish(self, name: str, key: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        marker = {"hash": key, "summary": summary, "seconds": round(seconds, 1)}
        tmp = self.dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(marker, indent=2, default=str) + "\n")
        tmp.replace(self.dir / f"{name}.json")  # atomic: a killed run never leaves a half marker
        return marker


# --------------------------------------------------------------------------------------------------
# Trajectory files (the student's runs, cached between stages)
# --------------------------------------------------------------------------------------------------


def write_trajectories(trajectories: Sequence[Trajectory], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for trajectory in trajectories:
            handle.write(trajectory.model_dump_json() + "\n")
    tmp.replace(path)


def read_trajectories(path: Path) -> list[Trajectory]:
    with open(path, encoding="utf-8") as handle:
        return [Trajectory.model_validate_json(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------------

STAGE_TITLES = {
    "collect": "1/6 Collect teacher trajectories",
    "build": "2/6 Build the fine-tuning JSONL and the KD sidecar",
    "train": "3/6 Train the student with knowledge distillation",
    "calibrate": "4/6 Calibrate the escalation threshold on validation",
    "queries": "5/6 Run the student with fallback on the queries",
    "evaluate": "6/6 Student, teacher and cascade on the test split",
}


class Demo:
    """Runs the stages in order, skipping the ones whose inputs have not changed since they finished."""

    def __init__(self, settings: DemoSettings, console: Console | None = None):
        self.s = settings
        self.out = settings.out
        self.console = console or Console()
        self.stages = Stages(self.out)
        self.keys: dict[str, str] = {}
        self.summaries: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, dict[str, Any]] = {}
        self._teacher: Any = None
        self._student: Any = None
        self._tools: Any = None

    # -- paths ---------------------------------------------------------------------------------

    @property
    def store_path(self) -> Path:
        return self.out / "store.db"

    @property
    def data_path(self) -> Path:
        return self.out / "data" / "train.jsonl"

    @property
    def student_dir(self) -> Path:
        return self.out / "student"

    @property
    def config_path(self) -> Path:
        return self.out / "cascade.toml"

    @property
    def results_path(self) -> Path:
        return self.out / "results.json"

    def runs_path(self, name: str) -> Path:
        return self.out / "runs" / f"{name}.jsonl"

    # -- models and tasks (loaded only when a stage that needs them runs) ------------------------

    @property
    def tools(self) -> Any:
        if self._tools is None:
            from distillery.world.tools import toolbox

            self._tools = toolbox()
        return self._tools

    @property
    def teacher(self) -> Any:
        if self._teacher is None:
            self._teacher = batched(load_teacher(self.s.teacher, self.s.max_tokens), self.s.concurrency)
        return self._teacher

    @property
    def student(self) -> Any:
        if self._student is None:
            from distillery.models.hf import HFModel

            # Named as a world student so it is priced as one (prices.toml [world.student], a stand-in).
            model = HFModel(str(self.student_dir), uri=trained_student_uri(self.s.student),
                            max_new_tokens=self.s.max_tokens)
            self._student = batched(model, self.s.concurrency)
        return self._student

    def tasks(self, split: str) -> list[Task]:
        n = {"train": self.s.n_train, "validation": self.s.n_validation, "test": self.s.n_test}[split]
        return world_split(split, n, self.s.seed)

    # -- driver --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started, cpu_started = time.perf_counter(), time.process_time()
        self.console.print(f"[bold]distillery demo[/] -> artifacts in [cyan]{self.out.resolve()}[/]")
        self.console.print(
            f"teacher [bold]{self.s.teacher}[/], student [bold]{self.s.student}[/] "
            f"({'quick: tiny budgets' if self.s.quick else 'full run'}); "
            + ("offline world: no network, no API key" if self.s.offline_world
               else "local teacher" if self.s.local_teacher else "hosted teacher: real, billed API calls")
        )
        if not self.s.local_teacher:
            self.console.print(
                f"[yellow]note:[/] {self.s.teacher} returns no logits, so the student is trained with "
                "sequence-level KD (SFT on the teacher's trajectories) instead of top-k logit KD."
            )
            self.teacher  # noqa: B018 - loads it now: a missing key or network stops here, before any stage
        self.stages.dir.mkdir(parents=True, exist_ok=True)  # also marks the directory as the demo's (--fresh)
        previous = {"settings": self.stage_settings()}
        for name, step in (
            ("collect", self.collect),
            ("build", self.build),
            ("train", self.train),
            ("calibrate", self.calibrate),
            ("queries", self.queries),
            ("evaluate", self.evaluate),
        ):
            self.console.rule(f"[bold]{STAGE_TITLES[name]}")
            inputs = {**previous, **self.stage_inputs(name)}
            key = fingerprint(inputs)
            self.keys[name] = key
            marker = self.stages.cached(name, key)
            if marker is not None:
                self.console.print(f"[dim]cached: inputs unchanged since it finished ({marker['seconds']:.0f}s then); "
                                   f"--fresh starts over[/]")
                self.timings[name] = {"seconds": 0.0, "cached": True, "first_run_seconds": marker["seconds"]}
            else:
                quiet_library_output()
                stage_started = time.perf_counter()
                summary = step()
                seconds = time.perf_counter() - stage_started
                marker = self.stages.finish(name, key, summary, seconds)
                self.timings[name] = {"seconds": round(seconds, 1), "cached": False}
            self.summaries[name] = marker["summary"]
            self.report(name, marker["summary"])
            previous = {"upstream": key}
        report = self.write_report()
        results = self.results(time.perf_counter() - started, time.process_time() - cpu_started)
        tmp = self.results_path.with_name(self.results_path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
        tmp.replace(self.results_path)
        self.console.rule("[bold]Done")
        self.print_artifacts(results)
        self.console.print(f"report: [cyan]{report.path}[/] ({report.bytes / 1e6:.1f} MB, everything inline: open it in a "
                           "browser)", highlight=False)
        return results

    def stage_settings(self) -> dict[str, Any]:
        return {"teacher": self.s.teacher, "teacher_weights": weights_fingerprint(self.s.teacher),
                "seed": self.s.seed, "max_tokens": self.s.max_tokens}

    def stage_inputs(self, name: str) -> dict[str, Any]:
        """What each stage's result depends on besides the stage before it (whose hash is chained in)."""
        s = self.s
        return {
            "collect": {"n_train": s.n_train, "n_validation": s.n_validation, "n_test": s.n_test,
                        "queries": DEMO_QUERIES, "topk": s.topk if s.local_teacher else None},
            "build": {"format": "openai", "topk": s.topk if s.local_teacher else None, "success_only": True},
            "train": {"student": s.student, "signal": s.signal, "steps": s.train_steps, "batch_size": s.batch_size,
                      "lr": s.learning_rate, "alpha": s.alpha, "temperature": s.temperature},
            "calibrate": {"target": s.target, "scorer": s.scorer},
            "queries": {"escalate": s.escalate},
            "evaluate": {"escalate": s.escalate},
        }[name]

    # -- 1. collect ----------------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        from distillery.collect import TeacherCollector
        from distillery.store import SQLiteStore

        queries = demo_tasks()
        train, validation, test = self.tasks("train"), self.tasks("validation"), self.tasks("test")
        self.print_query_list()
        self.out.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {}
        if self.s.local_teacher:
            options.update(logprobs=True, top_logprobs=self.s.topk)  # what the top-k sidecar is built from
        else:
            options.update(budget_usd=self.s.budget_usd)
        store = SQLiteStore(self.store_path)
        try:
            collector = TeacherCollector(
                self.teacher, self.tools, store=store, concurrency=self.s.concurrency if self.s.local_teacher else 8,
                max_tokens=self.s.max_tokens, progress=True, **options,
            )
            result = collector.collect([*queries, *train, *validation, *test])
        finally:
            store.close()
        if result.first_error and result.ok == 0:
            raise ModelError(f"teacher {self.s.teacher}: every run failed; first error: {result.first_error}")
        return {
            "ok": result.ok, "failed": result.failed, "incomplete": result.incomplete, "resumed": result.resumed,
            "correct": result.succeeded, "checked": result.checked, "cost_usd": result.cost_usd,
            "wall_s": result.wall_s, "stopped_by_budget": result.stopped_by_budget, "first_error": result.first_error,
            "tasks": {"queries": len(queries), "train": len(train), "validation": len(validation), "test": len(test)},
        }

    def teacher_runs(self, tasks: Sequence[Task]) -> dict[str, Trajectory]:
        """The teacher's stored run for each task (sample 0), by task id."""
        from distillery.store import SQLiteStore

        wanted = {task.id for task in tasks}
        with SQLiteStore(self.store_path) as store:
            return {t.task_id: t for t in store.iter_trajectories(model=self.s.teacher)
                    if t.task_id in wanted and t.sample_index == 0}

    # -- 2. build ------------------------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        from distillery.dataset import DatasetBuilder
        from distillery.world.models import load_world_tokenizer

        training_tasks = [*demo_tasks(), *self.tasks("train")]
        runs = self.teacher_runs(training_tasks)
        trajectories = [runs[task.id] for task in training_tasks if task.id in runs]
        topk = self.s.topk if self.s.local_teacher else None
        builder = DatasetBuilder(
            # skip_invalid: a teacher's malformed call (an empty tool name...) drops that example, reported.
            format="openai", success_only=True, skip_invalid=True, tokenizer=load_world_tokenizer(), topk=topk,
            # world: models share one tokenizer; for an hf: teacher the builder loads the teacher's own
            # tokenizer from its directory and refuses the sidecar if the vocabularies differ.
            teacher_tokenizer=load_world_tokenizer() if topk and self.s.offline_world else None, min_examples=1,
        )
        report = builder.write_file(trajectories, self.data_path)
        stats = report.splits["train"]
        summary: dict[str, Any] = {
            "path": str(self.data_path), "inputs": report.inputs, "examples": report.examples,
            "removed": {k: v for k, v in report.removed.items() if v}, "tokens_p50": stats.p50,
            "tokens_total": stats.total, "token_count_method": stats.method,
            "files": [str(p) for p in report.files], "warnings": report.warnings,
        }
        if "train" in report.topk:
            sidecar = report.topk["train"]
            summary["sidecar"] = {"path": str(sidecar.path), "k": sidecar.k, "coverage": sidecar.coverage,
                                  "bytes": sidecar.bytes}
        return summary

    # -- 3. train ------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        from distillery.distill.trainer import train_student

        if self.student_dir.exists():
            shutil.rmtree(self.student_dir)  # inputs changed: a stale checkpoint must not be resumed
        # The bar's console is bound to the real stdout now, because transformers prints every log dict
        # to stdout (its PrinterCallback), which is swallowed below: distillation.json keeps them all.
        # One torch thread: a world student's matmuls are too small to split, and on a busy 2-core
        # machine 2 threads made each step 6x slower (0.75 s against 0.13 s, BENCHMARKS.md "Demo").
        bar_console = Console(file=self.console.file)
        with Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=bar_console) as progress, \
                contextlib.redirect_stdout(io.StringIO()), torch_threads(1):
            callback = training_progress(progress, f"{self.s.student} ({self.s.signal} KD)", self.s.train_steps)
            train_student(
                self.s.student, self.data_path, out=self.student_dir, signal=self.s.signal,
                alpha=self.s.alpha if self.s.signal != "sequence" else 1.0, temperature=self.s.temperature,
                max_steps=self.s.train_steps, batch_size=self.s.batch_size, learning_rate=self.s.learning_rate,
                max_length=512, seed=self.s.seed, logging_steps=max(1, self.s.train_steps // 10),
                progress=False, callbacks=[callback],
            )
        report = json.loads((self.student_dir / "distillation.json").read_text())
        logged = [entry for entry in report["log_history"] if "loss" in entry]
        return {
            "path": str(self.student_dir), "signal": report["signal"], "alpha": report["alpha"],
            "temperature": report["temperature"], "steps": report["global_step"], "examples": report["examples"],
            "learning_rate": report["learning_rate"], "first_loss": logged[0]["loss"] if logged else None,
            "final_loss": logged[-1]["loss"] if logged else None,
            "final_loss_hard": logged[-1].get("loss_hard") if logged else None,
            "final_loss_soft": logged[-1].get("loss_soft") if logged else None,
            "train_runtime_s": report.get("train_runtime_s"),
        }

    # -- 4. calibrate --------------------------------------------------------------------------

    def calibrate(self) -> dict[str, Any]:
        from distillery.routing import TierConfig, CascadeConfig, write_cascade_config
        from distillery.offline.calibrate import calibrate
        from distillery.offline.runs import TierRun

        tasks, teacher = self.with_teacher_runs(self.tasks("validation"))
        student = self.run_alone(tasks, "student alone on validation")
        write_trajectories(student, self.runs_path("student-validation"))
        runs = [[TierRun.from_trajectory(t) for t in student], [TierRun.from_trajectory(t) for t in teacher]]
        result = calibrate(runs, target=self.s.target)
        threshold = round(result.thresholds[0], 6)
        config = CascadeConfig(
            tiers=[TierConfig(model=f"hf:{self.student_dir.resolve()}", threshold=threshold, scorer=self.s.scorer,
                              options={"max_new_tokens": self.s.max_tokens}),
                   TierConfig(model=self.s.teacher)],
            escalate=self.s.escalate,
            calibration={"mode": result.mode, "goal": result.goal, "met": result.met, "n_tasks": len(tasks),
                         "predicted_success": result.chosen.success,
                         "predicted_task_escalation_rate": result.chosen.teacher_fraction,
                         "method": "task-level routing over cached single-tier runs (distillery demo)"},
            source=str(self.config_path),
        )
        write_cascade_config(config, self.config_path, header="written by `distillery demo`")
        return {
            "threshold": threshold, "scorer": self.s.scorer, "target": self.s.target, "met": result.met,
            "n_tasks": len(tasks), "student_success": result.student_success,
            "teacher_success": result.teacher_success, "predicted_success": result.chosen.success,
            "predicted_task_escalation_rate": result.chosen.teacher_fraction,
            "predicted_cost_per_1k_usd": result.chosen.cost_per_task * 1000,
            "teacher_cost_per_1k_usd": result.teacher_cost_per_task * 1000,
            "config": str(self.config_path),
        }

    @property
    def threshold(self) -> float:
        return self.summaries["calibrate"]["threshold"]

    def with_teacher_runs(self, tasks: list[Task]) -> tuple[list[Task], list[Trajectory]]:
        """The tasks the teacher has a stored run for, and those runs, in the same order."""
        runs = self.teacher_runs(tasks)
        kept = [task for task in tasks if task.id in runs]
        if not kept:
            raise ConfigError(f"{self.store_path}: no teacher runs for these tasks; run with --fresh")
        return kept, [runs[task.id] for task in kept]

    def run_alone(self, tasks: Sequence[Task], label: str) -> list[Trajectory]:
        from distillery.routing import Cascade

        agent = Cascade([self.student], [], self.tools, scorer=[self.s.scorer], max_tokens=self.s.max_tokens)
        return self.run_agent(agent, tasks, label)

    def run_cascade(self, tasks: Sequence[Task], label: str) -> list[Trajectory]:
        from distillery.routing import StudentAgent

        agent = StudentAgent(self.student, self.teacher, scorer=self.s.scorer, threshold=self.threshold,
                             escalate=self.s.escalate, tools=self.tools, max_tokens=self.s.max_tokens)
        return self.run_agent(agent, tasks, label)

    def run_agent(self, agent: Any, tasks: Sequence[Task], label: str) -> list[Trajectory]:
        from distillery.offline.runs import run_tasks

        with Progress(TextColumn("[bold]run[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console) as progress:
            bar = progress.add_task(label, total=len(tasks))
            update = lambda _label, done, _total: progress.update(bar, completed=done)  # noqa: E731
            return asyncio.run(run_tasks(agent, tasks, concurrency=self.s.concurrency, progress=update))

    # -- 5. queries ----------------------------------------------------------------------------

    def queries(self) -> dict[str, Any]:
        tasks = demo_tasks()
        trajectories = self.run_cascade(tasks, "student + teacher fallback on the queries")
        write_trajectories(trajectories, self.runs_path("cascade-queries"))
        rows = []
        for task, trajectory in zip(tasks, trajectories):
            student_steps = sum(1 for step in trajectory.steps if step.tier == 0)
            teacher_steps = len(trajectory.steps) - student_steps
            confidences = [c.confidence for step in trajectory.steps if step.routing for c in step.routing.confidences
                           if c.tier == 0 and c.confidence is not None]
            rows.append({
                "query": task.query, "tier": task.metadata["tier"],
                "answered_by": "student" if teacher_steps == 0 else "escalated to teacher",
                "student_steps": student_steps, "teacher_steps": teacher_steps,
                "min_confidence": min(confidences) if confidences else None,
                "answer": trajectory.final_answer, "correct": bool(trajectory.outcome and trajectory.outcome.success),
                "expected": task.expected, "cost_usd": trajectory.cost_usd,
            })
        return {"threshold": self.threshold, "rows": rows}

    # -- 6. evaluate ---------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        from distillery.offline.evaluate import run_row

        tasks, teacher = self.with_teacher_runs(self.tasks("test"))
        student = self.run_alone(tasks, "student alone on test")
        write_trajectories(student, self.runs_path("student-test"))
        cascade = self.run_cascade(tasks, "cascade on test")
        write_trajectories(cascade, self.runs_path("cascade-test"))
        n = len(tasks)
        student_success = sum(bool(t.outcome and t.outcome.success) for t in student) / n
        teacher_success = sum(bool(t.outcome and t.outcome.success) for t in teacher) / n
        teacher_cost = sum(t.cost_usd for t in teacher) / n
        common = (teacher, student_success, teacher_success, teacher_cost)
        rows = [
            run_row("student alone", student, 1, *common),
            run_row("teacher alone", teacher, 1, *common),
            run_row("cascade", cascade, 2, *common),
        ]
        rows[-1]["threshold"] = self.threshold
        return {"n_tasks": n, "rows": rows, "by_tier": success_by_tier(tasks, student, teacher, cascade)}

    # -- the report ----------------------------------------------------------------------------

    @property
    def report_path(self) -> Path:
        return self.out / "report.html"

    def write_report(self) -> Any:
        """The test split's runs as an eval result (`eval.json`) and its HTML report (`report.html`).

        The figures come from stage 6's saved runs and stage 1's teacher runs; there is no random-router
        run and there are no reference labels (its curve is simulated; confidences are judged by task outcome).
        """
        from distillery.offline.evaluate import summarise_runs
        from distillery.offline.results import save_results
        from distillery.report import write_report
        from distillery.routing.config import load_cascade_config

        tasks, teacher = self.with_teacher_runs(self.tasks("test"))
        student = read_trajectories(self.runs_path("student-test"))
        cascade = read_trajectories(self.runs_path("cascade-test"))
        if [t.id for t in tasks] != [t.task_id for t in student] or [t.task_id for t in cascade] != [t.task_id for t in student]:
            raise ConfigError(f"{self.out / 'runs'}: the test runs do not match the test tasks; run with --fresh")
        results = summarise_runs(tasks, load_cascade_config(self.config_path),
                                 [trained_student_uri(self.s.student), self.s.teacher], [student, teacher], cascade,
                                 seed=self.s.seed)
        results["meta"]["tasks"] = (f"world:test n={len(tasks)} seed={self.s.seed} (distillery demo: no random-router "
                                    "run, no reference labels)")
        json_path, _ = save_results(results, self.out / "eval.json")
        return write_report(json_path, self.report_path, cascade=self.config_path)

    # -- printing ------------------------------------------------------------------------------

    def report(self, name: str, summary: dict[str, Any]) -> None:
        print_ = self.console.print
        if name == "collect":
            if self.timings[name]["cached"]:
                self.print_query_list()
            print_(f"teacher: {summary['ok']} ok, {summary['failed']} failed, {summary['incomplete']} incomplete"
                   f" ({summary['resumed']} resumed from the store); {summary['correct']}/{summary['checked']} correct;"
                   f" {money(summary['cost_usd'])}{self.price_note()}; store: {self.store_path}")
            if summary.get("stopped_by_budget"):
                print_(f"[yellow]stopped by --budget-usd {self.s.budget_usd}[/]")
        elif name == "build":
            removed = ", ".join(f"{k}: {v}" for k, v in summary["removed"].items()) or "none"
            print_(f"{summary['examples']} examples from {summary['inputs']} teacher trajectories (removed: {removed});"
                   f" {summary['tokens_total']} tokens, p50 {summary['tokens_p50']:.0f} per example -> {summary['path']}")
            if "sidecar" in summary:
                side = summary["sidecar"]
                print_(f"KD sidecar: top-{side['k']} teacher logprobs for {100 * side['coverage']:.1f}% of assistant "
                       f"tokens, {side['bytes'] / 1024:.0f} KiB -> {side['path']}")
            else:
                print_("no KD sidecar: the teacher returns no logprobs (sequence-level KD)")
        elif name == "train":
            parts = f"loss {fmt(summary['first_loss'])} -> {fmt(summary['final_loss'])}"
            if summary.get("final_loss_soft") is not None:
                parts += f" (hard {fmt(summary['final_loss_hard'])}, soft {fmt(summary['final_loss_soft'])})"
            print_(f"{summary['signal']} KD, alpha={summary['alpha']}, T={summary['temperature']}: "
                   f"{summary['steps']} steps on {summary['examples']} examples, {parts} -> {summary['path']}")
        elif name == "calibrate":
            met = "met" if summary["met"] else "[yellow]NOT met[/] (closest setting kept)"
            print_(f"on {summary['n_tasks']} validation tasks: student alone {pct(summary['student_success'])}, "
                   f"teacher alone {pct(summary['teacher_success'])}")
            print_(f"threshold {summary['threshold']:.4f} ({summary['scorer']}): the cheapest setting reaching "
                   f"{summary['target']:g} x teacher success, {met}; predicts {pct(summary['predicted_success'])} "
                   f"success with {pct(summary['predicted_task_escalation_rate'])} of tasks escalated -> {summary['config']}")
        elif name == "queries":
            self.print_queries(summary)
        elif name == "evaluate":
            self.print_summary(summary)

    def print_query_list(self) -> None:
        table = Table(title="the hard-coded queries (collected and trained on, as in the seed's flow)")
        table.add_column("#", justify="right")
        table.add_column("query")
        table.add_column("tier")
        for index, task in enumerate(demo_tasks(), start=1):
            table.add_row(str(index), task.query, task.metadata["tier"])
        self.console.print(table)
        self.console.print(
            f"teacher runs: {len(DEMO_QUERIES)} queries + {self.s.n_train} train tasks (the training data), "
            f"{self.s.n_validation} validation and {self.s.n_test} test tasks (teacher-alone runs, reused below)"
        )

    def price_note(self) -> str:
        return " (stand-in price: world:teacher priced as anthropic:claude-opus-4-6)" if self.s.offline_world else ""

    def print_queries(self, summary: dict[str, Any]) -> None:
        world = " (offline world)" if self.s.offline_world else ""
        self.console.print(f"student {self.s.student} distilled, teacher {self.s.teacher} as fallback; a step whose "
                           f"confidence is below {summary['threshold']:.4f} goes to the teacher{world}")
        for number, row in enumerate(summary["rows"], start=1):
            steps = row["student_steps"] + row["teacher_steps"]
            who = ("[green]student[/]" if row["answered_by"] == "student"
                   else f"[yellow]escalated to teacher[/] ({row['teacher_steps']} of {steps} steps)")
            verdict = "[green]correct[/]" if row["correct"] else f"[red]wrong[/] (expected {row['expected']})"
            answer = row["answer"] if row["answer"] is not None else "(no answer)"
            self.console.print(f"[bold]{number}. {row['query']}[/]", highlight=False)
            self.console.print(f"   {who}, student confidence {fmt(row['min_confidence'])}: {answer!r} -> {verdict}",
                               highlight=False)
        self.console.print(f"[dim]confidence: the student's lowest step score ({self.s.scorer} over its action tokens)[/]")

    def print_summary(self, summary: dict[str, Any]) -> None:
        label = "offline world" if self.s.offline_world else self.s.teacher
        caption = (f"{summary['n_tasks']} held-out test tasks, {label}. Cost per 1,000 tasks from prices.toml"
                   + ("; stand-in prices: world:teacher priced as anthropic:claude-opus-4-6, the student as a "
                      "self-hosted small model" if self.s.offline_world else "")
                   + f". Escalated tasks: a student step scored below the threshold ({ESCALATION_WORDS[self.s.escalate]}); "
                   "teacher steps: the share of the kept steps the teacher produced.")
        table = Table(title=f"Summary ({label})", caption=caption)
        table.add_column("", no_wrap=True)
        for column in ("success", "escalated tasks", "teacher steps", "$ / 1k tasks", "cost vs teacher"):
            table.add_column(column, justify="right")
        for row in summary["rows"]:
            cascade = row["name"] == "cascade"
            saving = row["saving_vs_teacher"]
            table.add_row(row["name"], pct(row["success"]), pct(row["task_escalation_rate"]) if cascade else "-",
                          pct(row["teacher_call_fraction"]) if cascade else "-", money(row["cost_per_1k_usd"]),
                          "-" if saving is None else f"{100 * (1 - saving):.1f}%")
        self.console.print(table)

    def print_artifacts(self, results: dict[str, Any]) -> None:
        table = Table(title=f"artifacts under {self.out.resolve()}", show_header=False)
        for name, path in results["artifacts"].items():
            table.add_row(name, path)
        self.console.print(table)
        total = results["timing"]["wall_s"]
        cached = sum(1 for t in results["timing"]["stages"].values() if t["cached"])
        self.console.print(f"wall time {total:.0f}s, CPU time {results['timing']['cpu_s']:.0f}s "
                           f"({cached} of 6 stages cached). Next: "
                           f"distillery eval --config {self.config_path} --world-split test --n 200")

    # -- results.json ----------------------------------------------------------------------------

    def results(self, wall_s: float, cpu_s: float) -> dict[str, Any]:
        settings = asdict(self.s)
        settings["out"] = str(self.s.out)
        return {
            "kind": RESULTS_KIND,
            "world": "offline" if self.s.offline_world else "hosted teacher",
            "label": "offline world" if self.s.offline_world else f"teacher {self.s.teacher}",
            "pricing": ("stand-in: world:teacher priced as anthropic:claude-opus-4-6, students as a self-hosted small "
                        "model (prices.toml [world.*])") if self.s.offline_world else "list prices from prices.toml",
            "settings": settings,
            "signal": self.s.signal,
            "stages": self.summaries,
            "stage_hashes": self.keys,
            # cpu_s is this process's CPU time: on a busy shared machine it says what the run needs when
            # it has the cores to itself (the local models run on one thread each).
            "timing": {"wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1), "stages": self.timings,
                       "cpu_count": os.cpu_count(),
                       "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
            "artifacts": {
                "store": str(self.store_path),
                "jsonl": str(self.data_path),
                "sidecar": str(self.data_path.with_suffix(".topk.parquet")) if self.s.local_teacher else "-",
                "student checkpoint": str(self.student_dir),
                "cascade config": str(self.config_path),
                "runs": str(self.out / "runs"),
                "results": str(self.results_path),
                "eval result": str(self.out / "eval.json"),
                "report": str(self.report_path),
            },
        }


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def quiet_library_output() -> None:
    """Silence `datasets`' per-map progress bars and transformers' info logs and weight-loading bars.

    They would break up the demo's own stage output; this process-wide setting is what the CLI wants.
    """
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def torch_threads(count: int):
    """Run with `count` torch intra-op threads, then restore the previous setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def trained_student_uri(student: str) -> str:
    """The name the trained student goes by in trajectories: priced as a world student (a stand-in)."""
    return f"{student}-kd"


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


def training_progress(progress: Progress, label: str, total: int) -> Any:
    """A transformers `TrainerCallback` that drives a rich progress bar (step count and last loss)."""
    from transformers import TrainerCallback

    bar = progress.add_task(label, total=total, loss="-")

    class RichProgress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress.update(bar, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                progress.update(bar, loss=f"{logs['loss']:.3f}")

    return RichProgress()


def success_by_tier(tasks: Sequence[Task], *runs: Sequence[Trajectory]) -> dict[str, list[float]]:
    """Success per task tier for each run (student, teacher, cascade), in that order."""
    out: dict[str, list[float]] = {}
    for tier in ("none", "easy", "medium", "hard"):
        picked = [i for i, task in enumerate(tasks) if task.metadata.get("tier") == tier]
        if picked:
            out[tier] = [sum(bool(run[i].outcome and run[i].outcome.success) for i in picked) / len(picked)
                         for run in runs]
    return out


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def money(value: float) -> str:
    return f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def run_demo(settings: DemoSettings, *, fresh: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) the demo into `settings.out`; returns what `results.json` holds.

    `fresh=True` deletes the output directory first. Raises `DistilleryError` for what a user can
    fix (a hosted teacher without its API key, an unreachable network, a missing world teacher).
    """
    out = Path(settings.out)
    if fresh and out.exists():
        if out.is_dir() and not (out / "stages").is_dir() and any(out.iterdir()):
            # Only ever delete a directory the demo made: a typo in --out must not wipe a project.
            raise ConfigError(f"--out {out}: not a demo output directory (no stages/); refusing to delete it")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    return Demo(settings, console).run()


__all__ = ["DEMO_QUERIES", "BatchingModel", "Demo", "DemoSettings", "demo_tasks", "run_demo"]
