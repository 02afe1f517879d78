"""When a step escalates: the one rule the cascade, calibration, evaluation and cascade training share.

    should_escalate(0.41, 0.5)   # True: below the threshold, ask the next tier
    should_escalate(0.5, 0.5)    # False: exactly at the threshold is accepted
    should_escalate(None, 0.5)   # True: an unscored proposal is never trusted

To change when a cascade escalates, change this function: `Cascade.next_step` (the runtime and the
gateway), `TierRun.first_doubt` (calibration, certification, evaluation's simulated curves) and
cascade training all decide through it.
"""

from __future__ import annotations

from collections.abc import Sequence

from distillery.errors import ConfigError


def should_escalate(confidence: float | None, threshold: float) -> bool:
    """Whether a tier's proposal with this confidence goes to the next tier.

    Below the threshold escalates; exactly at it is accepted. An unscored proposal (None: no
    scorer on the tier) escalates whatever the threshold, 0 included: a tier that cannot say how
    sure it is is not trusted. A proposal whose scorer failed is scored 0 by the cascade, so it
    escalates at any threshold above 0.
    """
    return confidence is None or confidence < threshold


def check_thresholds(values: Sequence[float], where: str = "thresholds") -> list[float]:
    """The thresholds as floats; `ConfigError` for one outside [0, 1] (NaN and booleans included)."""
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}[{index}] = {value!r} is outside [0, 1]")
    return [float(v) for v in values]


def override_thresholds(given: Sequence[float], n_escalating: int) -> list[float]:
    """A caller's per-call thresholds, one per escalating tier; a single value applies to every tier."""
    values = list(given)
    if len(values) == 1:
        values = values * n_escalating
    if len(values) != n_escalating:
        raise ConfigError(f"threshold override has {len(given)} values; this cascade takes 1 or {n_escalating}")
    return check_thresholds(values)
