"""Threshold calibration on synthetic cached runs: targets, budgets, multi-tier, honest cost."""

import random

import pytest

from distillery.errors import ConfigError
from distillery.evaluation.calibrate import calibrate
from distillery.evaluation.runs import TierRun
from distillery.evaluation.simulate import candidate_thresholds, deferral_curve, simulate


def synthetic(n=200, seed=0):
    """Student right on 60% of tasks, confident when right; teacher right on 95%, always 10x dearer."""
    rng = random.Random(seed)
    student, teacher = [], []
    for i in range(n):
        right = rng.random() < 0.6
        # Confidence separates right from wrong imperfectly: right ~ U(0.4, 1), wrong ~ U(0, 0.6).
        confidences = [rng.uniform(0.4, 1.0) if right else rng.uniform(0.0, 0.6), rng.uniform(0.7, 1.0)]
        student.append(TierRun(f"t{i}", right, 0.002, 0.1, confidences, [0.001, 0.001], [0.05, 0.05]))
        teacher.append(TierRun(f"t{i}", rng.random() < 0.95, 0.02, 1.0, [None, None], [0.01, 0.01], [0.5, 0.5]))
    return student, teacher


def test_simulate_counts_costs_before_the_handover():
    student = [TierRun("a", False, 0.003, 0.3, [0.9, 0.2, 0.9], [0.001] * 3, [0.1] * 3),
               TierRun("b", True, 0.003, 0.3, [0.9, 0.9, 0.9], [0.001] * 3, [0.1] * 3)]
    teacher = [TierRun("a", True, 0.05, 2.0), TierRun("b", True, 0.05, 2.0)]
    result = simulate([student, teacher], [0.5])
    assert result.success == 1.0 and result.reached == [1.0, 0.5]
    # Task a: two student steps (0.002) then the teacher (0.05); task b: the student alone (0.003).
    assert result.cost_per_task == pytest.approx((0.002 + 0.05 + 0.003) / 2)
    assert result.step_escalation_rate == pytest.approx(1 / 6)
    assert result.latencies == [pytest.approx(0.2 + 2.0), pytest.approx(0.3)]
    # Exactly at the threshold: not escalated.
    assert simulate([student, teacher], [0.2]).reached == [1.0, 0.0]


def test_target_mode_reaches_the_target_cheapest():
    student, teacher = synthetic()
    cal = calibrate([student, teacher], target=0.98)
    assert cal.met and cal.chosen.success >= 0.98 * cal.teacher_success
    # No cheaper setting on the sweep reaches the target.
    cheaper = [p for p in cal.curve if p.cost_per_task < cal.chosen.cost_per_task - 1e-12]
    assert all(p.success < 0.98 * cal.teacher_success for p in cheaper)
    # And it is a real saving over teacher-only.
    assert cal.chosen.cost_per_task < cal.teacher_cost_per_task


def test_budget_mode_best_success_within_budget():
    student, teacher = synthetic()
    cal = calibrate([student, teacher], budget=0.01)
    assert cal.met and cal.chosen.cost_per_task <= 0.01
    assert cal.chosen.success == max(p.success for p in cal.curve if p.cost_per_task <= 0.01)


def test_unreachable_goals_are_reported_not_faked():
    student, teacher = synthetic()
    assert calibrate([student, teacher], target=1.2).met is False
    low = calibrate([student, teacher], budget=0.0001)
    assert low.met is False and low.chosen.thresholds == [0.0]


def test_three_tiers_grid():
    student, teacher = synthetic()
    rng = random.Random(1)
    middle = [TierRun(r.task_id, r.success or rng.random() < 0.5, 0.006, 0.3, [rng.uniform(0.3, 1.0)], [0.006], [0.3])
              for r in student]
    cal = calibrate([student, middle, teacher], target=0.95)
    assert len(cal.thresholds) == 2 and cal.met
    assert cal.chosen.reached[0] == 1.0 and cal.chosen.reached[1] >= cal.chosen.reached[2]


def test_candidates_and_curve_shape():
    student, teacher = synthetic(n=30)
    candidates = candidate_thresholds(student)
    assert candidates[0] == 0.0 and candidates[-1] == 1.0 and candidates == sorted(candidates)
    curve = deferral_curve(student, teacher)
    assert curve[0].teacher_fraction == 0.0 and curve[-1].teacher_fraction == 1.0


def test_bad_inputs():
    student, teacher = synthetic(n=5)
    with pytest.raises(ConfigError, match="exactly one"):
        calibrate([student, teacher])
    with pytest.raises(ConfigError, match="same tasks"):
        simulate([student, list(reversed(teacher))], [0.5])
