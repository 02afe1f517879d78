"""Seeded train/validation/test splits, stratified, that never split one task across splits.

The n teacher samples of one task are near-copies of each other; if some land in train and some
in test, the test score measures memorisation. So the unit that is assigned to a split is the
task (all examples with the same `task_id`), and strata are built from tasks.

Stratum of a task: with `stratify="tier"`, the first tag that starts with "tier" (e.g. "tier:2",
"tier=hard"); with `stratify="metadata:difficulty"`, the trajectory metadata value under that
key. Tasks without one form their own stratum. Within each stratum the tasks are shuffled with
`seed` and cut by the fractions, rounding so that the totals stay closest to the fractions.
"""

from __future__ import annotations

import random
from collections import defaultdict

from distillery.dataset.sources import Example
from distillery.errors import ConfigError

SPLIT_NAMES = ("train", "validation", "test")


def parse_fractions(text: str) -> tuple[float, ...]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); one to three fractions that sum to 1."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--split: {text!r} must be comma-separated fractions, e.g. 0.8,0.1,0.1") from None
    # Written so that NaN fails every test: NaN compares false with everything.
    if not 1 <= len(values) <= 3 or not all(0 <= v <= 1 for v in values) or not abs(sum(values) - 1.0) <= 1e-6:
        raise ConfigError(f"--split: {text!r} must be one to three non-negative fractions summing to 1")
    return values


def stratum_of(example: Example, stratify: str | None) -> str:
    if not stratify:
        return ""
    if stratify.startswith("metadata:"):
        key = stratify.partition(":")[2]
        return str(example.sample.metadata.get(key, ""))
    return next((tag for tag in example.sample.tags if tag.startswith(stratify)), "")


def split_examples(
    examples: list[Example], fractions: tuple[float, ...], *, seed: int = 0, stratify: str | None = None
) -> dict[str, list[Example]]:
    """Assign whole tasks to splits, per stratum; examples keep their input order within a split."""
    names = SPLIT_NAMES[: len(fractions)]
    tasks: dict[str, list[int]] = defaultdict(list)  # task id -> example indices
    for index, e in enumerate(examples):
        tasks[e.sample.task_id].append(index)
    strata: dict[str, list[str]] = defaultdict(list)
    for task_id, indices in tasks.items():
        strata[stratum_of(examples[indices[0]], stratify)].append(task_id)

    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for stratum in sorted(strata):
        task_ids = sorted(strata[stratum])
        rng.shuffle(task_ids)
        for name, count in zip(names, _counts(len(task_ids), fractions)):
            for task_id in task_ids[:count]:
                assignment[task_id] = name
            task_ids = task_ids[count:]
    out: dict[str, list[Example]] = {name: [] for name in names}
    for e in examples:
        out[assignment[e.sample.task_id]].append(e)
    return out


def _counts(total: int, fractions: tuple[float, ...]) -> list[int]:
    """Largest-remainder rounding: integer counts summing to `total`, closest to total * fractions."""
    exact = [total * f for f in fractions]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (exact[i] - counts[i], -i), reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts
