"""Seeded task families over the shop, in four tiers, with fixed train/validation/test splits.

Tiers: `none` (answer directly or decline, no tool), `easy` (one call), `medium` (two or three
dependent calls) and `hard` (four calls, or multi-hop: a later argument comes from an earlier
result). Each family samples entities, words the query through one of several templates, and
knows the expected answer, computed straight from the database and the tool functions. Only the
built-in checkers are used (numeric: the last number in the answer; contains: normalised strings),
so a task file written by `distillery world generate` loads anywhere with `load_tasks`.

Splits are fixed by the entity combination, not by the seed: a combination (a product, a product
and a city, an order, a value and a pair of units...) hashes into test (10%), validation (10%) or
train (80%). So the test split only holds combinations that never occur in training, whatever
seeds either side uses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from distillery.errors import ConfigError
from distillery.tasks import Task
from distillery.world import SYSTEM_PROMPT
from distillery.world import tools as T
from distillery.world.db import ADJECTIVES, CITIES, NOUNS, get_db

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")
TIERS: tuple[str, ...] = ("none", "easy", "medium", "hard")
# How often each tier is drawn. The same mix in every split, so split figures are comparable.
TIER_WEIGHTS = {"none": 0.1, "easy": 0.3, "medium": 0.3, "hard": 0.3}
NUMERIC_TOLERANCE = 1e-3  # relative; tool results are rounded to cents, so this only forgives float noise

DECLINE_ANSWER = "Sorry, I can't help with that; I can only help with products, stock, orders, units and dates."
CAPABILITIES_ANSWER = "I can look up products, stock and orders, and calculate, convert units and add days."


def split_of(key: tuple) -> str:
    """The split an entity combination belongs to: a stable hash, identical on every machine."""
    bucket = int(hashlib.sha1(repr(key).encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


@dataclass(frozen=True)
class Family:
    """One kind of question: how to sample it, word it, key it for splitting, and judge it."""

    name: str
    tier: str
    calls: int  # tool calls in the expert's solution
    sample: Callable[[random.Random], dict[str, Any]]
    key: Callable[[dict[str, Any]], tuple]
    templates: tuple[str, ...]
    expected: Callable[[dict[str, Any]], Any]
    checker: str


# ---- entity samplers -------------------------------------------------------------------------

def _product(rng: random.Random) -> dict[str, Any]:
    return {"product": rng.choice(get_db().products).name}


def _product_city(rng: random.Random) -> dict[str, Any]:
    return {**_product(rng), "city": rng.choice(CITIES)}


def _product_two_cities(rng: random.Random) -> dict[str, Any]:
    first, second = rng.sample(CITIES, 2)
    return {**_product(rng), "city": first, "city2": second}


def _order(rng: random.Random) -> dict[str, Any]:
    return {"order_id": rng.choice(get_db().orders).order_id}


def _order_days(rng: random.Random) -> dict[str, Any]:
    return {**_order(rng), "days": rng.randint(1, 30)}


def _missing_product(rng: random.Random) -> dict[str, Any]:
    known = {p.name for p in get_db().products}
    missing = sorted(f"{a} {n}" for a in ADJECTIVES for n in NOUNS if f"{a} {n}" not in known)
    return {"product": rng.choice(missing)}


CONVERSIONS = [
    ("kg", "lb"), ("lb", "kg"), ("g", "oz"), ("oz", "g"), ("km", "mi"), ("mi", "km"),
    ("m", "ft"), ("ft", "m"), ("l", "gal"), ("gal", "l"), ("ml", "l"), ("c", "f"), ("f", "c"),
]
UNIT_WORDS = {
    "kg": ["kg", "kilograms"], "lb": ["lb", "pounds"], "g": ["g", "grams"], "oz": ["oz", "ounces"],
    "km": ["km", "kilometres"], "mi": ["mi", "miles"], "m": ["m", "metres"], "ft": ["ft", "feet"],
    "l": ["l", "litres"], "gal": ["gal", "gallons"], "ml": ["ml", "millilitres"],
    "c": ["C", "degrees Celsius"], "f": ["F", "degrees Fahrenheit"],
}


def _conversion(rng: random.Random) -> dict[str, Any]:
    source, target = rng.choice(CONVERSIONS)
    value = rng.randint(1, 500) if rng.random() < 0.6 else round(rng.uniform(0.5, 500), 1)
    return {"value": value, "from_unit": source, "to_unit": target}


def _date_days(rng: random.Random) -> dict[str, Any]:
    date = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 900))
    days = rng.randint(1, 120) * (1 if rng.random() < 0.7 else -1)
    return {"date": date.isoformat(), "days": days}


DECLINE_TOPICS = [
    "What will the weather be in {city} tomorrow?",
    "Book me a flight to {city}.",
    "Recommend a good restaurant in {city}.",
    "Translate 'good morning' into the language spoken in {city}.",
    "Write a short poem about {city}.",
    "What time is it in {city} right now?",
    "Who is the mayor of {city}?",
    "Call a taxi to the {city} airport.",
]
GREETINGS = ["Hi!", "Hello.", "Hey there.", "Good morning.", "Hello!"]
CAPABILITY_QUESTIONS = [
    "What can you do?",
    "What can you help me with?",
    "Which questions can you answer?",
    "How can you help me?",
    "What are you able to do?",
    "What do you do?",
]


def _decline(rng: random.Random) -> dict[str, Any]:
    return {"topic": rng.randrange(len(DECLINE_TOPICS)), "city": rng.choice(CITIES)}


def _smalltalk(rng: random.Random) -> dict[str, Any]:
    return {"greeting": rng.randrange(len(GREETINGS)), "question": rng.randrange(len(CAPABILITY_QUESTIONS))}


# ---- expected answers, computed from the database and the tool functions ----------------------

def _p(entities: dict[str, Any]):
    return get_db().product_by_name(entities["product"])


def _o(entities: dict[str, Any]):
    return get_db().order(entities["order_id"])


def _units(sku: str, city: str) -> int:
    return get_db().stock[(sku, city)]


def _order_total(e: dict[str, Any]) -> float:
    order = _o(e)
    return T.calculate.fn(f"{get_db().product_by_sku(order.sku).price} * {order.quantity}")


def _stock_value(e: dict[str, Any]) -> float:
    product = _p(e)
    a, b = _units(product.sku, e["city"]), _units(product.sku, e["city2"])
    return T.calculate.fn(f"{product.price} * ({a} + {b})")


def _order_weight_lb(e: dict[str, Any]) -> float:
    order = _o(e)
    kg = T.calculate.fn(f"{get_db().product_by_sku(order.sku).weight_kg} * {order.quantity}")
    return T.convert_units.fn(kg, "kg", "lb")


def _stock_after_order(e: dict[str, Any]) -> float:
    order = _o(e)
    return T.calculate.fn(f"{_units(order.sku, order.city)} - {order.quantity}")


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        # -- none: no tool --
        Family(
            "smalltalk", "none", 0, _smalltalk,
            key=lambda e: ("smalltalk", e["greeting"], e["question"]),
            templates=("{greeting_text} {question_text}",),
            expected=lambda e: ["products", "orders"], checker="contains",
        ),
        Family(
            "decline", "none", 0, _decline,
            key=lambda e: ("decline", e["topic"], e["city"]),
            templates=("{topic_text}", "Please help: {topic_text}", "Quick question. {topic_text}"),
            expected=lambda e: ["sorry", "can't help"], checker="contains",
        ),
        # -- easy: one call --
        Family(
            "price", "easy", 1, _product, key=lambda e: (e["product"],),
            templates=(
                "How much does the {product} cost?",
                "What is the price of the {product}?",
                "Price of the {product}?",
                "I want to buy a {product}. How much is it?",
                "Tell me what one {product} costs.",
            ),
            expected=lambda e: _p(e).price, checker="numeric",
        ),
        Family(
            "stock", "easy", 1, _product_city, key=lambda e: (e["product"], e["city"]),
            templates=(
                "How many units of {sku} are in stock in {city}?",
                "What is the stock of {sku} at the {city} warehouse?",
                "How many {sku} does {city} have?",
                "Check {city} inventory for {sku}.",
            ),
            expected=lambda e: _units(_p(e).sku, e["city"]), checker="numeric",
        ),
        Family(
            "order_status", "easy", 1, _order, key=lambda e: (e["order_id"],),
            templates=(
                "What is the status of order {order_id}?",
                "Has order {order_id} shipped yet?",
                "Where is my order {order_id}?",
                "Status of {order_id}?",
            ),
            expected=lambda e: _o(e).status, checker="contains",
        ),
        Family(
            "convert", "easy", 1, _conversion, key=lambda e: (e["value"], e["from_unit"], e["to_unit"]),
            templates=(
                "Convert {value} {from_word} to {to_word}.",
                "How many {to_word} is {value} {from_word}?",
                "What is {value} {from_word} in {to_word}?",
                "{value} {from_word} = ? {to_word}",
            ),
            expected=lambda e: T.convert_units.fn(e["value"], e["from_unit"], e["to_unit"]), checker="numeric",
        ),
        Family(
            "date_shift", "easy", 1, _date_days, key=lambda e: (e["date"], e["days"]),
            templates=(
                "What date is {abs_days} days {direction} {date}?",
                "Which day is {abs_days} days {direction} {date}?",
                "Count {abs_days} days {direction} {date}. What is the date?",
            ),
            expected=lambda e: T.add_days.fn(e["date"], e["days"]), checker="contains",
        ),
        Family(
            "missing_product", "easy", 1, _missing_product, key=lambda e: ("missing", e["product"]),
            templates=(
                "How much does the {product} cost?",
                "What is the price of the {product}?",
                "How heavy is the {product}?",
            ),
            expected=lambda e: ["no product", e["product"]], checker="contains",
        ),
        # -- medium: two or three dependent calls --
        Family(
            "stock_by_name", "medium", 2, _product_city, key=lambda e: (e["product"], e["city"]),
            templates=(
                "How many {product} units are in stock in {city}?",
                "Does {city} have the {product} in stock? How many?",
                "Stock of the {product} in {city}?",
                "How many {product}s are in the {city} warehouse?",
            ),
            expected=lambda e: _units(_p(e).sku, e["city"]), checker="numeric",
        ),
        Family(
            "weight_lb", "medium", 2, _product, key=lambda e: (e["product"],),
            templates=(
                "How many pounds does the {product} weigh?",
                "What is the weight of the {product} in lb?",
                "Weight of one {product} in pounds?",
            ),
            expected=lambda e: T.convert_units.fn(_p(e).weight_kg, "kg", "lb"), checker="numeric",
        ),
        Family(
            "order_total", "medium", 3, _order, key=lambda e: (e["order_id"],),
            templates=(
                "What is the total price of order {order_id}?",
                "How much did order {order_id} cost in total?",
                "Total value of order {order_id}?",
            ),
            expected=_order_total, checker="numeric",
        ),
        Family(
            "ship_date", "medium", 2, _order_days, key=lambda e: (e["order_id"], e["days"]),
            templates=(
                "Order {order_id} arrives {days} days after it was placed. On what date does it arrive?",
                "If order {order_id} takes {days} days to deliver from its order date, when does it arrive?",
                "Order {order_id} needs {days} days from the order date. Arrival date?",
            ),
            expected=lambda e: T.add_days.fn(_o(e).date, e["days"]), checker="contains",
        ),
        # -- hard: four calls, or multi-hop --
        Family(
            "stock_value", "hard", 4, _product_two_cities, key=lambda e: (e["product"], e["city"], e["city2"]),
            templates=(
                "What is the total value of the {product} stock in {city} and {city2}?",
                "How much is all {product} inventory in {city} and {city2} worth?",
                "Value the {product} units held in {city} plus {city2}.",
            ),
            expected=_stock_value, checker="numeric",
        ),
        Family(
            "order_weight_lb", "hard", 4, _order, key=lambda e: (e["order_id"],),
            templates=(
                "How many pounds does order {order_id} weigh in total?",
                "What is the shipping weight of order {order_id} in lb?",
                "Total weight of order {order_id}, in pounds?",
            ),
            expected=_order_weight_lb, checker="numeric",
        ),
        Family(
            "stock_after_order", "hard", 3, _order, key=lambda e: (e["order_id"],),
            templates=(
                "Order {order_id} is filled from the warehouse in its city. How many units of its product are left there afterwards?",
                "After order {order_id} ships from its city's warehouse, how much stock of that product remains there?",
                "If the warehouse in the city of order {order_id} fills it, what stock of the product is left?",
            ),
            expected=_stock_after_order, checker="numeric",
        ),
    ]
}


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
    prompt, a checker, tags `[family, "tier:<tier>"]` and metadata with the family, tier,
    entities and the number of tool calls the expert needs.
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
        for _ in range(10_000):  # rejection sampling until the combination lands in this split
            entities = family.sample(rng)
            if split_of(family.key(entities)) == split:
                break
        else:  # pragma: no cover - every family has combinations in every split
            raise ConfigError(f"family {family.name!r} has no entity combination in split {split!r}")
        tasks.append(_make_task(family, entities, _render_query(family, entities, rng), split, seed, index))
    return tasks


# Every generated task's id starts with this, so a result can tell it ran on the offline world
# (the task kind `world/plugin.py` registers).
TASK_ID_PREFIX = "world-"


def _make_task(family: Family, entities: dict[str, Any], query: str, split: str, seed: int, index: int) -> Task:
    return Task(
        id=f"{TASK_ID_PREFIX}{split}-{seed}-{index:05d}",
        query=query,
        system=SYSTEM_PROMPT,
        expected=family.expected(entities),
        checker=family.checker,
        tolerance=NUMERIC_TOLERANCE,
        tags=[family.name, f"tier:{family.tier}"],
        metadata={"family": family.name, "tier": family.tier, "entities": entities, "expert_calls": family.calls,
                  "split": split},
    )
