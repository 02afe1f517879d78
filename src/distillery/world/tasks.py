"""Seeded tasks over the shop, in four tiers, with fixed train/validation/test splits.

This module draws and words tasks (`generate_tasks`, `make_task`); the table of task families it
draws from is `world/families.py`, and the split of a task key is computed in `world/db.py`
(`canonical_key`, `split_of`), kept apart so no module grows past 500 lines. Their public names
are re-exported here, the import path callers use.

Tiers: `none` (answer directly or decline, no tool), `easy` (one call), `medium` (two or three
dependent calls) and `hard` (four calls, or multi-hop: a later argument comes from an earlier
result). Each family samples entities from one split, words the query through one of several
templates, and knows the expected answer, computed straight from the database and the tool
functions. Answers are judged by the strict checkers of `distillery.checkers` (`money`, `count`,
`quantity`, `date`, `status`, `not_found`, `mentions`, `refusal`), all registered built-ins, so a
task file written by `distillery world generate` loads anywhere with `load_tasks`.

**Splits are fixed by entity.** Every product, order, unknown-product name and calendar day
belongs to one split in the database (`world/db.py`), and a split's tasks are drawn only from its
own entities. Tasks without an entity are keyed by a canonical key (numbers normalised: 266 and
266.0 are one key): a unit conversion belongs to the split whose product or order weight it
converts, if any, else to the split its key hashes to; a date question belongs to the split of
its start date; greetings and out-of-scope requests hash. So no test product, order or fact ever
appears in a train query or in a tool result a train task produces, whatever seeds either side uses.

Roles (docs/world.md): train to train on; validation for calibration and every design decision;
test only for published figures. Validation and test are drawn alike (same sizes, same mix).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from distillery.errors import ConfigError
from distillery.tasks import Task
from distillery.world import SYSTEM_PROMPT
from distillery.world.db import (  # noqa: F401  (re-exported: the public import path)
    CITIES,
    SPLITS,
    canonical_key,
    canonical_number,
    get_db,
    split_of,
    stable_hash,
)
from distillery.world.families import (  # noqa: F401  (re-exported: the public import path)
    CAPABILITY_QUESTIONS,
    CONVERSIONS,
    DECLINE_TOPICS,
    FAMILIES,
    GREETINGS,
    SHIFT_DAYS,
    SHIP_DAYS,
    UNIT_SYMBOLS,
    UNIT_WORDS,
    Family,
    _p,
    unit_symbol,
)

Split = Literal["train", "validation", "test"]
TIERS: tuple[str, ...] = ("none", "easy", "medium", "hard")
# How often each tier is drawn. The same mix in every split, so split figures are comparable.
TIER_WEIGHTS = {"none": 0.1, "easy": 0.3, "medium": 0.3, "hard": 0.3}
NUMERIC_TOLERANCE = 1e-3  # kept for callers of the lenient `numeric` checker; world tasks use strict checkers


def _render_query(family: Family, entities: dict[str, Any], rng: random.Random) -> str:
    template = rng.choice(family.templates)
    fields: dict[str, Any] = dict(entities)
    if "product" in entities and family.name != "missing_product":
        fields["sku"] = _p(entities).sku
    if family.name == "convert":
        fields["from_word"] = rng.choice(UNIT_WORDS[entities["from_unit"]])
        fields["to_word"] = rng.choice(UNIT_WORDS[entities["to_unit"]])
    if family.name == "date_shift":
        fields["abs_days"] = abs(entities["days"])
        fields["direction"] = "after" if entities["days"] > 0 else "before"
    if family.name == "decline":
        fields["topic_text"] = DECLINE_TOPICS[entities["topic"]].format(city=entities["city"])
    if family.name == "smalltalk":
        fields["greeting_text"] = GREETINGS[entities["greeting"]]
        fields["question_text"] = CAPABILITY_QUESTIONS[entities["question"]]
    return template.format(**fields)


def generate_tasks(
    split: Split, n: int, seed: int = 0, *, families: list[str] | None = None, tiers: list[str] | None = None
) -> list[Task]:
    """`n` tasks from one split, the same for the same (split, n, seed) on every machine.

    `families` or `tiers` restrict what is drawn (by name). Each task carries the world's system
    prompt, a strict checker, tags `[family, "tier:<tier>"]` and metadata with the family, tier,
    entities, the canonical key, the facts an answer may cite (`context`) and the number of tool
    calls the expert needs.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if n < 0:
        raise ConfigError(f"--n must be at least 0, got {n}")
    chosen = [f for f in FAMILIES.values() if (families is None or f.name in families) and (tiers is None or f.tier in tiers)]
    unknown = set(families or ()) - set(FAMILIES)
    if unknown:
        raise ConfigError(f"unknown task family {sorted(unknown)[0]!r}; known: {', '.join(FAMILIES)}")
    if not chosen:
        raise ConfigError("no task family matches the given families and tiers")
    by_tier = {tier: [f for f in chosen if f.tier == tier] for tier in TIERS}
    tiers_present = [t for t in TIERS if by_tier[t]]
    weights = [TIER_WEIGHTS[t] for t in tiers_present]

    rng = random.Random(f"distillery-world:{split}:{seed}")
    tasks: list[Task] = []
    for index in range(n):
        family = rng.choice(by_tier[rng.choices(tiers_present, weights)[0]])
        entities = family.sample(rng, split)
        tasks.append(make_task(family, entities, _render_query(family, entities, rng),
                               id=f"{TASK_ID_PREFIX}{split}-{seed}-{index:05d}", split=split))
    return tasks


# Every generated task's id starts with this, so a result can tell it ran on the offline world
# (the task kind `world/plugin.py` registers).
TASK_ID_PREFIX = "world-"


def make_task(family: Family | str, entities: dict[str, Any], query: str, *, id: str, split: str | None = None,
              tags: list[str] | None = None) -> Task:
    """A world task for `entities` of `family`, worded as `query` (the expected answer, checker,
    context and metadata are the family's). `split` defaults to the entities' own split."""
    family = FAMILIES[family] if isinstance(family, str) else family
    key = canonical_key(family.key(entities))
    split = split or split_of(key)
    return Task(
        id=id,
        query=query,
        system=SYSTEM_PROMPT,
        expected=family.expected(entities),
        checker=family.checker,
        tolerance=NUMERIC_TOLERANCE,
        tags=[family.name, f"tier:{family.tier}", *(tags or [])],
        metadata={"family": family.name, "tier": family.tier, "entities": entities, "expert_calls": family.calls,
                  "split": split, "key": list(key), "context": family.context(entities)},
    )
