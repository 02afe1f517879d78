"""Learn-then-Test thresholds: a known p-value, the infeasible case, and coverage by simulation."""

from __future__ import annotations

import random

import pytest

from distillery.errors import ConfigError
from distillery.evaluation.calibrate import calibrate
from distillery.evaluation.certify import certify
from distillery.evaluation.runs import TierRun


def run(task: int, success: bool, confidence: float, cost: float) -> TierRun:
    return TierRun(task_id=f"t{task}", success=success, cost_usd=cost, latency_s=0.1,
                   step_confidences=[confidence], step_costs=[cost], step_latencies=[0.1])


def two_tiers(pairs, teacher_success=None):
    """(student success, student confidence) per task; the teacher succeeds everywhere unless told."""
    student = [run(i, s, c, 0.0) for i, (s, c) in enumerate(pairs)]
    teacher_success = teacher_success or [True] * len(pairs)
    teacher = [run(i, s, 1.0, 1.0) for i, s in enumerate(teacher_success)]
    return [student, teacher]


def test_a_perfect_validation_set_has_the_textbook_p_value():
    # Every task succeeds whatever the threshold: the risk is 0 and the binary Bentkus p-value of
    # "absolute success < 0.95" is P(Binomial(100, 0.05) <= 0) = 0.95^100.
    runs = two_tiers([(True, 0.9)] * 100)
    result = certify(runs, target=0.95, delta=0.1, relative=False)
    assert result.certified and result.thresholds == [0.0]  # never escalating is certified and cheapest
    assert result.p_value == pytest.approx(0.95 ** 100, rel=1e-9)
    assert "with probability >= 0.9 over the 100 validation tasks" in result.guarantee


def test_certified_thresholds_escalate_what_the_student_gets_wrong():
    # Wrong answers come with low confidence: a threshold between 0.2 and 0.9 keeps every task right.
    pairs = [(True, 0.95)] * 300 + [(False, 0.2)] * 100
    result = certify(two_tiers(pairs), target=0.98, delta=0.05)
    assert result.certified
    assert 0.2 < result.thresholds[0] <= 0.95
    assert result.chosen.success == 1.0 and result.chosen.teacher_fraction == pytest.approx(0.25)
    assert result.fwer == "fixed_sequence" and result.n_certified >= 1


def test_too_few_tasks_certify_nothing_and_say_what_could_be():
    pairs = [(True, 0.95)] * 15 + [(False, 0.2)] * 5
    result = certify(two_tiers(pairs), target=0.99, delta=0.05)
    assert not result.certified and result.thresholds is None and result.guarantee
    assert 0.0 < result.best_certifiable_target < 0.99
    # The reported target is really certifiable.
    assert certify(two_tiers(pairs), target=result.best_certifiable_target, delta=0.05).certified
    with pytest.raises(ConfigError, match="--delta must be in"):
        certify(two_tiers(pairs), target=0.9, delta=0.0)


def test_three_tiers_use_bonferroni_over_the_grid():
    student = [run(i, i % 4 != 0, 0.9 if i % 4 else 0.1, 0.0) for i in range(200)]
    middle = [run(i, True, 0.9, 0.1) for i in range(200)]
    teacher = [run(i, True, 1.0, 1.0) for i in range(200)]
    result = certify([student, middle, teacher], target=0.95, delta=0.1)
    assert result.fwer == "bonferroni" and result.certified
    assert result.chosen.cost_per_task < 1.0  # the teacher is not needed for everything


def draw(rng: random.Random, n: int):
    """Tasks from a known population: confidence c ~ U(0,1); the student is right with probability c;
    the teacher is right with probability 0.97."""
    pairs, teacher = [], []
    for _ in range(n):
        c = rng.random()
        pairs.append((rng.random() < c, c))
        teacher.append(rng.random() < 0.97)
    return pairs, teacher


def true_relative_success(threshold: float) -> float:
    # Tasks with c >= threshold stay with the student (success c), the rest go to the teacher (0.97).
    student = (1 - threshold ** 2) / 2  # integral of c over [threshold, 1]
    return (student + threshold * 0.97) / 0.97


def test_the_guarantee_holds_on_new_draws_and_the_point_estimate_does_not():
    rng = random.Random(0)
    target, delta, trials = 0.95, 0.1, 60
    certified_misses = point_misses = certified_runs = 0
    for _ in range(trials):
        pairs, teacher = draw(rng, 300)
        runs = two_tiers(pairs, teacher)
        result = certify(runs, target=target, delta=delta)
        if result.certified:
            certified_runs += 1
            certified_misses += true_relative_success(result.thresholds[0]) < target
        point = calibrate(runs, target=target)
        point_misses += true_relative_success(point.thresholds[0]) < target
    assert certified_runs >= trials * 0.8
    assert certified_misses / trials <= delta  # at most delta of validation draws mislead it
    assert point_misses / trials > 0.2  # the point estimate misses far more often
