"""Thresholds with a finite-sample guarantee: Learn-then-Test over cached validation runs.

A point estimate (`calibrate.calibrate`) picks the cheapest thresholds whose *validation* success
reaches the target; on new tasks that target is then missed about half the time. Learn-then-Test
(Angelopoulos, Bates et al. 2021) instead treats each candidate setting of thresholds as a
hypothesis "this setting misses the target", tests it with a valid p-value on the validation
tasks, and keeps only settings rejected under family-wise error control at level delta. Then:

    with probability at least 1 - delta over the draw of the validation tasks, every certified
    setting reaches the target on new tasks from the same distribution,

and the cheapest certified setting is chosen. The target is on success, absolute (`success >= t`)
or relative to the teacher (`success >= t x teacher success`). Per task i, with S its cascade
success and T the teacher's (0 or 1):

- absolute: the loss is 1 - S, the hypothesis "E[1 - S] > 1 - t";
- relative: the loss is L = 1[T = 1 and S = 0], a task the teacher solves and the cascade loses.
  Since S >= T - L on every task, E[S] >= E[T] - E[L], so E[L] <= (1 - t) E[T] is enough. E[T]
  is replaced by its Clopper-Pearson lower bound at level delta/2, and the tests run at delta/2:
  by the union bound both hold together with probability at least 1 - delta.

Both losses are binary, so the p-values are the binary-tight Hoeffding-Bentkus ones; the error control is
fixed-sequence testing along a path fixed before looking at the data (escalate the most first)
for one escalating tier, Bonferroni over the grid for several; both from MAPIE. The candidate
thresholds are a fixed grid, not the observed confidences, so the hypotheses do not depend on
the data. What it assumes: validation and new tasks are exchangeable draws of one distribution,
and the tiers behave as they did when the runs were cached.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distillery.errors import ConfigError
from distillery.evaluation.runs import TierRun
from distillery.evaluation.simulate import Simulated, simulate

PROCEDURE = "learn-then-test"
# Data-independent candidates: a linear grid plus the region near 1, where logprob confidences of a
# well-trained student crowd.
GRID = sorted({round(i / 50, 4) for i in range(51)} | {0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999})
COARSE_GRID = sorted({round(i / 20, 4) for i in range(21)} | {0.99, 0.999})  # per tier, with several tiers


@dataclass
class Certification:
    """The outcome of Learn-then-Test on one validation set."""

    target: float
    relative: bool
    delta: float
    n_tasks: int
    certified: bool
    thresholds: list[float] | None  # the cheapest certified setting; None when none is certified
    chosen: Simulated | None
    p_value: float | None  # of the chosen setting
    n_certified: int
    n_candidates: int
    fwer: str  # "fixed_sequence" or "bonferroni"
    best_certifiable_target: float  # the highest target some setting is certified for at this delta
    settings: list[Simulated] = field(default_factory=list, repr=False)

    @property
    def guarantee(self) -> str:
        goal = f"at least {self.target:g} x the teacher's success" if self.relative else f"at least {self.target:.1%}"
        return (f"with probability >= {1 - self.delta:g} over the {self.n_tasks} validation tasks, success on new tasks "
                f"from the same distribution is {goal} (Learn-then-Test: binary Hoeffding-Bentkus p-values, {self.fwer} "
                "FWER control" + (", a Clopper-Pearson bound on the teacher's success" if self.relative else "") + ")")

    def as_dict(self) -> dict[str, Any]:
        return {
            "procedure": PROCEDURE,
            "target": self.target,
            "relative": self.relative,
            "delta": self.delta,
            "n_tasks": self.n_tasks,
            "certified": self.certified,
            "thresholds": self.thresholds,
            "p_value": self.p_value,
            "n_certified": self.n_certified,
            "n_candidates": self.n_candidates,
            "fwer": self.fwer,
            "best_certifiable_target": self.best_certifiable_target,
            "guarantee": self.guarantee if self.certified else None,
        }


def losses(point: Simulated, teacher: Sequence[TierRun], relative: bool) -> np.ndarray:
    """Per-task binary losses: 1 - S (absolute), or 1[T = 1 and S = 0] (relative to the teacher)."""
    success = np.array(point.task_success, dtype=bool)
    if not relative:
        return (~success).astype(float)
    teacher_success = np.array([run.success for run in teacher], dtype=bool)
    return (teacher_success & ~success).astype(float)


def teacher_lower_bound(teacher: Sequence[TierRun], level: float) -> float:
    """One-sided Clopper-Pearson lower bound on the teacher's success rate, at error `level`."""
    from scipy.stats import beta

    k, n = sum(run.success for run in teacher), len(teacher)
    return float(beta.ppf(level, k, n - k + 1)) if k > 0 else 0.0


def risk_bound(teacher: Sequence[TierRun], target: float, relative: bool, delta: float) -> tuple[float, float]:
    """(the bound the mean loss must stay under, the level left for the tests)."""
    if not relative:
        return 1.0 - target, delta
    return (1.0 - target) * teacher_lower_bound(teacher, delta / 2), delta / 2


def p_values(settings: Sequence[Simulated], teacher: Sequence[TierRun], bound: float, relative: bool) -> np.ndarray:
    """Hoeffding-Bentkus p-values of "this setting's mean loss exceeds `bound`", one per setting."""
    from mapie.risk_control.methods import compute_hoeffding_bentkus_p_value

    if bound <= 0:
        return np.ones(len(settings))
    risks = np.array([losses(point, teacher, relative).mean() for point in settings])
    return compute_hoeffding_bentkus_p_value(risks, len(teacher), bound, binary=True)[:, 0]


def candidate_settings(n_escalating: int) -> tuple[list[list[float]], str]:
    """The fixed candidate settings, in testing order, and the FWER procedure that fits them."""
    if n_escalating == 1:
        # Fixed sequence from the most escalating threshold down: the test path is set in advance.
        return [[t] for t in sorted(GRID, reverse=True)], "fixed_sequence"
    return [list(s) for s in itertools.product(sorted(COARSE_GRID, reverse=True), repeat=n_escalating)], "bonferroni"


def _rejected(settings: list[Simulated], teacher: Sequence[TierRun], target: float, relative: bool, delta: float,
              fwer: str) -> tuple[np.ndarray, np.ndarray]:
    from mapie.risk_control import control_fwer

    bound, level = risk_bound(teacher, target, relative, delta)
    values = p_values(settings, teacher, bound, relative)
    return np.asarray(control_fwer(values, level, fwer), dtype=int), values


def certify(runs: Sequence[Sequence[TierRun]], *, target: float, delta: float, relative: bool = True) -> Certification:
    """Learn-then-Test over cached single-tier runs (one list per tier, teacher last, same tasks)."""
    if not 0 < delta < 1:
        raise ConfigError(f"--delta must be in (0, 1), got {delta}")
    if relative and not 0 < target <= 1:
        raise ConfigError(f"a certified target relative to the teacher must be in (0, 1], got {target}")
    if not relative and not 0 < target < 1:
        raise ConfigError(f"a certified absolute target must be in (0, 1), got {target}")
    grid, fwer = candidate_settings(len(runs) - 1)
    settings = [simulate(runs, thresholds) for thresholds in grid]
    teacher = runs[-1]
    rejected, values = _rejected(settings, teacher, target, relative, delta, fwer)
    # The cheapest certified setting; among equals, the fewest escalations, then the lowest thresholds.
    key = lambda i: (settings[i].cost_per_task, settings[i].teacher_fraction, -settings[i].success,  # noqa: E731
                     settings[i].thresholds)
    chosen_index = min(rejected, key=key) if len(rejected) else None
    return Certification(
        target=target, relative=relative, delta=delta, n_tasks=len(teacher), certified=chosen_index is not None,
        thresholds=settings[chosen_index].thresholds if chosen_index is not None else None,
        chosen=settings[chosen_index] if chosen_index is not None else None,
        p_value=float(values[chosen_index]) if chosen_index is not None else None,
        n_certified=len(rejected), n_candidates=len(settings), fwer=fwer,
        best_certifiable_target=best_certifiable_target(settings, teacher, relative, delta, fwer, upper=target),
        settings=settings,
    )


def best_certifiable_target(settings: list[Simulated], teacher: Sequence[TierRun], relative: bool, delta: float,
                            fwer: str, *, upper: float = 1.0, steps: int = 30) -> float:
    """The highest target up to `upper` for which some setting is certified (bisection; 0 if none)."""
    low, high = 0.0, upper
    if len(_rejected(settings, teacher, high, relative, delta, fwer)[0]):
        return upper
    for _ in range(steps):
        middle = (low + high) / 2
        if middle <= 0:
            break
        if len(_rejected(settings, teacher, middle, relative, delta, fwer)[0]):
            low = middle
        else:
            high = middle
    return math.floor(low * 10_000) / 10_000  # rounded down: the reported target stays certifiable
