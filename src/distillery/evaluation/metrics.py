"""Routing metrics as pure functions: PGR, APGR, CPT, AUROC, ECE, percentiles.

Vocabulary (as RouteLLM uses it):
- PGR, performance gap recovered: `(r - r_student) / (r_teacher - r_student)`.
- APGR: the area under PGR against the fraction of teacher calls, over [0, 1].
- CPT(x): the smallest teacher-call fraction at which PGR reaches x.
A random router's PGR grows linearly with its teacher-call fraction, so its APGR is 0.5; the
oracle's APGR approaches 1.

Curves are lists of `(teacher_call_fraction, success_rate)` points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Curve = list[tuple[float, float]]


def pgr(success: float, student: float, teacher: float) -> float | None:
    """Performance gap recovered; None when the teacher is no better than the student (no gap)."""
    gap = teacher - student
    if gap <= 0:
        return None
    return (success - student) / gap


def _with_endpoints(curve: Curve, student: float, teacher: float) -> Curve:
    points = sorted(curve)
    if not points or points[0][0] > 0:
        points.insert(0, (0.0, student))
    if points[-1][0] < 1:
        points.append((1.0, teacher))
    return points


def apgr(curve: Curve, student: float, teacher: float) -> float | None:
    """Area under PGR(teacher-call fraction) over [0, 1], by the trapezoid rule.

    The curve is closed with (0, student) and (1, teacher) where it does not reach the ends.
    PGR is not clipped: a router that beats the teacher can exceed 1 at some points.
    """
    if pgr(teacher, student, teacher) is None:
        return None
    points = _with_endpoints(curve, student, teacher)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        area += (x1 - x0) * (pgr(y0, student, teacher) + pgr(y1, student, teacher)) / 2
    return area


def cpt(curve: Curve, target_pgr: float, student: float, teacher: float) -> float | None:
    """The smallest teacher-call fraction among the curve's points whose PGR is at least `target_pgr`.

    Only measured points count (no interpolation), so the figure is one the router really achieves.
    None when there is no gap or no point reaches the target.
    """
    if pgr(teacher, student, teacher) is None:
        return None
    reaching = [x for x, y in curve if pgr(y, student, teacher) >= target_pgr - 1e-12]
    return min(reaching) if reaching else None


def random_router_curve(student: float, teacher: float, fractions: Sequence[float]) -> Curve:
    """Expected success of a router that sends a random fraction of tasks to the teacher."""
    return [(f, (1 - f) * student + f * teacher) for f in fractions]


def oracle_router_curve(student_ok: Sequence[bool], teacher_ok: Sequence[bool], fractions: Sequence[float]) -> Curve:
    """The best any router can do at each teacher-call fraction, knowing every outcome in advance.

    It escalates first the tasks the student fails and the teacher solves; escalating anything else
    changes nothing (or hurts), so at fraction f it recovers min(f * n, helpful) tasks.
    """
    n = len(student_ok)
    if n == 0:
        return []
    base = sum(student_ok) / n
    helpful = sum(1 for s, t in zip(student_ok, teacher_ok) if not s and t)
    return [(f, base + min(f * n, helpful) / n) for f in fractions]


def auroc(confidences: Sequence[float], wrong: Sequence[bool]) -> float | None:
    """How well low confidence ranks wrong steps above right ones (0.5 = chance, 1 = perfect).

    None when all steps are right or all wrong (AUROC is undefined then).
    """
    if len(set(wrong)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([1 if w else 0 for w in wrong], [1.0 - c for c in confidences]))


def ece(confidences: Sequence[float], wrong: Sequence[bool], bins: int = 10) -> float | None:
    """Expected calibration error: the gap between confidence and accuracy, averaged over equal-width bins."""
    n = len(confidences)
    if n == 0:
        return None
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if (low <= c < high) or (b == bins - 1 and c == 1.0)]
        if not members:
            continue
        mean_confidence = sum(confidences[i] for i in members) / len(members)
        accuracy = sum(0 if wrong[i] else 1 for i in members) / len(members)
        total += len(members) / n * abs(mean_confidence - accuracy)
    return total


def scorer_quality(confidences: Sequence[float], wrong: Sequence[bool]) -> dict[str, float | int | None]:
    """AUROC and ECE of confidences against "this step was wrong", with the counts behind them."""
    return {
        "auroc": auroc(confidences, wrong),
        "ece": ece(confidences, wrong),
        "n": len(confidences),
        "wrong_rate": (sum(wrong) / len(wrong)) if wrong else None,
    }


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * p / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
