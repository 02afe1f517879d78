"""The demo's seven stages, each a function `stage(ctx) -> summary` over the public API of the stage that owns it.

1. collect   `TeacherCollector` runs the teacher over the queries (queries.json) plus a world
             training split into `store.db`; the same store also gets the teacher alone on the
             validation and test splits, which calibration and the summary table reuse. Each
             split's tasks run against that split's sealed toolbox.
2. build     `DatasetBuilder` writes `data/train.jsonl` (OpenAI format, teacher successes only)
             and its top-k KD sidecar `data/train.topk.parquet` (teacher logprobs, shared vocab).
3. init      `init_student` cuts the student out of the teacher (structured depth and width
             pruning, what to keep chosen by activation importance on the training data) into
             `student-init/`; with `--student world:student-xs` the student starts from random weights.
4. train     `train_student` distils into it with sparse top-k KD from that sidecar (sequence-level
             KD when the teacher is a black box such as Claude).
5. calibrate the student alone on validation, then `evaluation.calibrate` over the cached runs picks
             the escalation threshold; written to `cascade.toml`.
6. queries   `StudentAgent` (student, teacher as fallback) answers each query.
7. evaluate  student alone and the cascade run on the test split; the teacher-alone row reuses
             stage 1's runs; rows are `evaluate.run_row`'s figures, plus the random router at the
             cascade's escalation rate (expected over the same cached runs).

`stage_inputs` says what each stage's result depends on besides the stage before it.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from distillery.world.demo.cache import write_trajectories
from distillery.world.demo.context import DemoContext
from distillery.world.demo.queries import QUERY_SPLIT, demo_queries, demo_tasks
from distillery.world.demo.settings import SCRATCH_LEARNING_RATE, DemoSettings
from distillery.errors import ModelError
from distillery.tasks import Task
from distillery.trajectory import Trajectory

# Calibration conversations the pruning importance is measured on (init_student's default).
N_PRUNE_CALIBRATION = 128


# -- 1. collect --------------------------------------------------------------------------------


def collect(ctx: DemoContext) -> dict[str, Any]:
    from distillery.collect import TeacherCollector
    from distillery.store import SQLiteStore

    s = ctx.s
    groups = {"train": [*demo_tasks(), *ctx.tasks("train")], "validation": ctx.tasks("validation"),
              "test": ctx.tasks("test")}
    # A local teacher's logprobs are what the top-k sidecar is built from; a hosted one's spend is capped.
    options: dict[str, Any] = dict(logprobs=True, top_logprobs=s.topk) if s.local_teacher else {}
    ctx.out.mkdir(parents=True, exist_ok=True)
    totals: dict[str, Any] = {"ok": 0, "failed": 0, "incomplete": 0, "resumed": 0, "correct": 0, "checked": 0,
                              "cost_usd": 0.0, "wall_s": 0.0, "stopped_by_budget": False, "first_error": None}
    store = SQLiteStore(ctx.store_path)
    try:
        for split, tasks in groups.items():
            # One collector per split: each split's tasks see only that split's rows through the tools.
            if not s.local_teacher and s.budget_usd is not None:
                options["budget_usd"] = max(0.0, s.budget_usd - totals["cost_usd"])  # one cap for all splits
            collector = TeacherCollector(
                ctx.teacher, ctx.tools(split), store=store, concurrency=s.concurrency if s.local_teacher else 8,
                max_tokens=s.max_tokens, progress=True, **options,
            )
            result = collector.collect(tasks)
            for name, value in (("ok", result.ok), ("failed", result.failed), ("incomplete", result.incomplete),
                                ("resumed", result.resumed), ("correct", result.succeeded),
                                ("checked", result.checked), ("cost_usd", result.cost_usd), ("wall_s", result.wall_s)):
                totals[name] += value
            totals["first_error"] = totals["first_error"] or result.first_error
            if result.stopped_by_budget:
                totals["stopped_by_budget"] = True
                break  # the budget is spent: the later splits would not start a task either
    finally:
        store.close()
    if totals["first_error"] and totals["ok"] == 0:
        raise ModelError(f"teacher {s.teacher}: every run failed; first error: {totals['first_error']}")
    totals["tasks"] = {"queries": len(demo_queries()), "train": s.n_train, "validation": s.n_validation,
                       "test": s.n_test}
    return totals


# -- 2. build ----------------------------------------------------------------------------------


def build(ctx: DemoContext) -> dict[str, Any]:
    from distillery.dataset import DatasetBuilder
    from distillery.world.models import load_world_tokenizer

    training_tasks = [*demo_tasks(), *ctx.tasks("train")]
    runs = ctx.teacher_runs(training_tasks)
    trajectories = [runs[task.id] for task in training_tasks if task.id in runs]
    topk = ctx.s.topk if ctx.s.local_teacher else None
    builder = DatasetBuilder(
        # skip_invalid: a teacher's malformed call (an empty tool name...) drops that example, reported.
        format="openai", success_only=True, skip_invalid=True, tokenizer=load_world_tokenizer(), topk=topk,
        # world: models share one tokenizer; for an hf: teacher the builder loads the teacher's own
        # tokenizer from its directory and refuses the sidecar if the vocabularies differ.
        teacher_tokenizer=load_world_tokenizer() if topk and ctx.s.offline_world else None, min_examples=1,
    )
    report = builder.write_file(trajectories, ctx.data_path)
    stats = report.splits["train"]
    summary: dict[str, Any] = {
        "path": str(ctx.data_path), "inputs": report.inputs, "examples": report.examples,
        "removed": {k: v for k, v in report.removed.items() if v}, "tokens_p50": stats.p50,
        "tokens_total": stats.total, "token_count_method": stats.method,
        "files": [str(p) for p in report.files], "warnings": report.warnings,
    }
    if "train" in report.topk:
        sidecar = report.topk["train"]
        summary["sidecar"] = {"path": str(sidecar.path), "k": sidecar.k, "coverage": sidecar.coverage,
                              "bytes": sidecar.bytes}
    return summary


# -- 3. init -----------------------------------------------------------------------------------


def init(ctx: DemoContext) -> dict[str, Any]:
    """The pruned student (`distillery student init`), or a note that the student starts from random weights."""
    s = ctx.s
    if not s.pruned:
        return {"pruned": False, "student": s.student}
    from distillery.distill.init import init_student

    if ctx.init_dir.exists():
        shutil.rmtree(ctx.init_dir)  # inputs changed: never train a stale cut
    with torch_threads(s.torch_threads):
        result = init_student(s.teacher, ctx.data_path, out=ctx.init_dir, n_calibration=N_PRUNE_CALIBRATION,
                              seed=s.seed, threads=s.torch_threads, **s.student_sizes)
    return {
        "pruned": True, "from": s.teacher, "path": str(ctx.init_dir), "source": result.source, "shape": result.shape,
        "parameters": result.parameters, "layers_kept": result.plan["layers"], "layer_scores": result.layer_scores,
        "layer_metric": result.layer_metric, "calibration": result.calibration, "seconds": result.seconds,
    }


# -- 4. train ----------------------------------------------------------------------------------


def train(ctx: DemoContext) -> dict[str, Any]:
    from distillery.distill.config import DistillationConfig
    from distillery.distill.trainer import train_student

    s = ctx.s
    if ctx.student_dir.exists():
        shutil.rmtree(ctx.student_dir)  # inputs changed: a stale checkpoint must not be resumed
    # hf:<dir> with init.json: the trainer's default learning rate is then the pruned student's recovery rate.
    start = f"hf:{ctx.init_dir}" if s.pruned else s.student
    learning_rate = s.learning_rate if s.learning_rate is not None or s.pruned else SCRATCH_LEARNING_RATE
    # The bar's console is bound to the real stdout now, because transformers prints every log dict
    # to stdout (its PrinterCallback), which is swallowed below: distillation.json keeps them all.
    threads = s.torch_threads
    bar_console = Console(file=ctx.console.file)
    with Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=bar_console) as progress, \
            contextlib.redirect_stdout(io.StringIO()), torch_threads(threads):
        callback = training_progress(progress, f"{s.trained_student_uri} ({s.signal} KD)", s.train_steps)
        config = DistillationConfig(
            signal=s.signal, alpha=s.alpha if s.signal != "sequence" else 1.0, temperature=s.temperature,
            max_steps=s.train_steps, batch_size=s.batch_size, learning_rate=learning_rate,
            max_length=512, seed=s.seed, logging_steps=max(1, s.train_steps // 10), progress=False,
            threads=threads,
        )
        train_student(start, ctx.data_path, out=ctx.student_dir, config=config, callbacks=[callback])
    report = json.loads((ctx.student_dir / "distillation.json").read_text())
    logged = [entry for entry in report["log_history"] if "loss" in entry]
    return {
        "path": str(ctx.student_dir), "start": start, "signal": report["signal"], "alpha": report["alpha"],
        "temperature": report["temperature"], "steps": report["global_step"], "examples": report["examples"],
        "learning_rate": report["learning_rate"], "first_loss": logged[0]["loss"] if logged else None,
        "final_loss": logged[-1]["loss"] if logged else None,
        "final_loss_hard": logged[-1].get("loss_hard") if logged else None,
        "final_loss_soft": logged[-1].get("loss_soft") if logged else None,
        "train_runtime_s": report.get("train_runtime_s"), "threads": threads,
    }


# -- 5. calibrate ------------------------------------------------------------------------------


def calibrate(ctx: DemoContext) -> dict[str, Any]:
    from distillery.routing import CascadeConfig, TierConfig, write_cascade_config
    from distillery.evaluation.calibrate import calibrate as calibrate_threshold
    from distillery.evaluation.runs import TierRun, attach_handovers

    s = ctx.s
    tasks, teacher = ctx.with_teacher_runs(ctx.tasks("validation"))
    student = ctx.run_alone(tasks, "validation", "student alone on validation")
    write_trajectories(student, ctx.runs_path("student-validation"))
    runs = [[TierRun.from_trajectory(t) for t in student], [TierRun.from_trajectory(t) for t in teacher]]
    takeovers = 0
    if s.escalate == "task":  # the teacher continues the student's steps: simulate that exactly
        takeovers = attach_handovers(runs[0], ctx.teacher_takeovers(student, tasks, "validation"))
    result = calibrate_threshold(runs, target=s.target)
    threshold = round(result.thresholds[0], 6)
    config = CascadeConfig(
        tiers=[TierConfig(model=f"hf:{ctx.student_dir.resolve()}", threshold=threshold, scorer=s.scorer,
                          options={"max_new_tokens": s.max_tokens}),
               TierConfig(model=s.teacher)],
        escalate=s.escalate,
        calibration={"mode": result.mode, "goal": result.goal, "met": result.met, "n_tasks": len(tasks),
                     "predicted_success": result.chosen.success,
                     "predicted_task_escalation_rate": result.chosen.teacher_fraction,
                     "method": "task-level routing over cached single-tier runs (distillery demo)"
                     + (", with the teacher's take-overs" if takeovers else "")},
        source=str(ctx.config_path),
    )
    write_cascade_config(config, ctx.config_path, header="written by `distillery demo`")
    return {
        "threshold": threshold, "scorer": s.scorer, "target": s.target, "met": result.met, "takeover_runs": takeovers,
        "n_tasks": len(tasks), "student_success": result.student_success,
        "teacher_success": result.teacher_success, "predicted_success": result.chosen.success,
        "predicted_task_escalation_rate": result.chosen.teacher_fraction,
        "predicted_cost_per_1k_usd": result.chosen.cost_per_task * 1000,
        "teacher_cost_per_1k_usd": result.teacher_cost_per_task * 1000,
        "config": str(ctx.config_path),
    }


# -- 6. queries --------------------------------------------------------------------------------


def queries(ctx: DemoContext) -> dict[str, Any]:
    tasks = demo_tasks()
    trajectories = ctx.run_cascade(tasks, QUERY_SPLIT, "student + teacher fallback on the queries")
    write_trajectories(trajectories, ctx.runs_path("cascade-queries"))
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
    return {"threshold": ctx.threshold, "rows": rows}


# -- 7. evaluate -------------------------------------------------------------------------------


def evaluate(ctx: DemoContext) -> dict[str, Any]:
    from distillery.evaluation.evaluate import run_row

    tasks, teacher = ctx.with_teacher_runs(ctx.tasks("test"))
    student = ctx.run_alone(tasks, "test", "student alone on test")
    write_trajectories(student, ctx.runs_path("student-test"))
    cascade = ctx.run_cascade(tasks, "test", "cascade on test")
    write_trajectories(cascade, ctx.runs_path("cascade-test"))
    n = len(tasks)
    student_success = sum(bool(t.outcome and t.outcome.success) for t in student) / n
    teacher_success = sum(bool(t.outcome and t.outcome.success) for t in teacher) / n
    teacher_cost = sum(t.cost_usd for t in teacher) / n
    common = (teacher, student_success, teacher_success, teacher_cost)
    rows = [
        run_row("student alone", student, 1, *common, last_is_teacher=False),
        run_row("teacher alone", teacher, 1, *common),
        run_row("cascade", cascade, 2, *common),
    ]
    rows[-1]["threshold"] = ctx.threshold
    rows[0]["answered_by_student"], rows[1]["answered_by_student"] = 1.0, 0.0
    rows[2]["answered_by_student"] = answered_by_student(cascade)
    rows.append(random_router_row(rows, student, teacher))
    return {"n_tasks": n, "rows": rows, "by_tier": success_by_tier(tasks, student, teacher, cascade)}


def answered_by_student(trajectories: Sequence[Trajectory]) -> float:
    """The share of tasks the teacher did not answer: its final step is not the teacher's (tier 1).

    A task that failed before any step (a prompt past the student's context) stayed with the student.
    """
    if not trajectories:
        return 0.0
    teacher = sum(bool(t.steps) and t.steps[-1].tier > 0 for t in trajectories)
    return 1.0 - teacher / len(trajectories)


def random_router_row(rows: list[dict[str, Any]], student: Sequence[Trajectory],
                      teacher: Sequence[Trajectory]) -> dict[str, Any]:
    """A router that sends the same share of tasks to the teacher as the cascade did, chosen at random.

    Its expected success is `evaluate`'s random-router curve at that share, over the same cached runs;
    its expected cost mixes the two tiers' costs in the same proportion. Nothing is re-run.
    """
    from distillery.evaluation.metrics import random_router_curve

    by_name = {row["name"]: row for row in rows}
    share = 1.0 - by_name["cascade"]["answered_by_student"]
    (_, success), = random_router_curve(by_name["student alone"]["success"], by_name["teacher alone"]["success"],
                                        [share])
    n = len(student)
    student_cost, teacher_cost = sum(t.cost_usd for t in student) / n, sum(t.cost_usd for t in teacher) / n
    cost = (1 - share) * student_cost + share * teacher_cost
    return {"name": "random router", "kind": "expected", "n_tasks": n, "success": success,
            "answered_by_student": 1.0 - share, "cost_per_1k_usd": cost * 1000,
            "saving_vs_teacher": (1 - cost / teacher_cost) if teacher_cost else None}


def success_by_tier(tasks: Sequence[Task], *runs: Sequence[Trajectory]) -> dict[str, list[float]]:
    """Success per task tier for each run (student, teacher, cascade), in that order."""
    out: dict[str, list[float]] = {}
    for tier in ("none", "easy", "medium", "hard"):
        picked = [i for i, task in enumerate(tasks) if task.metadata.get("tier") == tier]
        if picked:
            out[tier] = [sum(bool(run[i].outcome and run[i].outcome.success) for i in picked) / len(picked)
                         for run in runs]
    return out


# -- the table of stages -----------------------------------------------------------------------


STAGES: list[tuple[str, str, Callable[[DemoContext], dict[str, Any]]]] = [
    ("collect", "Collect teacher trajectories", collect),
    ("build", "Build the fine-tuning JSONL and the KD sidecar", build),
    ("init", "Initialise the student from the teacher (structured pruning)", init),
    ("train", "Train the student with knowledge distillation", train),
    ("calibrate", "Calibrate the escalation threshold on validation", calibrate),
    ("queries", "Run the student with fallback on the queries", queries),
    ("evaluate", "Student, teacher and cascade on the test split", evaluate),
]


def stage_inputs(name: str, s: DemoSettings) -> dict[str, Any]:
    """What each stage's result depends on besides the stage before it (whose hash is chained in)."""
    return {
        "collect": {"n_train": s.n_train, "n_validation": s.n_validation, "n_test": s.n_test,
                    "queries": demo_queries(), "topk": s.topk if s.local_teacher else None, "tools": "sealed by split"},
        "build": {"format": "openai", "topk": s.topk if s.local_teacher else None, "success_only": True},
        "init": {"student": s.student, "sizes": s.student_sizes if s.pruned else None,
                 "n_calibration": N_PRUNE_CALIBRATION},
        "train": {"signal": s.signal, "steps": s.train_steps, "batch_size": s.batch_size, "lr": s.learning_rate,
                  "alpha": s.alpha, "temperature": s.temperature},
        "calibrate": {"target": s.target, "scorer": s.scorer, "escalate": s.escalate},
        "queries": {"escalate": s.escalate},
        "evaluate": {"escalate": s.escalate, "rows": "with answered shares and the random router"},
    }[name]


# -- helpers -----------------------------------------------------------------------------------


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


__all__ = ["STAGES", "answered_by_student", "random_router_row", "stage_inputs", "success_by_tier",
           "torch_threads", "training_progress"]
