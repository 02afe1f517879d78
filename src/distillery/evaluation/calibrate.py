"""Choosing thresholds on a validation split, from cached runs, without further model calls.

Each tier is run *alone* on every validation task once (recording its per-step confidences, costs
and success; `evaluation/runs.py`); the teacher is the last tier. A setting of thresholds is then
evaluated by *task-level* routing over those cached runs (`evaluation/simulate.py`): a task starts at
tier 1 and moves to the next tier at its first step the cascade would escalate
(`routing.decision.should_escalate`: confidence below the tier's threshold, or unscored); the costs
of the steps spent before the hand-over are counted. This is exact for `escalate="restart"` (the
higher tier starts afresh from the query). For `"task"` (the higher tier continues the lower tier's
conversation) in a two-tier cascade, `acalibrate_cascade` also runs the teacher's take-over from
every step the student could first be doubted at (`runs.handover_runs`), which makes it exact too.
With more tiers, and for `"step"`, whose conversations change after each teacher step, it is an
approximation. The real cascade's figures therefore come from running it (`distillery eval`), which also
reports how far its realised escalation rate lands from the calibrated prediction.

Two ways to choose:
- `target`: the cheapest setting whose success is at least `target` x the teacher's success;
- `budget`: the most successful setting whose cost per task is at most `budget` dollars.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distillery.errors import ConfigError, DistilleryError
from distillery.evaluation.certify import certify
from distillery.evaluation.runs import (
    TierRun,
    attach_handovers,
    handover_runs,
    reference_actions,
    run_tiers_alone,
    step_wrong,
)
from distillery.evaluation.simulate import Simulated, sweep
from distillery.routing.confidence import LearnedScorer, get_scorer, step_features
from distillery.routing.config import load_tier_models
from distillery.trajectory import Trajectory

@dataclass
class Calibration:
    """The chosen thresholds, what they predict on validation, and the sweep behind the choice."""

    thresholds: list[float]
    mode: str  # "target" or "budget"
    goal: float
    met: bool
    chosen: Simulated
    teacher_success: float
    student_success: float
    teacher_cost_per_task: float
    curve: list[Simulated]

    def as_dict(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds,
            "mode": self.mode,
            "goal": self.goal,
            "met": self.met,
            "chosen": self.chosen.as_dict(),
            "teacher_success": self.teacher_success,
            "student_success": self.student_success,
            "teacher_cost_per_task": self.teacher_cost_per_task,
            "curve": [point.as_dict() for point in self.curve],
            "method": "task-level routing over cached single-tier runs on the validation split",
        }


def calibrate(
    runs: Sequence[Sequence[TierRun]],
    *,
    target: float | None = None,
    budget: float | None = None,
    candidates: Sequence[Sequence[float]] | None = None,
) -> Calibration:
    """Choose thresholds: the cheapest setting reaching `target` x teacher success, or the best within `budget`.

    `budget` is dollars per task. When no setting meets the goal, the closest one is returned with
    `met=False` (the most successful for a target, the cheapest for a budget) so the caller can say so.
    """
    if (target is None) == (budget is None):
        raise ConfigError("calibrate: give exactly one of target (fraction of teacher success) or budget ($/task)")
    if target is not None and not 0.0 < target <= 1.5:
        raise ConfigError(f"calibrate: target = {target} should be a fraction of the teacher's success, e.g. 0.98")
    if budget is not None and budget < 0:
        raise ConfigError(f"calibrate: budget = {budget} must not be negative")
    curve = sweep(runs, candidates)
    teacher = runs[-1]
    teacher_success = sum(r.success for r in teacher) / len(teacher)
    student_success = sum(r.success for r in runs[0]) / len(runs[0])
    teacher_cost = sum(r.cost_usd for r in teacher) / len(teacher)
    eps = 1e-12
    if target is not None:
        ok = [p for p in curve if p.success >= target * teacher_success - eps]
        # Cheapest first; among equals, the more successful, then the lower (less escalating) thresholds.
        key = lambda p: (p.cost_per_task, -p.success, p.thresholds)  # noqa: E731
        chosen = min(ok, key=key) if ok else max(curve, key=lambda p: (p.success, -p.cost_per_task))
        mode, goal = "target", target
    else:
        ok = [p for p in curve if p.cost_per_task <= budget + eps]
        chosen = max(ok, key=lambda p: (p.success, -p.cost_per_task)) if ok else min(curve, key=lambda p: p.cost_per_task)
        mode, goal = "budget", budget
    return Calibration(
        thresholds=chosen.thresholds, mode=mode, goal=goal, met=bool(ok), chosen=chosen,
        teacher_success=teacher_success, student_success=student_success, teacher_cost_per_task=teacher_cost,
        curve=curve,
    )


# --------------------------------------------------------------------------------------------------
# End to end: run the tiers on validation tasks, choose thresholds, return the config to write
# --------------------------------------------------------------------------------------------------


async def acalibrate_cascade(
    config: Any,
    tasks: Sequence[Any],
    *,
    tools: Any,
    target: float | None = None,
    budget_per_task: float | None = None,
    models: Sequence[Any] | None = None,
    fit_scorer: str | None = None,
    concurrency: int = 4,
    system: str | None = None,
    max_steps: int = 10,
    progress: Any = None,
    delta: float | None = None,
    absolute: bool = False,
) -> tuple[Any, Calibration, dict[str, Any]]:
    """Run every tier alone on `tasks`, choose thresholds, and return (new config, calibration, report).

    With `delta`, the thresholds are certified by Learn-then-Test (`distillery.evaluation.certify`):
    success on new tasks is at least `target` (x the teacher's, unless `absolute`) with probability
    at least 1 - delta; when nothing is certified, `NotCertified` says so and what target could be.
    Without it they are the point estimate on validation.

    With `fit_scorer` (a path), a learned scorer is first fitted for tier 1 on steps labelled by the
    teacher's action at the same state, saved there, and used for tier 1's confidences.
    """
    import copy

    if len(config.tiers) < 2:
        raise ConfigError(f"{config.source}: calibration needs at least two tiers")
    models = list(models) if models is not None else load_tier_models(config)
    scorers = config.scorer_names()
    alone = await run_tiers_alone(models, scorers, tasks, tools=tools, concurrency=concurrency, progress=progress,
                                  system=system, max_steps=max_steps)
    report: dict[str, Any] = {}
    failed_runs = _check_tiers_ran(config, alone)
    if any(failed_runs):
        report["failed_runs"] = {config.tiers[i].model: n for i, n in enumerate(failed_runs) if n}
    new_config = copy.deepcopy(config)
    if fit_scorer:
        student = alone[0]
        references = await reference_actions(student, models[-1], tools, concurrency=concurrency, progress=progress)
        rows, wrong = [], []
        for trajectory, refs in zip(student, references):
            for index, (step, ref) in enumerate(zip(trajectory.steps, refs)):
                label = step_wrong(trajectory, index, ref)
                if label is None or not step.logprobs:
                    continue
                try:
                    rows.append(step_features(step))
                except DistilleryError:
                    continue
                wrong.append(label)
        learned = LearnedScorer.fit(rows, wrong)
        learned.save(fit_scorer)
        scorer = get_scorer(f"learned:{fit_scorer}")
        for trajectory in student:  # re-score the cached steps with the fitted scorer: no model calls
            for step in trajectory.steps:
                step.confidence = scorer(step, tools=tools.specs)  # [] offered: any call is invalid
        new_config.tiers[0].scorer = f"learned:{fit_scorer}"
        report["learned_scorer"] = {"path": fit_scorer, "n_steps": len(rows), "wrong_rate": sum(wrong) / len(wrong)}
    runs = [[TierRun.from_trajectory(t) for t in tier_runs] for tier_runs in alone]
    simulation = "task-level routing over cached single-tier runs"
    if config.escalate == "task" and len(config.tiers) == 2:
        # The teacher continues the student's conversation: replay each possible take-over once,
        # so the simulation is exact for this mode too (a restart would overstate success and cost).
        taken = await handover_runs(alone[0], models[-1], tasks, tools=tools, concurrency=concurrency,
                                    progress=progress, system=system, max_steps=max_steps)
        report["handover_runs"] = attach_handovers(runs[0], taken)
        simulation += ", with the teacher's take-over from each step the student could first be doubted at"
    result = calibrate(runs, target=target if not absolute else 1.0, budget=budget_per_task)
    certificate = None
    if delta is not None:
        if target is None:
            raise ConfigError("--delta certifies a --target; a --budget is a point estimate")
        certificate = certify(runs, target=target, delta=delta, relative=not absolute)
        report["certification"] = certificate.as_dict()
        if not certificate.certified:
            raise NotCertified(certificate, report)
        result = dataclasses.replace(result, thresholds=certificate.thresholds, chosen=certificate.chosen, met=True,
                                     goal=target)
    for tier, threshold in zip(new_config.tiers, result.thresholds):
        tier.threshold = round(threshold, 6)
    new_config.calibration = {
        "method": "point-estimate" if certificate is None else "learn-then-test",
        **({} if certificate is None else {"delta": delta, "relative": not absolute,
                                          "guarantee": certificate.guarantee, "p_value": certificate.p_value}),
        "mode": result.mode,
        "goal": result.goal,
        "met": result.met,
        "n_tasks": len(tasks),
        "predicted_success": result.chosen.success,
        "teacher_success": result.teacher_success,
        "student_success": result.student_success,
        "predicted_cost_per_1k_usd": result.chosen.cost_per_task * 1000,
        "teacher_cost_per_1k_usd": result.teacher_cost_per_task * 1000,
        "predicted_task_escalation_rate": result.chosen.teacher_fraction,
        "predicted_step_escalation_rate": result.chosen.step_escalation_rate,
        "simulation": simulation,
    }
    new_config.validate()
    report.update(result.as_dict())
    return new_config, result, report


class TierFailed(DistilleryError):
    """Every validation run of a tier failed (unreachable server, no API key): there is nothing to calibrate on."""


def _check_tiers_ran(config: Any, alone: Sequence[Sequence[Trajectory]]) -> list[int]:
    """How many runs of each tier failed (status error); `TierFailed` when all of one tier's did.

    A tier whose every run failed would be simulated as a tier that never succeeds (a teacher that
    fails everywhere makes any target "met"), so no thresholds are chosen and no config is written.
    """
    failed = [[t for t in runs if t.status == "error"] for runs in alone]
    for index, (tier_runs, tier_failed) in enumerate(zip(alone, failed)):
        if tier_runs and len(tier_failed) == len(tier_runs):
            first = next((t.error for t in tier_failed if t.error), None) or "(no error message)"
            first = " ".join(first.split())  # one line
            first = first if len(first) <= 300 else first[:297] + "..."
            raise TierFailed(
                f"{config.source}: tiers[{index}] ({config.tiers[index].model}) failed on all {len(tier_runs)} of "
                f"{len(tier_runs)} validation tasks; first error: {first}. No thresholds were chosen and the config "
                "was not changed"
            )
    return [len(f) for f in failed]


class NotCertified(ConfigError):
    """No setting of thresholds is certified for the target on these validation tasks."""

    def __init__(self, certificate: Any, report: dict[str, Any]):
        goal = (f"{certificate.target:g} x the teacher's success" if certificate.relative
                else f"an absolute success of {certificate.target:.1%}")
        super().__init__(
            f"no thresholds are certified for {goal} at delta {certificate.delta:g} on {certificate.n_tasks} validation "
            f"tasks; the best certifiable target is {certificate.best_certifiable_target:g}. Use more validation tasks, "
            "a lower --target or a larger --delta (the config was not changed)"
        )
        self.certificate = certificate
        self.report = report


def calibrate_cascade(config: Any, tasks: Sequence[Any], **options: Any) -> tuple[Any, Calibration, dict[str, Any]]:
    """Blocking `acalibrate_cascade`."""
    import asyncio

    return asyncio.run(acalibrate_cascade(config, tasks, **options))
