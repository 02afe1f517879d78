"""The strict checkers on the world's families: right answers pass in many wordings, wrong ones fail.

Each family gets its right answer in several wordings (with legitimate context: identifiers,
quantities, the question's own numbers) and a battery of wrong ones: another value, a hedge,
several candidates, a range, a negation, a self-correction, a conflicting context value, a wrong
unit. Every phrasing the expert can produce must pass (checked by forcing each answer template).
"""

from __future__ import annotations

import pytest

from distillery.world import expert
from distillery.world.db import get_db
from distillery.world.expert import solve
from distillery.world.tasks import FAMILIES, generate_tasks


def tasks_of(family: str, n: int = 12, split: str = "validation"):
    return generate_tasks(split, n, seed=21, families=[family])


def facts(task):
    """The facts of a task's solution, from the database."""
    db, e = get_db(), task.metadata["entities"]
    out = dict(e)
    if "product" in e and db.product_by_name(e["product"]):
        p = db.product_by_name(e["product"])
        out.update(sku=p.sku, price=p.price, weight_kg=p.weight_kg)
    if "order_id" in e:
        o = db.order(e["order_id"])
        p = db.product_by_sku(o.sku)
        out.update(sku=o.sku, quantity=o.quantity, city=o.city, date=o.date, status=o.status, price=p.price,
                   weight_kg=p.weight_kg, units=db.stock[(o.sku, o.city)])
    return out


def value_of(task):
    expected = task.expected
    return expected["value"] if isinstance(expected, dict) else expected


def assert_verdicts(task, passing, failing):
    for answer in passing:
        outcome = task.check(answer)
        assert outcome.success, (task.query, task.expected, answer, outcome.detail)
    for answer in failing:
        outcome = task.check(answer)
        assert not outcome.success, (task.query, task.expected, answer, outcome.detail)


def money(value: float) -> str:
    return f"{value:,.2f}"


# ---- money: price, order_total, stock_value ---------------------------------------------------


@pytest.mark.parametrize("family", ["price", "order_total", "stock_value"])
def test_money_families(family):
    for task in tasks_of(family):
        v, f = value_of(task), facts(task)
        passing = [
            f"It costs {v} USD.", f"The total is ${money(v)}.", f"That comes to {money(v)} dollars.",
            f"{v} USD", f"The answer is {v:.2f} USD.", f"It is {v} USD, not {v + 10:.2f} USD.",
        ]
        failing = [
            None, "", "I don't know.", f"It costs {v + 0.01:.2f} USD.", f"It costs {v - 137:.2f} USD.",
            f"It costs {round(v * 1.0009, 2) + 0.01:.2f} USD.",  # inside the old 0.1% relative tolerance
            f"999.00, sorry I mean {v}", f"It costs either {v} or {v + 12} USD.", f"It costs about {v} USD.",
            f"It costs {v} or {v + 1} USD.", f"It costs between {v - 5} and {v + 5} USD.",
            f"It costs {v - 5}-{v + 5} USD.", f"It does not cost {v} USD.", f"It isn't {v} USD.",
            f"Maybe {v} USD.", f"{v} USD, {v + 3} USD, {v + 7} USD", f"It costs {v} EUR.",
            f"It costs {v} USD. Actually, {v + 2} USD.", f"It costs {v * 2} USD.", f"It costs roughly ${v}.",
            f"The price is {v} USD, plus or minus a dollar.", f"It costs {v} USD (or {v + 1} USD with tax).",
        ]
        if family == "order_total":
            passing += [f"Order {f['order_id']} for {f['quantity']} units costs {v} USD.",
                        f"Order {f['order_id']}: {f['quantity']} units of {f['sku']} at {f['price']} USD each, "
                        f"{v} USD in total."]
            failing += [f"Order {f['order_id']} for {f['quantity'] + 1} units costs {v} USD.",
                        f"Order {f['order_id']}: {f['quantity']} units at {f['price'] + 1} USD each, {v} USD."]
        if family == "price":
            passing += [f"The {f['product']} ({f['sku']}) costs {v} USD."]
        if family == "stock_value":
            db = get_db()
            first, second = db.stock[(f["sku"], f["city"])], db.stock[(f["sku"], f["city2"])]
            held = f"of the {f['product']} at {f['price']} USD each, worth {v} USD."
            passing += [f"{f['city']} and {f['city2']} hold {first} and {second} units {held}"]
            if first != second:  # one city's units stated for both: the second is a wrong fact
                failing += [f"{f['city']} and {f['city2']} hold {first} and {first} units {held}",
                            f"{f['city']} and {f['city2']} hold {second} and {second} units {held}"]
        assert_verdicts(task, passing, failing)


# ---- count: stock, stock_by_name, stock_after_order -------------------------------------------


@pytest.mark.parametrize("family", ["stock", "stock_by_name", "stock_after_order"])
def test_count_families(family):
    for task in tasks_of(family):
        v, f = value_of(task), facts(task)
        sku = f["sku"]
        passing = [f"{v} units of {sku}", f"There are {v} units.", f"Stock: {v}.", f"{v} units of {sku} are in stock.",
                   f"There are {v} units left, not {v + 4}."]
        failing = [
            f"{v + 1} units of {sku}", f"There are {v - 1} units.", f"Either {v} or {v + 2} units.",
            f"{v}-{v + 10} units", f"Between {v} and {v + 10} units.", f"There are not {v} units.",
            f"At least {v} units.", f"About {v} units.", f"{v} units, sorry, I mean {v + 1}.",
            f"{v} or {v + 1}", f"There are {v} units; maybe {v + 3}.", f"{v}, {v + 1}, {v + 2} units",
            f"There are {v} lb of it.", f"{v}.5 units", f"I think there are {v} units.",
        ]
        if v != 0:
            failing += [f"{sku} is out of stock.", f"There are {v} units, none left."]
        if family == "stock_after_order":
            order, city, qty, units = f["order_id"], f["city"], f["quantity"], f["units"]
            passing += [f"After order {order} ships {qty} units, {city} has {v} units left.",
                        f"{city} has {units} units; after order {order} ({qty} units), {v} units remain."]
            failing += [f"{city} has {units} units left.", f"After order {order} ships {qty + 1} units, {v} are left.",
                        f"{city} will have {units - qty + 1} units left."]
        assert_verdicts(task, passing, failing)


def test_count_reads_zero_words_for_an_empty_shelf():
    task = next(t for t in generate_tasks("train", 400, seed=2, families=["stock"]) if t.expected == 0)
    sku = facts(task)["sku"]
    assert_verdicts(task, [f"{sku} is out of stock there.", "There are 0 units.", "None: 0 units in stock."],
                    [f"There are 3 units of {sku}.", "Either 0 or 3 units."])


# ---- quantity: convert, weight_lb, order_weight_lb -------------------------------------------


@pytest.mark.parametrize("family", ["convert", "weight_lb", "order_weight_lb"])
def test_quantity_families(family):
    for task in tasks_of(family):
        v, unit = task.expected["value"], task.expected["unit"]
        word = {"lb": "pounds", "kg": "kilograms", "g": "grams", "oz": "ounces", "km": "kilometres",
                "mi": "miles", "m": "metres", "ft": "feet", "l": "litres", "gal": "gallons", "ml": "millilitres",
                "c": "degrees Celsius", "f": "degrees Fahrenheit"}[unit]
        symbol = {"c": "°C", "f": "°F"}.get(unit, unit)
        other = "kg" if unit != "kg" else "lb"
        passing = [f"It is {v} {symbol}.", f"That is {v} {word}.", f"{v} {symbol}", f"It is {v + 0.01:.2f} {symbol}."]
        failing = [
            f"It is {v + 0.05:.2f} {symbol}.", f"It is {v} {other}." if unit not in ("c", "f") else f"It is {v} km.",
            f"It is about {v} {symbol}.", f"It is {v} or {v + 1} {symbol}.", f"It is not {v} {symbol}.",
            f"It is {v} {symbol}, sorry, {v + 2} {symbol}.", f"It is between {v} and {v + 3} {symbol}.",
            f"It is {round(v * 2, 2)} {symbol}.", f"Roughly {v} {symbol}.",
        ]
        if family == "weight_lb":
            kg = facts(task)["weight_kg"]
            passing += [f"It weighs {v} lb ({kg} kg)."]
            failing += [f"It weighs {kg} lb.", f"It weighs {v} lb ({kg + 1} kg)."]
        if family == "order_weight_lb":
            f = facts(task)
            passing += [f"Order {f['order_id']} ({f['quantity']} units of {f['sku']}) weighs {v} lb."]
            failing += [f"Order {f['order_id']} ({f['quantity'] + 2} units) weighs {v} lb."]
        if family == "convert":
            e = task.metadata["entities"]
            source = {"c": "°C", "f": "°F"}.get(e["from_unit"], e["from_unit"])
            passing += [f"{e['value']} {source} is {v} {symbol}."]
            failing += [f"{e['value']} {symbol} is {v} {symbol}."]  # the question's number in the answer's unit
        assert_verdicts(task, passing, failing)


# ---- dates: date_shift, ship_date -----------------------------------------------------------


def _long(iso: str) -> str:
    import datetime as dt

    d = dt.date.fromisoformat(iso)
    return f"{d:%B} {d.day}, {d.year}"


@pytest.mark.parametrize("family", ["date_shift", "ship_date"])
def test_date_families(family):
    import datetime as dt

    for task in tasks_of(family):
        v = task.expected
        day = dt.date.fromisoformat(v)
        next_day, previous = (day + dt.timedelta(days=1)).isoformat(), (day - dt.timedelta(days=1)).isoformat()
        passing = [f"It arrives on {v}.", f"The date is {_long(v)}.", f"{day.day} {day:%B} {day.year}.",
                   f"It is {v}, not {next_day}."]
        failing = [
            f"It is {next_day}.", f"It is {v} or {next_day}.", f"It is {previous}, {v} or {next_day}.",
            f"It is between {previous} and {next_day}.", f"It is not {v}.", f"It is after {v}.",
            f"It is before {v}.", f"Around {v}.", f"It is {v}. Sorry, I mean {next_day}.", f"Maybe {v}.",
            f"It is {v} and {next_day}.", f"{v} {next_day}", "It is soon.", f"It is {_long(next_day)}.",
        ]
        if family == "ship_date":
            f = facts(task)
            passing += [f"Order {f['order_id']} was placed on {f['date']}, so it arrives on {v}."]
        else:
            e = task.metadata["entities"]
            passing += [f"{abs(e['days'])} days {'after' if e['days'] > 0 else 'before'} {e['date']} is {v}."]
        assert_verdicts(task, passing, failing)


# ---- status -------------------------------------------------------------------------------------

NEGATIONS = {
    "shipped": ["Order {o} has not shipped yet.", "Order {o} hasn't shipped.", "Order {o} is unshipped.",
                "Order {o} will be shipped tomorrow.", "Order {o} is about to be shipped.",
                "Order {o} is not yet shipped.", "Order {o} is yet to be shipped.", "Order {o} was never shipped."],
    "delivered": ["Order {o} is undelivered.", "Order {o} has not been delivered.", "Order {o} is non-delivered.",
                  "Order {o} will be delivered soon.", "Order {o} isn't delivered yet.",
                  "Order {o} is expected to be delivered on Friday."],
    "pending": ["Order {o} is no longer pending.", "Order {o} is not pending."],
    "cancelled": ["Order {o} was not cancelled.", "Order {o} is uncancelled.", "Order {o} may be cancelled.",
                  "Order {o} will be cancelled."],
}


def test_status_family():
    tasks = generate_tasks("validation", 60, seed=4, families=["order_status"])
    assert {t.expected for t in tasks} == {"pending", "shipped", "delivered", "cancelled"}
    for task in tasks:
        s, o = task.expected, task.metadata["entities"]["order_id"]
        others = [x for x in ("pending", "shipped", "delivered", "cancelled") if x != s]
        passing = [f"Order {o} is {s}.", f"Status of {o}: {s.upper()}.", f"Your order {o} is currently {s}.",
                   f"Order {o} is {s}, not {others[0]}."]
        failing = [f"Order {o} is {others[0]}.", f"Order {o} is {s} or {others[0]}.",
                   f"Order {o} is {', '.join([s, *others[:2]])} or {others[2]}.", f"Order {o} might be {s}.",
                   f"Order {o} is {s}. Sorry, I mean {others[1]}.", f"Order {o} is probably {s}.",
                   f"Is order {o} {s}?", "I cannot tell."]
        failing += [n.format(o=o) for n in NEGATIONS[s]]
        if s != "delivered":
            failing += [f"Order {o} is {s} and {others[0]}."]
        if s == "cancelled":
            passing += [f"Order {o} was canceled."]
        if s == "delivered":
            passing += [f"Order {o} shipped and was delivered."]  # a delivered order has shipped
        assert_verdicts(task, passing, failing)


# ---- no tool: refusal, smalltalk; and the product that does not exist -------------------------


def test_refusal_family():
    for task in tasks_of("decline", 6):
        city = task.metadata["entities"]["city"]
        assert_verdicts(
            task,
            ["Sorry, I can't help with that; I only handle products, stock, orders, units and dates.",
             "I'm unable to do that. I can only help with the shop.", f"I cannot help with {city}, sorry."],
            [f"Sure! Here is what I found about {city}.", "The weather will be sunny.", "Done, I booked it.",
             f"I can't book that, but it is 21 °C in {city}.", "OK.", None],
        )


def test_smalltalk_family():
    for task in tasks_of("smalltalk", 6):
        assert_verdicts(task, ["Hello! I can look up products, stock and orders.", "Hi. Ask me about orders and products."],
                        ["Hello!", "I can't look up products or orders.", "I help with products only."])


def test_missing_product_family():
    for task in tasks_of("missing_product", 8):
        name = task.expected
        real = get_db().products_in("validation")[0].name
        assert_verdicts(
            task,
            [f"Sorry, there is no product called {name}.", f"I could not find {name} in the catalogue.",
             f"The {name} does not exist in our shop."],
            [f"The {name} costs 12.5 USD.", f"The {name} weighs 3 kg.", f"Sorry, there is no product called {real}.",
             f"The {name} does not exist; maybe you mean the {real}.", f"{name}: 45 USD.",
             "There is no such product."],
        )


# ---- the expert: every phrasing it can produce passes ----------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_expert_answer_phrasing_passes_the_strict_checker(family, monkeypatch):
    tasks = [t for split in ("train", "validation", "test") for t in generate_tasks(split, 60, seed=8, families=[family])]
    templates = expert.ANSWERS[family]
    assert len(templates) >= 4
    for template in templates:
        monkeypatch.setitem(expert.ANSWERS, family, (template,))
        for task in tasks:
            gold = solve(task, sample=1)
            assert gold.outcome.success, (template, task.query, task.expected, gold.final_answer, gold.outcome.detail)
