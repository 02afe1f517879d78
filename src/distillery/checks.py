"""Value checks shared by the command line and the Python API, so both refuse a value in the same words.

Each returns why a value is refused, or None when it is fine. `commands/options.py` turns the reason
into a usage error at parse time; `distill/config.py` turns it into a `ValueError` that names the field.

    >>> out_of_range(1.5, 0, 1)
    'must be in [0, 1], got 1.5'
    >>> not_a_choice("kl", ("forward_kl", "jsd"))
    "'kl' is not one of forward_kl, jsd"
"""

from __future__ import annotations

import math
from typing import Sequence

MAX_SEED = 2**32 - 1  # numpy's legacy seeding and every RNG we hand a seed to accept this range


def _fmt(x: float | int) -> str:
    """Integers in full (a port, a seed bound), other numbers short."""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e16):
        text = str(int(x))
        return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"
    return f"{x:g}"


def _describe(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_fmt(low)}"
    return f"{'<' if high_open else '<='} {_fmt(high)}"


def out_of_range(value: float | int, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> str | None:
    """Why `value` is not a finite number within the bounds (open ends where asked), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        return f"must be {_describe(low, high, low_open, high_open)}, got {_fmt(value)}"
    return None


def not_a_choice(value: str, choices: Sequence[str]) -> str | None:
    """Why `value` is not one of `choices`, or None."""
    if value not in choices:
        return f"{value!r} is not one of {', '.join(choices)}"
    return None
