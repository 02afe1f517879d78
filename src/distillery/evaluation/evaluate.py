"""Held-out evaluation of a cascade against the student alone, the teacher alone, a random router and the oracle.

    results = evaluate(tasks, load_cascade_config("cascade.toml"), tools=toolbox(), system=SYSTEM_PROMPT)
    save_results(results, "runs/eval.json")       # evaluation/results.py: + runs/eval.png and .trajectories.jsonl
    failures = check_gates(results, min_success=0.9)

What is run, and what is simulated (both are labelled in the JSON):
- *run*: each tier alone on every task (its per-step confidences recorded), the cascade at its
  configured thresholds (step- or task-level, as configured), and a random router run through the
  same cascade with a random scorer escalating the same fraction of steps at each tier.
- *reference labels*: at every state the student visited, the teacher is asked once for its action;
  a student step is "wrong" when its canonical action differs (a final answer is wrong when the
  task's checker says so). They give tool-call accuracy and the scorer's step-level AUROC/ECE.
- *simulated* over the cached single-tier runs (RouteLLM style, no model calls): the deferral
  curve (tier 1 -> teacher, task-level routing on the min step confidence), APGR and CPT, and the
  oracle router (escalates exactly the tasks the student fails and the teacher solves).

"Teacher-call fraction" is the share of steps produced by the last tier for run rows, and the
share of tasks handed to it for simulated rows; both are reported per row. "Step escalation rate"
is the share of kept steps the first tier did not answer alone, whatever the escalation mode
(under `task` and `restart` every step after the hand-off counts, not only the hand-off).
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Sequence
from typing import Any

from distillery import registry
from distillery.errors import ConfigError
from distillery.models.base import ChatModel
from distillery.evaluation.metrics import (
    apgr,
    cpt,
    oracle_router_curve,
    percentile,
    pgr,
    random_router_curve,
    scorer_quality,
)
from distillery.evaluation.runs import (
    Progress,
    TierRun,
    reference_actions,
    run_tasks,
    run_tiers_alone,
    scored_step_labels,
)
from distillery.evaluation.simulate import deferral_curve, simulate
from distillery.pricing import price_for
from distillery.routing.cascade import Cascade, CascadeConfig
from distillery.routing.confidence import RandomScorer, action_key, get_scorer
from distillery.routing.config import load_tier_models
from distillery.tasks import Task, normalize_text
from distillery.tools import ToolBox
from distillery.trajectory import Step, Trajectory

CPT_LEVELS = (0.5, 0.8, 0.95)
STEP_LABELS = "student step differs from the teacher's action at the same state"


class EvalResults(dict):
    """The JSON-ready results, carrying the runs' trajectories beside them (not in the dict).

    `trajectories` maps a row's name to its trajectories in task order (the cascade's and the
    student's alone); `save_results` writes them next to the JSON for `distillery report`.
    """

    def __init__(self, data: dict[str, Any], trajectories: dict[str, list[Trajectory]] | None = None):
        super().__init__(data)
        self.trajectories = trajectories or {}


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def tool_call_accuracy(trajectories: Sequence[Trajectory], references: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Exact and argument-level agreement of tool calls with the teacher's at the same states.

    Counted over steps where the teacher made a tool call. Exact: the canonical call(s) are equal.
    Argument-level: of the teacher's (name, argument) pairs, the share the student matched (a wrong
    tool name matches none of its arguments).
    """
    exact = steps = matched = total = 0
    for trajectory, refs in zip(trajectories, references):
        for step, ref in zip(trajectory.steps, refs):
            teacher_calls = ref.get("tool_calls") or []
            if not teacher_calls:
                continue
            steps += 1
            exact += action_key(step) == ref["key"]
            for position, teacher_call in enumerate(teacher_calls):
                arguments = teacher_call.get("arguments") or {}
                total += max(1, len(arguments))
                if position >= len(step.tool_calls) or step.tool_calls[position].name != teacher_call["name"]:
                    continue
                student_args = step.tool_calls[position].arguments
                matched += sum(1 for k, v in arguments.items() if student_args.get(k) == v) if arguments else 1
    return {
        "exact": exact / steps if steps else None,
        "arguments": matched / total if total else None,
        "steps": steps,
    }


# --------------------------------------------------------------------------------------------------
# Rows of the comparison table
# --------------------------------------------------------------------------------------------------


def _answer(trajectory: Trajectory) -> str | None:
    answer = trajectory.final_answer
    return normalize_text(answer) if answer is not None else None


def _escalated(step: Step) -> bool:
    """A kept step the first tier did not answer alone, whatever the escalation mode.

    Under `step` that is a step whose student proposal was rejected; under `task` it is also
    every later step of the task, which goes straight to the higher tier; under `restart` it is
    every step of a restarted task. A step whose fallback failed and kept the student's answer
    counts too: a higher tier was asked. (The abandoned steps of a restart are not kept steps;
    their calls are in the cost.)
    """
    return step.escalated or step.tier > 0


def run_row(name: str, trajectories: Sequence[Trajectory], n_tiers: int, teacher: Sequence[Trajectory],
            student_success: float, teacher_success: float, teacher_cost: float, *,
            last_is_teacher: bool = True) -> dict[str, Any]:
    """Figures for one set of trajectories that were actually run.

    `last_is_teacher=False` for a run that never involved the teacher (the student alone): its
    teacher-call share is 0, not the share of steps its own (only) tier produced.
    """
    n = len(trajectories)
    steps = [s for t in trajectories for s in t.steps]
    success = sum(bool(t.outcome and t.outcome.success) for t in trajectories) / n
    cost = sum(t.cost_usd for t in trajectories) / n
    latencies = [t.latency_s for t in trajectories]
    last = n_tiers - 1
    asked = [0] * n_tiers
    escalated_from = [0] * n_tiers
    for record in (s.routing for s in steps if s.routing is not None):
        for entry in record.confidences:
            asked[entry.tier] += 1
        for rejected in record.rejected:
            escalated_from[rejected.tier] += 1
        # Under `restart` the proposals of abandoned attempts, and the doubts that ended them,
        # are not in the kept steps; the first kept step lists them.
        if record.abandoned_attempt is not None:
            for tier in record.abandoned_attempt.asked_tiers:
                asked[tier] += 1
            for tier in record.abandoned_attempt.doubted_tiers:
                escalated_from[tier] += 1
    by_tier = [sum(1 for s in steps if s.tier == i) for i in range(n_tiers)]
    agree = [(_answer(t) is not None and _answer(t) == _answer(ref)) for t, ref in zip(trajectories, teacher)]
    return {
        "name": name,
        "kind": "run",
        "n_tasks": n,
        "success": success,
        "pgr": pgr(success, student_success, teacher_success),
        "cost_per_1k_usd": cost * 1000,
        "saving_vs_teacher": (1 - cost / teacher_cost) if teacher_cost else None,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "step_escalation_rate": sum(_escalated(s) for s in steps) / len(steps) if steps else 0.0,
        "task_escalation_rate": sum(any(s.escalated for s in t.steps) for t in trajectories) / n,
        "escalation_rate_by_tier": [escalated_from[i] / asked[i] if asked[i] else None for i in range(last)],
        "steps_by_tier": [c / len(steps) if steps else 0.0 for c in by_tier],
        "teacher_call_fraction": by_tier[last] / len(steps) if steps and last_is_teacher else 0.0,
        "agreement_with_teacher": sum(agree) / n,
        "fallback_failures": sum(s.routing is not None and s.routing.fallback_failed is not None for s in steps),
        "errors": sum(t.status == "error" for t in trajectories),
    }


def oracle_row(runs: Sequence[Sequence[TierRun]], student_success: float, teacher_success: float,
               teacher_cost: float) -> dict[str, Any]:
    """Each task goes straight to the cheapest tier that solves it (tier 1 when none does): simulated."""
    n = len(runs[0])
    tiers = [next((i for i in range(len(runs)) if runs[i][task].success), 0) for task in range(n)]
    chosen = [runs[tier][task] for task, tier in enumerate(tiers)]
    success = sum(r.success for r in chosen) / n
    cost = sum(r.cost_usd for r in chosen) / n
    return {
        "name": "oracle router",
        "kind": "simulated",
        "n_tasks": n,
        "success": success,
        "pgr": pgr(success, student_success, teacher_success),
        "cost_per_1k_usd": cost * 1000,
        "saving_vs_teacher": (1 - cost / teacher_cost) if teacher_cost else None,
        "latency_p50_s": percentile([r.latency_s for r in chosen], 50),
        "latency_p95_s": percentile([r.latency_s for r in chosen], 95),
        "task_escalation_rate": sum(t > 0 for t in tiers) / n,
        "teacher_call_fraction": sum(t == len(runs) - 1 for t in tiers) / n,
    }


# --------------------------------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------------------------------


async def aevaluate(
    tasks: Sequence[Task],
    config: CascadeConfig,
    *,
    tools: ToolBox,
    system: str | None = None,
    models: Sequence[ChatModel] | None = None,
    concurrency: int = 4,
    max_steps: int = 10,
    reference_labels: bool = True,
    random_router: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvalResults:
    """Run the evaluation described in the module docstring; returns the JSON-ready results."""
    if not tasks:
        raise ConfigError("eval: no tasks to evaluate")
    if len(config.tiers) < 2:
        raise ConfigError(f"{config.source}: eval needs a cascade of at least two tiers (a student and the teacher)")
    if any(task.checker is None for task in tasks):
        missing = next(task.id for task in tasks if task.checker is None)
        raise ConfigError(f"eval: task {missing!r} has no checker; success cannot be measured without one")
    started = time.time()
    if models is None:
        models = load_tier_models(config)
    models = list(models)
    scorers = config.scorer_names()
    n_tiers = len(models)
    common = dict(system=system, max_steps=max_steps)

    # 1. Every tier alone; its confidences are recorded (the teacher is not scored).
    alone = await run_tiers_alone(models, scorers, tasks, tools=tools, concurrency=concurrency, progress=progress, **common)

    # 2. The cascade at its configured thresholds.
    cascade = Cascade(
        models, config.thresholds, tools, scorer=[get_scorer(s) if s else None for s in scorers],
        escalate=config.escalate, on_fallback_error=config.on_fallback_error,
        fallback_timeout_s=config.fallback_timeout_s, **common,
    )
    cascaded = await run_tasks(cascade, tasks, concurrency=concurrency, label="cascade", progress=progress)

    # 3. A random router escalating the same fraction of steps at each tier, run through the same cascade.
    randomised = None
    if random_router:
        doubted = run_row("cascade", cascaded, n_tiers, alone[-1], 0.0, 0.0, 0.0)["escalation_rate_by_tier"]
        rates = [r if r is not None else 0.0 for r in doubted]
        random_cascade = Cascade(
            models, rates, tools, scorer=[RandomScorer(seed + i) for i in range(n_tiers - 1)],
            escalate=config.escalate, on_fallback_error=config.on_fallback_error,
            fallback_timeout_s=config.fallback_timeout_s, **common,
        )
        randomised = await run_tasks(random_cascade, tasks, concurrency=concurrency, label="random router", progress=progress)

    # 4. Reference labels: the teacher's action at every state the student visited.
    references = None
    if reference_labels:
        references = await reference_actions(alone[0], models[-1], tools, concurrency=concurrency, progress=progress)
    return summarise_runs(tasks, config, [m.uri for m in models], alone, cascaded, randomised=randomised,
                          references=references, seed=seed, started=started)


def summarise_runs(
    tasks: Sequence[Task],
    config: CascadeConfig,
    uris: Sequence[str],
    alone: Sequence[Sequence[Trajectory]],
    cascaded: Sequence[Trajectory],
    *,
    randomised: Sequence[Trajectory] | None = None,
    references: Sequence[Sequence[dict[str, Any]]] | None = None,
    seed: int = 0,
    started: float | None = None,
) -> EvalResults:
    """The results from runs already made, in task order: each tier alone, the cascade, the random router.

    `uris` names the tiers' models; `references` are the teacher's actions at the student's states
    (`reference_actions`). Without `randomised` the random router has no run row (its curve is still
    simulated); without `references` there is no tool-call accuracy and no step-level scorer quality.
    `aevaluate` runs the models and calls this; `distillery demo` calls it over the runs it already has.
    """
    scorers = config.scorer_names()
    n_tiers = len(alone)
    runs = [[TierRun.from_trajectory(t) for t in tier_runs] for tier_runs in alone]
    student, teacher = alone[0], alone[-1]
    student_success = sum(r.success for r in runs[0]) / len(tasks)
    teacher_success = sum(r.success for r in runs[-1]) / len(tasks)
    teacher_cost = sum(r.cost_usd for r in runs[-1]) / len(tasks)

    rows = []
    student_row = run_row(f"student alone ({uris[0]})", student, 1, teacher, student_success, teacher_success,
                          teacher_cost, last_is_teacher=False)
    middle_rows = [run_row(f"tier {i + 1} alone ({uris[i]})", alone[i], 1, teacher, student_success, teacher_success,
                           teacher_cost, last_is_teacher=False) for i in range(1, n_tiers - 1)]
    teacher_row = run_row(f"teacher alone ({uris[-1]})", teacher, 1, teacher, student_success, teacher_success, teacher_cost)
    cascade_row = run_row("cascade (calibrated)", cascaded, n_tiers, teacher, student_success, teacher_success, teacher_cost)
    cascade_row["thresholds"] = config.thresholds
    cascade_row["escalate"] = config.escalate
    rows += [student_row, *middle_rows, teacher_row, cascade_row]
    if randomised is not None:
        random_row = run_row("random router (same escalation rate)", randomised, n_tiers, teacher,
                             student_success, teacher_success, teacher_cost)
        random_row["thresholds"] = [r if r is not None else 0.0 for r in cascade_row["escalation_rate_by_tier"]]
        rows.append(random_row)
    rows.append(oracle_row(runs, student_success, teacher_success, teacher_cost))

    # Tool-call accuracy and the scorer's quality; per-step confidences of every scored tier alone.
    scorer_report: dict[str, Any] = {}
    step_confidences = []
    for tier in range(n_tiers - 1):
        labelled = references is not None and tier == 0
        confidences, wrong = scored_step_labels(alone[tier], references if labelled else None)
        step_confidences.append({
            "tier": tier, "model": uris[tier], "scorer": scorers[tier], "confidence": confidences, "wrong": wrong,
            "labels": STEP_LABELS if labelled else "the step's task failed (no reference labels for this tier)",
        })
        if labelled:
            student_row["tool_call_accuracy"] = tool_call_accuracy(student, references)
            scorer_report["step_level"] = {**scorer_quality(confidences, wrong), "labels": STEP_LABELS}
    task_conf = [r.min_confidence for r in runs[0]]
    scorer_report["task_level"] = {**scorer_quality(task_conf, [not r.success for r in runs[0]]),
                                   "labels": "task failed; confidence = min step confidence"}
    scorer_report["scorer"] = scorers[0]

    # 5. The deferral curve over cached runs (tier 1 -> teacher), with the random and oracle routers.
    curve = deferral_curve(runs[0], runs[-1])
    points = [(p.teacher_fraction, p.success) for p in curve]
    fractions = sorted({0.0, 1.0, *[x for x, _ in points], *[i / 20 for i in range(21)]})
    random_curve = random_router_curve(student_success, teacher_success, fractions)
    oracle_curve = oracle_router_curve([r.success for r in runs[0]], [r.success for r in runs[-1]], fractions)
    routing = {
        "method": "task-level routing over cached single-tier runs (tier 1 -> last tier), min step confidence",
        "curve": [p.as_dict() for p in curve],
        "random_curve": random_curve,
        "oracle_curve": oracle_curve,
        "apgr": apgr(points, student_success, teacher_success),
        "apgr_random": apgr(random_curve, student_success, teacher_success),
        "apgr_oracle": apgr(oracle_curve, student_success, teacher_success),
        "cpt": {f"{round(level * 100)}%": cpt(points, level, student_success, teacher_success) for level in CPT_LEVELS},
        "cpt_random": {f"{round(level * 100)}%": cpt(random_curve, level, student_success, teacher_success) for level in CPT_LEVELS},
    }
    simulated_here = simulate(runs, config.thresholds)
    first_tier_doubts = cascade_row["escalation_rate_by_tier"][0] if n_tiers > 1 else None
    calibration = {
        "calibrated": config.calibration or None,
        "simulated_on_this_split": simulated_here.as_dict(),
        "realised": {"task_escalation_rate": cascade_row["task_escalation_rate"],
                     "step_escalation_rate": cascade_row["step_escalation_rate"],
                     "first_tier_doubt_rate": first_tier_doubts,
                     "success": cascade_row["success"]},
    }
    if config.calibration.get("predicted_task_escalation_rate") is not None:
        calibration["task_escalation_gap"] = cascade_row["task_escalation_rate"] - config.calibration["predicted_task_escalation_rate"]
    if config.calibration.get("predicted_step_escalation_rate") is not None and first_tier_doubts is not None:
        # The prediction is the share of the first tier's steps below its threshold, so it is
        # compared with the share of the first tier's proposals the cascade doubted.
        calibration["step_escalation_gap"] = first_tier_doubts - config.calibration["predicted_step_escalation_rate"]

    prices = {}
    for uri in uris:
        price = price_for(uri)
        prices[uri] = None if price is None else {"input": price.input, "output": price.output,
                                                  "stand_in_for": price.stand_in_for}
    results = {
        "kind": "distillery.eval",
        "meta": {
            "tiers": [t.model for t in config.tiers],
            "config": config.source,
            "n_tasks": len(tasks),
            "seed": seed,
            "prices_per_mtok": prices,
            "stand_in_prices": any(p and p["stand_in_for"] for p in prices.values()),
            # Any simulated part (a registered world's model or task) makes the whole result an
            # offline-world one: a student trained in the world and saved as `hf:runs/...`, or the
            # world's simulated tasks under a hosted teacher.
            "offline_world": any(registry.is_simulated(t.model) for t in config.tiers)
            or any(registry.is_simulated_task(task.id) for task in tasks),
            "wall_s": None if started is None else time.time() - started,
            "machine": f"{platform.machine()} {platform.system()}",
        },
        "rows": rows,
        "routing": routing,
        "scorer": scorer_report,
        "step_confidences": step_confidences,
        "calibration": calibration,
        "per_task": [
            {"task_id": task.id, **{f"tier{i}_success": runs[i][k].success for i in range(n_tiers)},
             "student_min_confidence": runs[0][k].min_confidence,
             "cascade_success": bool(cascaded[k].outcome and cascaded[k].outcome.success),
             "cascade_escalated_steps": sum(s.escalated for s in cascaded[k].steps),
             "tags": list(task.tags)}
            for k, task in enumerate(tasks)
        ],
    }
    return EvalResults(results, trajectories={cascade_row["name"]: list(cascaded), student_row["name"]: list(student)})


def evaluate(tasks: Sequence[Task], config: CascadeConfig, **options: Any) -> dict[str, Any]:
    """Blocking `aevaluate`."""
    return asyncio.run(aevaluate(tasks, config, **options))


# --------------------------------------------------------------------------------------------------
# Gates
# --------------------------------------------------------------------------------------------------


def cascade_row_of(results: dict[str, Any]) -> dict[str, Any]:
    return next(row for row in results["rows"] if row["name"].startswith("cascade"))


def check_gates(results: dict[str, Any], *, min_success: float | None = None, min_pgr: float | None = None,
                max_cost: float | None = None) -> list[str]:
    """Which CI gates the cascade misses (empty when all pass). `max_cost` is dollars per 1,000 tasks."""
    row = cascade_row_of(results)
    failures = []
    if min_success is not None and row["success"] < min_success:
        failures.append(f"success {row['success']:.3f} < --min-success {min_success}")
    if min_pgr is not None and (row["pgr"] is None or row["pgr"] < min_pgr):
        shown = "undefined (no gap between student and teacher)" if row["pgr"] is None else f"{row['pgr']:.3f}"
        failures.append(f"PGR {shown} < --min-pgr {min_pgr}")
    if max_cost is not None and row["cost_per_1k_usd"] > max_cost:
        failures.append(f"cost ${row['cost_per_1k_usd']:.4f}/1k tasks > --max-cost {max_cost}")
    return failures
