"""Routing simulated over cached runs: what a setting of thresholds would do, without model calls.

    point = simulate(runs, [0.62])          # runs[tier][task]: `TierRun`s, the teacher last
    curve = deferral_curve(runs[0], runs[-1])

Task-level routing: a task starts at tier 1 and moves to the next tier at its first step the
cascade would escalate (`TierRun.first_doubt`, which decides by `routing.decision.should_escalate`);
the costs and latencies of the steps spent before the hand-over are counted. This is exact for
`escalate="restart"`. For `"task"` it is exact when the runs carry the last tier's take-overs
(`TierRun.handovers`, from `runs.handover_runs`): a task doubted at step k then continues with the
teacher's run from the lower tier's steps 0..k-1. Without them, and for `"step"`, a hand-over is
approximated by the teacher's own run (see `evaluation/calibrate.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from distillery.errors import ConfigError
from distillery.evaluation.runs import TierRun
from distillery.routing.decision import should_escalate

MAX_CANDIDATES_PER_TIER = 41


@dataclass
class Simulated:
    """Task-level routing over cached runs at one setting of thresholds."""

    thresholds: list[float]
    success: float
    cost_per_task: float
    reached: list[float]  # fraction of tasks that reached each tier (reached[0] == 1)
    step_escalation_rate: float  # fraction of tier-1 steps below its threshold (a proxy for step routing)
    latencies: list[float] = field(default_factory=list, repr=False)
    task_success: list[bool] = field(default_factory=list, repr=False)  # per task, in order (for certification)

    @property
    def teacher_fraction(self) -> float:
        return self.reached[-1]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latencies")
        data.pop("task_success")
        data["teacher_fraction"] = self.teacher_fraction
        return data


def _check_aligned(runs: Sequence[Sequence[TierRun]]) -> None:
    if len(runs) < 2:
        raise ConfigError("calibration needs at least two tiers (a student and the teacher)")
    ids = [r.task_id for r in runs[0]]
    for index, tier_runs in enumerate(runs[1:], start=1):
        if [r.task_id for r in tier_runs] != ids:
            raise ConfigError(f"calibration: tier {index}'s runs are not for the same tasks, in the same order, as tier 0's")


def simulate(runs: Sequence[Sequence[TierRun]], thresholds: Sequence[float]) -> Simulated:
    """Route every task through the tiers at `thresholds` (one per tier but the last)."""
    _check_aligned(runs)
    n_tiers, n_tasks = len(runs), len(runs[0])
    if len(thresholds) != n_tiers - 1:
        raise ConfigError(f"simulate: {n_tiers} tiers need {n_tiers - 1} thresholds, got {len(thresholds)}")
    successes, cost, reached = 0, 0.0, [0] * n_tiers
    latencies, task_success = [], []
    for task in range(n_tasks):
        task_latency = 0.0
        taken_over: TierRun | None = None
        for tier in range(n_tiers):
            run = taken_over or runs[tier][task]
            reached[tier] += 1
            doubt = run.first_doubt(thresholds[tier]) if tier < n_tiers - 1 else None
            if doubt is None:
                successes += run.success
                task_success.append(run.success)
                cost += run.cost_usd
                task_latency += run.latency_s
                break
            cost += sum(run.step_costs[: doubt + 1])
            task_latency += sum(run.step_latencies[: doubt + 1])
            # Only a hand-over to the last tier has recorded take-overs (which it never escalates).
            taken_over = run.handovers.get(doubt) if tier + 1 == n_tiers - 1 else None
        latencies.append(task_latency)
    student_steps = [c for run in runs[0] for c in run.step_confidences]
    below = sum(should_escalate(c, thresholds[0]) for c in student_steps)
    return Simulated(
        thresholds=list(thresholds),
        success=successes / n_tasks if n_tasks else 0.0,
        cost_per_task=cost / n_tasks if n_tasks else 0.0,
        reached=[r / n_tasks if n_tasks else 0.0 for r in reached],
        step_escalation_rate=below / len(student_steps) if student_steps else 0.0,
        latencies=latencies,
        task_success=task_success,
    )


def candidate_thresholds(tier_runs: Sequence[TierRun], limit: int = MAX_CANDIDATES_PER_TIER) -> list[float]:
    """Thresholds worth trying for one tier: midway between consecutive distinct task-min confidences.

    Midpoints (rather than the observed values) keep a little margin on both sides, so a test task
    with nearly the same confidence is routed the same way. 0 (never escalate) and 1 (escalate all
    but perfect confidence) close the range. Thinned to `limit` evenly spaced candidates.
    """
    values = sorted({round(run.min_confidence, 12) for run in tier_runs})
    middles = [(a + b) / 2 for a, b in zip(values, values[1:])]
    candidates = sorted({0.0, *middles, 1.0})
    if len(candidates) > limit:
        step = (len(candidates) - 1) / (limit - 1)
        candidates = sorted({candidates[round(i * step)] for i in range(limit)})
    return candidates


def sweep(runs: Sequence[Sequence[TierRun]], candidates: Sequence[Sequence[float]] | None = None) -> list[Simulated]:
    """Every combination of candidate thresholds (one list per tier but the last)."""
    _check_aligned(runs)
    if candidates is None:
        candidates = [candidate_thresholds(tier_runs) for tier_runs in runs[:-1]]
    return [simulate(runs, list(setting)) for setting in itertools.product(*candidates)]


def deferral_curve(student: Sequence[TierRun], teacher: Sequence[TierRun]) -> list[Simulated]:
    """Two-tier task-level routing at every candidate threshold, ordered by teacher-call fraction."""
    points = sweep([student, teacher])
    return sorted(points, key=lambda p: (p.teacher_fraction, p.thresholds))
