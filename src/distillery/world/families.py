"""The world's task families: what each kind of question samples, how it is worded and keyed,
and its expected answer, computed straight from the database and the tool functions.

`FAMILIES` is the table `world/tasks.py` draws from; it lives here, apart from the drawing and
rendering, to keep each module small. Every sampler draws entities from one split only (see
`world/tasks.py` for how splits are kept apart); the split of a key is `db.split_of`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from distillery.errors import ConfigError
from distillery.world import tools as T
from distillery.world.db import CITIES, canonical_key, canonical_number, get_db, split_of

SHIP_DAYS = (1, 30)  # ship_date: days from the order date
SHIFT_DAYS = 120  # date_shift: up to this many days after or before


@dataclass(frozen=True)
class Family:
    """One kind of question: how to sample it in a split, word it, key it, and judge it."""

    name: str
    tier: str
    calls: int  # tool calls in the expert's solution
    sample: Callable[[random.Random, str], dict[str, Any]]
    key: Callable[[dict[str, Any]], tuple]
    templates: tuple[str, ...]
    expected: Callable[[dict[str, Any]], Any]
    checker: str
    context: Callable[[dict[str, Any]], list] = field(default=lambda e: [])

    def split(self, entities: dict[str, Any]) -> str:
        return split_of(self.key(entities))



# ---- entity samplers: each draws from one split ----------------------------------------------


@lru_cache(maxsize=None)
def _pool(kind: str, split: str) -> tuple:
    db = get_db()
    if kind == "products":
        return tuple(p.name for p in db.products_in(split))
    if kind == "orders":
        return tuple(o.order_id for o in db.orders_in(split))
    if kind == "missing":
        return tuple(db.missing_in(split))
    if kind == "days":
        return tuple(db.days_in(split))
    raise KeyError(kind)


def _product(rng: random.Random, split: str) -> dict[str, Any]:
    return {"product": rng.choice(_pool("products", split))}


def _product_city(rng: random.Random, split: str) -> dict[str, Any]:
    return {**_product(rng, split), "city": rng.choice(CITIES)}


def _product_two_cities(rng: random.Random, split: str) -> dict[str, Any]:
    first, second = rng.sample(CITIES, 2)
    return {**_product(rng, split), "city": first, "city2": second}


def _order(rng: random.Random, split: str) -> dict[str, Any]:
    return {"order_id": rng.choice(_pool("orders", split))}


def _order_days(rng: random.Random, split: str) -> dict[str, Any]:
    return {**_order(rng, split), "days": rng.randint(*SHIP_DAYS)}


def _missing_product(rng: random.Random, split: str) -> dict[str, Any]:
    return {"product": rng.choice(_pool("missing", split))}


CONVERSIONS = [
    ("kg", "lb"), ("lb", "kg"), ("g", "oz"), ("oz", "g"), ("km", "mi"), ("mi", "km"),
    ("m", "ft"), ("ft", "m"), ("l", "gal"), ("gal", "l"), ("ml", "l"), ("c", "f"), ("f", "c"),
]
UNIT_WORDS = {
    "kg": ["kg", "kilograms"], "lb": ["lb", "pounds"], "g": ["g", "grams"], "oz": ["oz", "ounces"],
    "km": ["km", "kilometres"], "mi": ["mi", "miles"], "m": ["m", "metres"], "ft": ["ft", "feet"],
    "l": ["l", "litres"], "gal": ["gal", "gallons"], "ml": ["ml", "millilitres"],
    "c": ["°C", "degrees Celsius"], "f": ["°F", "degrees Fahrenheit"],
}
# How the expert writes each unit after a number (what the quantity checker reads back).
UNIT_SYMBOLS = {"c": "°C", "f": "°F"}


def unit_symbol(unit: str) -> str:
    return UNIT_SYMBOLS.get(unit, unit)


def _rejecting(draw: Callable[[random.Random], dict[str, Any]], key: Callable[[dict[str, Any]], tuple]):
    """A sampler for entity-free families: draw until the key lands in the split."""

    def sample(rng: random.Random, split: str) -> dict[str, Any]:
        for _ in range(10_000):
            entities = draw(rng)
            if split_of(key(entities)) == split:
                return entities
        raise ConfigError(f"no entity combination in split {split!r}")  # pragma: no cover

    return sample


def _draw_conversion(rng: random.Random) -> dict[str, Any]:
    source, target = rng.choice(CONVERSIONS)
    value = rng.randint(1, 500) if rng.random() < 0.6 else round(rng.uniform(0.5, 500), 1)
    return {"value": canonical_number(value), "from_unit": source, "to_unit": target}


def _conversion_key(e: dict[str, Any]) -> tuple:
    return canonical_key(("convert_units", e["value"], e["from_unit"], e["to_unit"]))


def _date_days(rng: random.Random, split: str) -> dict[str, Any]:
    days = rng.randint(1, SHIFT_DAYS) * (1 if rng.random() < 0.7 else -1)
    return {"date": rng.choice(_pool("days", split)), "days": days}


DECLINE_TOPICS = [
    "What will the weather be in {city} tomorrow?",
    "Book me a flight to {city}.",
    "Recommend a good restaurant in {city}.",
    "Translate 'good morning' into the language spoken in {city}.",
    "Write a short poem about {city}.",
    "What time is it in {city} right now?",
    "Who is the mayor of {city}?",
    "Call a taxi to the {city} airport.",
    "Find me a hotel in {city} for next week.",
    "What is the population of {city}?",
    "Tell me a joke about {city}.",
    "Which museums should I visit in {city}?",
]
GREETINGS = ["Hi!", "Hello.", "Hey there.", "Good morning.", "Hello!", "Good evening.", "Hi there.", "Hey!",
             "Good afternoon.", "Greetings."]
CAPABILITY_QUESTIONS = [
    "What can you do?",
    "What can you help me with?",
    "Which questions can you answer?",
    "How can you help me?",
    "What are you able to do?",
    "What do you do?",
    "What kind of things can I ask you?",
    "What are your skills?",
    "Can you tell me what you can help with?",
    "What should I ask you about?",
]


def _draw_decline(rng: random.Random) -> dict[str, Any]:
    return {"topic": rng.randrange(len(DECLINE_TOPICS)), "city": rng.choice(CITIES)}


def _draw_smalltalk(rng: random.Random) -> dict[str, Any]:
    return {"greeting": rng.randrange(len(GREETINGS)), "question": rng.randrange(len(CAPABILITY_QUESTIONS))}


# ---- expected answers, computed from the database and the tool functions ----------------------


def _p(entities: dict[str, Any]):
    return get_db().product_by_name(entities["product"])


def _o(entities: dict[str, Any]):
    return get_db().order(entities["order_id"])


def _units(sku: str, city: str) -> int:
    return get_db().stock[(sku, city)]


def _order_product(e: dict[str, Any]):
    return get_db().product_by_sku(_o(e).sku)


def _order_total(e: dict[str, Any]) -> float:
    order = _o(e)
    return T.calculate.fn(f"{_order_product(e).price} * {order.quantity}")


def _stock_value(e: dict[str, Any]) -> float:
    product = _p(e)
    a, b = _units(product.sku, e["city"]), _units(product.sku, e["city2"])
    return T.calculate.fn(f"{product.price} * ({a} + {b})")


def _order_weight_kg(e: dict[str, Any]) -> float:
    return T.calculate.fn(f"{_order_product(e).weight_kg} * {_o(e).quantity}")


def _order_weight_lb(e: dict[str, Any]) -> float:
    return T.convert_units.fn(_order_weight_kg(e), "kg", "lb")


def _stock_after_order(e: dict[str, Any]) -> float:
    order = _o(e)
    return T.calculate.fn(f"{_units(order.sku, order.city)} - {order.quantity}")


def _pounds(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "lb", "decimals": 2}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        # -- none: no tool --
        Family(
            "smalltalk", "none", 0, _rejecting(_draw_smalltalk, lambda e: ("smalltalk", e["greeting"], e["question"])),
            key=lambda e: ("smalltalk", e["greeting"], e["question"]),
            templates=("{greeting_text} {question_text}",),
            expected=lambda e: ["products", "orders"], checker="mentions",
        ),
        Family(
            "decline", "none", 0, _rejecting(_draw_decline, lambda e: ("decline", e["topic"], e["city"])),
            key=lambda e: ("decline", e["topic"], e["city"]),
            templates=("{topic_text}", "Please help: {topic_text}", "Quick question. {topic_text}",
                       "{topic_text} Thanks!"),
            expected=lambda e: "refusal", checker="refusal",
        ),
        # -- easy: one call --
        Family(
            "price", "easy", 1, _product, key=lambda e: ("price", e["product"]),
            templates=(
                "How much does the {product} cost?",
                "What is the price of the {product}?",
                "Price of the {product}?",
                "I want to buy a {product}. How much is it?",
                "Tell me what one {product} costs.",
            ),
            expected=lambda e: _p(e).price, checker="money",
        ),
        Family(
            "stock", "easy", 1, _product_city, key=lambda e: ("stock", e["product"], e["city"]),
            templates=(
                "How many units of {sku} are in stock in {city}?",
                "What is the stock of {sku} at the {city} warehouse?",
                "How many {sku} does {city} have?",
                "Check {city} inventory for {sku}.",
                "Units of {sku} in {city}?",
            ),
            expected=lambda e: _units(_p(e).sku, e["city"]), checker="count",
        ),
        Family(
            "order_status", "easy", 1, _order, key=lambda e: ("order_status", e["order_id"]),
            templates=(
                "What is the status of order {order_id}?",
                "Has order {order_id} shipped yet?",
                "Where is my order {order_id}?",
                "Status of {order_id}?",
                "Can you check on order {order_id} for me?",
            ),
            expected=lambda e: _o(e).status, checker="status",
        ),
        Family(
            "convert", "easy", 1, _rejecting(_draw_conversion, _conversion_key), key=_conversion_key,
            templates=(
                "Convert {value} {from_word} to {to_word}.",
                "How many {to_word} is {value} {from_word}?",
                "What is {value} {from_word} in {to_word}?",
                "{value} {from_word} = ? {to_word}",
            ),
            expected=lambda e: {"value": T.convert_units.fn(e["value"], e["from_unit"], e["to_unit"]),
                                "unit": e["to_unit"], "decimals": 2},
            checker="quantity",
        ),
        Family(
            "date_shift", "easy", 1, _date_days, key=lambda e: ("add_days", e["date"], e["days"]),
            templates=(
                "What date is {abs_days} days {direction} {date}?",
                "Which day is {abs_days} days {direction} {date}?",
                "Count {abs_days} days {direction} {date}. What is the date?",
                "Give me the date {abs_days} days {direction} {date}.",
            ),
            expected=lambda e: T.add_days.fn(e["date"], e["days"]), checker="date",
        ),
        Family(
            "missing_product", "easy", 1, _missing_product, key=lambda e: ("missing_product", e["product"]),
            templates=(
                "How much does the {product} cost?",
                "What is the price of the {product}?",
                "How heavy is the {product}?",
                "Do you sell the {product}? What does it cost?",
            ),
            expected=lambda e: e["product"], checker="not_found",
        ),
        # -- medium: two or three dependent calls --
        Family(
            "stock_by_name", "medium", 2, _product_city, key=lambda e: ("stock_by_name", e["product"], e["city"]),
            templates=(
                "How many {product} units are in stock in {city}?",
                "Does {city} have the {product} in stock? How many?",
                "Stock of the {product} in {city}?",
                "How many {product}s are in the {city} warehouse?",
            ),
            expected=lambda e: _units(_p(e).sku, e["city"]), checker="count",
        ),
        Family(
            "weight_lb", "medium", 2, _product, key=lambda e: ("weight_lb", e["product"]),
            templates=(
                "How many pounds does the {product} weigh?",
                "What is the weight of the {product} in lb?",
                "Weight of one {product} in pounds?",
                "I need the {product}'s weight in pounds.",
            ),
            expected=lambda e: _pounds(T.convert_units.fn(_p(e).weight_kg, "kg", "lb")), checker="quantity",
            context=lambda e: [[_p(e).weight_kg, "kg"]],
        ),
        Family(
            "order_total", "medium", 3, _order, key=lambda e: ("order_total", e["order_id"]),
            templates=(
                "What is the total price of order {order_id}?",
                "How much did order {order_id} cost in total?",
                "Total value of order {order_id}?",
                "What does order {order_id} come to?",
            ),
            expected=_order_total, checker="money",
            context=lambda e: [[_o(e).quantity, "units"], [_order_product(e).price, "usd"]],
        ),
        Family(
            "ship_date", "medium", 2, _order_days, key=lambda e: ("ship_date", e["order_id"], e["days"]),
            templates=(
                "Order {order_id} arrives {days} days after it was placed. On what date does it arrive?",
                "If order {order_id} takes {days} days to deliver from its order date, when does it arrive?",
                "Order {order_id} needs {days} days from the order date. Arrival date?",
                "Delivery of order {order_id} takes {days} days after ordering. Which date will it arrive?",
            ),
            expected=lambda e: T.add_days.fn(_o(e).date, e["days"]), checker="date",
            context=lambda e: [_o(e).date],
        ),
        # -- hard: four calls, or multi-hop --
        Family(
            "stock_value", "hard", 4, _product_two_cities,
            key=lambda e: ("stock_value", e["product"], e["city"], e["city2"]),
            templates=(
                "What is the total value of the {product} stock in {city} and {city2}?",
                "How much is all {product} inventory in {city} and {city2} worth?",
                "Value the {product} units held in {city} plus {city2}.",
                "What are the {product} units in {city} and {city2} worth together?",
            ),
            expected=_stock_value, checker="money",
            context=lambda e: _stock_value_context(e),
        ),
        Family(
            "order_weight_lb", "hard", 4, _order, key=lambda e: ("order_weight_lb", e["order_id"]),
            templates=(
                "How many pounds does order {order_id} weigh in total?",
                "What is the shipping weight of order {order_id} in lb?",
                "Total weight of order {order_id}, in pounds?",
                "How heavy is order {order_id} in pounds?",
            ),
            expected=lambda e: _pounds(_order_weight_lb(e)), checker="quantity",
            context=lambda e: [[_o(e).quantity, "units"], [_order_product(e).weight_kg, "kg"],
                               [_order_weight_kg(e), "kg"]],
        ),
        Family(
            "stock_after_order", "hard", 3, _order, key=lambda e: ("stock_after_order", e["order_id"]),
            templates=(
                "Order {order_id} is filled from the warehouse in its city. How many units of its product are left there afterwards?",
                "After order {order_id} ships from its city's warehouse, how much stock of that product remains there?",
                "If the warehouse in the city of order {order_id} fills it, what stock of the product is left?",
                "Order {order_id} ships from its own city's warehouse. What stock of its product does that warehouse keep?",
            ),
            expected=_stock_after_order, checker="count",
            context=lambda e: [[_units(_o(e).sku, _o(e).city), "units"], [_o(e).quantity, "units"]],
        ),
    ]
}


def _stock_value_context(e: dict[str, Any]) -> list:
    product = _p(e)
    a, b = _units(product.sku, e["city"]), _units(product.sku, e["city2"])
    return [[a, "units"], [b, "units"], [a + b, "units"], [product.price, "usd"]]
