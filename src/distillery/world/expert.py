"""The expert: a scripted, stochastic solver that writes gold trajectories for every world task.

It follows each family's plan, runs the real tools through a `ToolBox` sealed to the task's split,
and reads every value it passes on (a SKU, a price, a date) out of the tool results, the way a
model has to. It varies what a real teacher varies and nothing else:

- **phrasing**: every reasoning line and every answer is drawn from at least four phrasings
  (`REASONING`, `ANSWERS`); about a third of trajectories call tools with no text before the
  calls at all (as GPT-4o does), the rest write a short reasoning line before each call;
- **plan**, where the family admits alternatives (`PLANS`): the order of independent calls, two
  independent calls in one step or one per step, and the operand order of a calculation.

The facts never vary: every call's arguments and the answer's value come from the tool results,
and every phrasing passes the task's strict checker (a test holds it to that over thousands of
tasks). `solve(task)` is deterministic for a task; `solve(task, sample=i)` draws the i-th of the
samples a collector takes per task (sample 0 is `solve(task)`).
"""

from __future__ import annotations

import json
import random
from typing import Any

from distillery.tasks import Task
from distillery.tools import ToolBox
from distillery.trajectory import Step, ToolCall, Trajectory
from distillery.world import SYSTEM_PROMPT
from distillery.world.tasks import unit_symbol
from distillery.world.tools import toolbox

EXPERT_MODEL = "world:expert"
SILENT_SHARE = 0.3  # trajectories whose tool steps carry no text, only calls

# Reasoning lines before tool calls, by (family, step). Fields come from the task and earlier results.
REASONING: dict[tuple[str, str], tuple[str, ...]] = {
    ("price", "product"): ("I will look up the product.", "Let me look up the {product}.",
                           "First I need the {product}'s details.", "Looking up the {product} in the catalogue."),
    ("missing_product", "product"): ("I will look up the product.", "Let me look up the {product}.",
                                     "First I need the {product}'s details.", "Looking up the {product} in the catalogue."),
    ("stock", "stock"): ("I will check the stock.", "Let me check the {city} warehouse.",
                         "Checking the stock of {sku} in {city}.", "I need the stock level in {city}."),
    ("order_status", "order"): ("I will look up the order.", "Let me look up order {order_id}.",
                                "Checking order {order_id}.", "I need the order's record."),
    ("convert", "convert"): ("I will convert the units.", "Let me convert {value} {from_symbol} to {to_symbol}.",
                             "Converting with the unit tool.", "I'll run the conversion."),
    ("date_shift", "add"): ("I will add the days.", "Let me count {days} days from {date}.",
                            "Using the date tool on {date}.", "I'll shift {date} by {days} days."),
    ("stock_by_name", "product"): ("I need the product's SKU first.", "Let me find the {product}'s SKU.",
                                   "First, the SKU of the {product}.", "Looking up the {product} to get its SKU."),
    ("stock_by_name", "stock"): ("Now I check the stock in {city}.", "Next, the {city} stock of {sku}.",
                                 "Now the stock level in {city}.", "With the SKU, I check {city}."),
    ("weight_lb", "product"): ("I need the product's weight.", "Let me look up the {product}'s weight.",
                               "First, the weight of the {product}.", "Looking up the {product}."),
    ("weight_lb", "convert"): ("Now I convert kg to lb.", "Next, {weight_kg} kg in pounds.",
                               "Converting the weight to lb.", "Now the conversion to pounds."),
    ("order_total", "order"): ("I need the order first.", "Let me look up order {order_id}.",
                               "First, the order's product and quantity.", "Checking order {order_id}."),
    ("order_total", "product"): ("Now the product's price.", "Next, the price of {sku}.",
                                 "Now I look up {sku}.", "I need the unit price of {sku}."),
    ("order_total", "calculate"): ("Multiply price by quantity.", "Now {quantity} times {price}.",
                                   "The total is the price times the quantity.", "Calculating the total."),
    ("ship_date", "order"): ("I need the order date first.", "Let me look up order {order_id}.",
                             "First, when order {order_id} was placed.", "Checking the order's date."),
    ("ship_date", "add"): ("Now I add {days} days.", "Next, {days} days after {date}.",
                           "Adding {days} days to {date}.", "Now the arrival date."),
    ("stock_value", "product"): ("I need the product's SKU and price.", "Let me look up the {product}.",
                                 "First, the SKU and price of the {product}.", "Looking up the {product}'s details."),
    ("stock_value", "stock"): ("Stock in {city}.", "Now the {city} warehouse.", "Next, {city}.",
                               "Checking {city}."),
    ("stock_value", "stocks"): ("I check both warehouses.", "Now the stock in {city} and {city2}.",
                                "Both cities at once.", "Next, the two warehouses."),
    ("stock_value", "calculate"): ("Multiply the price by the total units.", "Now the price times the units.",
                                   "Calculating the value.", "The value is the price times both stocks."),
    ("order_weight_lb", "order"): ("I need the order first.", "Let me look up order {order_id}.",
                                   "First, the order's product and quantity.", "Checking order {order_id}."),
    ("order_weight_lb", "product"): ("Now the product's weight.", "Next, the weight of {sku}.",
                                     "Now I look up {sku}.", "I need the weight of {sku}."),
    ("order_weight_lb", "calculate"): ("Multiply weight by quantity.", "Now {quantity} times {weight_kg} kg.",
                                       "The total weight in kg.", "Calculating the weight in kg."),
    ("order_weight_lb", "convert"): ("Now I convert kg to lb.", "Next, {kilograms} kg in pounds.",
                                     "Converting the total to lb.", "Now the conversion to pounds."),
    ("stock_after_order", "order"): ("I need the order first.", "Let me look up order {order_id}.",
                                     "First, the order's product, quantity and city.", "Checking order {order_id}."),
    ("stock_after_order", "stock"): ("Now the stock in {city}.", "Next, the {city} stock of {sku}.",
                                     "Now the warehouse in {city}.", "Checking {sku} in {city}."),
    ("stock_after_order", "calculate"): ("Subtract the order quantity.", "Now {units} minus {quantity}.",
                                         "Taking the order out of the stock.", "Calculating what is left."),
}

# Final answers by family. Each states the checked value exactly once, as the checker reads it.
ANSWERS: dict[str, tuple[str, ...]] = {
    "smalltalk": (
        "Hello! I can look up products, stock and orders, and calculate, convert units and add days.",
        "Hi! Ask me about products, stock levels, orders, unit conversions and dates.",
        "I am the shop assistant: I look up products, stock and orders, do arithmetic, convert units and add days to dates.",
        "Hello. I can help with products, stock, orders, calculations, unit conversions and dates.",
    ),
    "decline": (
        "Sorry, I can't help with that; I can only help with products, stock, orders, units and dates.",
        "I'm sorry, that is outside what I can do: I only handle products, stock, orders, units and dates.",
        "Sorry, I cannot do that. I can help with products, stock, orders, unit conversions and dates.",
        "That is not something I can help with; I can only answer questions about products, stock, orders, units and dates.",
    ),
    "price": (
        "The {name} costs {price} USD.",
        "The {name} ({sku}) is priced at {price} USD.",
        "One {name} costs ${price}.",
        "The price of the {name} is {price} USD.",
        "{name}: {price} USD.",
    ),
    "missing_product": (
        "Sorry, there is no product called {product}.",
        "I could not find a product named {product}.",
        "The {product} is not in our catalogue.",
        "We do not carry the {product}: the catalogue has no product with that name.",
    ),
    "stock": (
        "Stock of {sku} in {city}: {units} units.",
        "There are {units} units of {sku} in stock in {city}.",
        "The {city} warehouse has {units} units of {sku}.",
        "{city} holds {units} units of {sku}.",
    ),
    "order_status": (
        "Order {order_id} is {status}.",
        "The status of order {order_id} is: {status}.",
        "Order {order_id} has the status {status}.",
        "Your order {order_id} is {status}.",
    ),
    "convert": (
        "{value} {from_symbol} is {result} {to_symbol}.",
        "{value} {from_symbol} = {result} {to_symbol}.",
        "That is {result} {to_symbol}.",
        "{value} {from_symbol} converts to {result} {to_symbol}.",
    ),
    "date_shift": (
        "The date is {result}.",
        "{abs_days} days {direction} {date} is {result}.",
        "{result} is {abs_days} days {direction} {date}.",
        "It is {result}.",
    ),
    "stock_by_name": (
        "Stock of the {name} in {city}: {units} units.",
        "The {city} warehouse has {units} units of the {name} ({sku}).",
        "There are {units} units of the {name} in {city}.",
        "{city} has {units} units of the {name} in stock.",
    ),
    "weight_lb": (
        "The {name} weighs {pounds} lb.",
        "One {name} weighs {pounds} lb ({weight_kg} kg).",
        "The {name} weighs {pounds} pounds.",
        "In pounds, the {name} weighs {pounds} lb.",
    ),
    "order_total": (
        "Order {order_id} costs {total} USD in total.",
        "The total for order {order_id} is {total} USD.",
        "Order {order_id} ({quantity} units at {price} USD each) comes to {total} USD.",
        "Order {order_id} totals ${total}.",
    ),
    "ship_date": (
        "Order {order_id} arrives on {result}.",
        "Order {order_id} was placed on {date}, so it arrives on {result}.",
        "It arrives on {result}, {days} days after {date}.",
        "The arrival date of order {order_id} is {result}.",
    ),
    "stock_value": (
        "The {name} stock in {city} and {city2} is worth {value} USD.",
        # Per-city units, not their sum: every number an answer states is one a tool returned.
        "{city} and {city2} hold {units1} and {units2} units of the {name} at {price} USD each, worth {value} USD.",
        "Together, {city} ({units1} units) and {city2} ({units2} units) hold {value} USD of the {name}.",
        "All {name} inventory in {city} plus {city2} is worth ${value}.",
    ),
    "order_weight_lb": (
        "Order {order_id} weighs {pounds} lb.",
        "Order {order_id} weighs {pounds} lb in total ({kilograms} kg).",
        "The shipping weight of order {order_id} is {pounds} pounds.",
        "Order {order_id}: {quantity} units at {weight_kg} kg each, {pounds} lb in total.",
    ),
    "stock_after_order": (
        "{city} will have {left} units left.",
        "After order {order_id} ships, {city} has {left} units left.",
        "{city} has {units} units; after the {quantity} units of order {order_id}, {left} units remain.",
        "The {city} warehouse keeps {left} units after filling order {order_id}.",
    ),
}

# Alternative valid plans: each is one option a trajectory may draw; all give the same facts.
PLANS: dict[str, list[dict[str, Any]]] = {
    "stock_value": [{"swap": swap, "parallel": parallel, "price_first": price_first}
                    for swap in (False, True) for parallel in (False, True) for price_first in (True, False)],
    "order_total": [{"price_first": True}, {"price_first": False}],
    "order_weight_lb": [{"weight_first": True}, {"weight_first": False}],
}


class _Script:
    """Builds one trajectory step by step, running each call for real, with seeded phrasing."""

    def __init__(self, task: Task, tools: ToolBox, rng: random.Random):
        self.tools = tools
        self.rng = rng
        self.family = task.metadata["family"]
        self.silent = rng.random() < SILENT_SHARE
        self.trajectory = Trajectory(
            task_id=task.id,
            query=task.query,
            system=task.system if task.system is not None else SYSTEM_PROMPT,
            tools=tools.specs,
            model=EXPERT_MODEL,
            tags=list(task.tags),
            metadata=dict(task.metadata),
        )

    def say(self, step: str, **fields: Any) -> str:
        """The reasoning line before a step's calls: empty in a silent trajectory, else one phrasing."""
        choice = self.rng.choice(REASONING[(self.family, step)])
        return "" if self.silent else choice.format(**fields)

    def calls(self, reasoning: str, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
        """One step: a reasoning line and one or more tool calls; returns the parsed results."""
        index = len(self.trajectory.steps)
        tool_calls = [ToolCall(id=f"call_{index}_{i}" if len(calls) > 1 else f"call_{index}", name=name, arguments=args)
                      for i, (name, args) in enumerate(calls)]
        results = [self.tools.run(call, inline=True) for call in tool_calls]
        self.trajectory.steps.append(
            Step(text=reasoning, tool_calls=tool_calls, tool_results=results, stop_reason="tool_use",
                 model=EXPERT_MODEL, producer=EXPERT_MODEL)
        )
        return [_parse(result) for result in results]

    def call(self, reasoning: str, name: str, **arguments: Any) -> Any:
        return self.calls(reasoning, (name, arguments))[0]

    def answer(self, **fields: Any) -> None:
        text = self.rng.choice(ANSWERS[self.family]).format(**fields)
        self.trajectory.steps.append(Step(text=text, stop_reason="end_turn", model=EXPERT_MODEL, producer=EXPERT_MODEL))


def _parse(result: Any) -> Any:
    if result.is_error:
        return None
    try:
        return json.loads(result.content)
    except json.JSONDecodeError:
        return result.content  # add_days returns a bare date


def _solve_steps(s: _Script, family: str, e: dict[str, Any], plan: dict[str, Any]) -> None:
    if family in ("smalltalk", "decline"):
        return s.answer()
    if family in ("price", "missing_product"):
        product = s.call(s.say("product", product=e["product"]), "get_product", product=e["product"])
        if product is None:
            return s.answer(product=e["product"])
        return s.answer(name=product["name"], sku=product["sku"], price=product["price"])
    if family == "stock":
        sku = _sku_in(s.trajectory.query)  # this family names the SKU in the question
        stock = s.call(s.say("stock", sku=sku, city=e["city"]), "get_stock", sku=sku, city=e["city"])
        return s.answer(sku=sku, city=e["city"], units=stock["units"])
    if family == "order_status":
        order = s.call(s.say("order", order_id=e["order_id"]), "get_order", order_id=e["order_id"])
        return s.answer(order_id=e["order_id"], status=order["status"])
    if family == "convert":
        symbols = {"from_symbol": unit_symbol(e["from_unit"]), "to_symbol": unit_symbol(e["to_unit"])}
        value = s.call(s.say("convert", value=e["value"], **symbols), "convert_units", value=e["value"],
                       from_unit=e["from_unit"], to_unit=e["to_unit"])
        return s.answer(value=e["value"], result=value, **symbols)
    if family == "date_shift":
        date = s.call(s.say("add", date=e["date"], days=e["days"]), "add_days", date=e["date"], days=e["days"])
        return s.answer(result=date, date=e["date"], abs_days=abs(e["days"]),
                        direction="after" if e["days"] > 0 else "before")
    if family == "stock_by_name":
        product = s.call(s.say("product", product=e["product"]), "get_product", product=e["product"])
        stock = s.call(s.say("stock", city=e["city"], sku=product["sku"]), "get_stock", sku=product["sku"],
                       city=e["city"])
        return s.answer(name=product["name"], sku=product["sku"], city=e["city"], units=stock["units"])
    if family == "weight_lb":
        product = s.call(s.say("product", product=e["product"]), "get_product", product=e["product"])
        pounds = s.call(s.say("convert", weight_kg=product["weight_kg"]), "convert_units", value=product["weight_kg"],
                        from_unit="kg", to_unit="lb")
        return s.answer(name=product["name"], pounds=pounds, weight_kg=product["weight_kg"])
    if family == "order_total":
        order = s.call(s.say("order", order_id=e["order_id"]), "get_order", order_id=e["order_id"])
        product = s.call(s.say("product", sku=order["sku"]), "get_product", product=order["sku"])
        price, quantity = product["price"], order["quantity"]
        expression = f"{price} * {quantity}" if plan["price_first"] else f"{quantity} * {price}"
        total = s.call(s.say("calculate", price=price, quantity=quantity), "calculate", expression=expression)
        return s.answer(order_id=e["order_id"], total=total, quantity=quantity, price=price)
    if family == "ship_date":
        order = s.call(s.say("order", order_id=e["order_id"]), "get_order", order_id=e["order_id"])
        date = s.call(s.say("add", days=e["days"], date=order["date"]), "add_days", date=order["date"], days=e["days"])
        return s.answer(order_id=e["order_id"], result=date, date=order["date"], days=e["days"])
    if family == "stock_value":
        product = s.call(s.say("product", product=e["product"]), "get_product", product=e["product"])
        cities = [e["city"], e["city2"]][:: -1 if plan["swap"] else 1]
        if plan["parallel"]:
            first, second = s.calls(s.say("stocks", city=cities[0], city2=cities[1]),
                                    *[("get_stock", {"sku": product["sku"], "city": c}) for c in cities])
        else:
            first = s.call(s.say("stock", city=cities[0]), "get_stock", sku=product["sku"], city=cities[0])
            second = s.call(s.say("stock", city=cities[1]), "get_stock", sku=product["sku"], city=cities[1])
        units = f"({first['units']} + {second['units']})"
        expression = f"{product['price']} * {units}" if plan["price_first"] else f"{units} * {product['price']}"
        value = s.call(s.say("calculate"), "calculate", expression=expression)
        by_city = dict(zip(cities, (first["units"], second["units"])))
        return s.answer(name=product["name"], city=e["city"], city2=e["city2"], value=value, price=product["price"],
                        units1=by_city[e["city"]], units2=by_city[e["city2"]])
    if family == "order_weight_lb":
        order = s.call(s.say("order", order_id=e["order_id"]), "get_order", order_id=e["order_id"])
        product = s.call(s.say("product", sku=order["sku"]), "get_product", product=order["sku"])
        weight, quantity = product["weight_kg"], order["quantity"]
        expression = f"{weight} * {quantity}" if plan["weight_first"] else f"{quantity} * {weight}"
        kilograms = s.call(s.say("calculate", quantity=quantity, weight_kg=weight), "calculate", expression=expression)
        pounds = s.call(s.say("convert", kilograms=kilograms), "convert_units", value=kilograms, from_unit="kg",
                        to_unit="lb")
        return s.answer(order_id=e["order_id"], pounds=pounds, kilograms=kilograms, quantity=quantity,
                        weight_kg=weight)
    if family == "stock_after_order":
        order = s.call(s.say("order", order_id=e["order_id"]), "get_order", order_id=e["order_id"])
        stock = s.call(s.say("stock", city=order["city"], sku=order["sku"]), "get_stock", sku=order["sku"],
                       city=order["city"])
        left = s.call(s.say("calculate", units=stock["units"], quantity=order["quantity"]), "calculate",
                      expression=f"{stock['units']} - {order['quantity']}")
        return s.answer(city=order["city"], left=left, order_id=e["order_id"], units=stock["units"],
                        quantity=order["quantity"])
    raise ValueError(f"the expert has no plan for family {family!r}")


def _sku_in(text: str) -> str:
    start = text.index("SKU-")
    return text[start : start + 8]


def _rng(task: Task, sample: int) -> random.Random:
    return random.Random(f"distillery-world-expert:{task.id}:{task.query}:{sample}")


def _run(task: Task, tools: ToolBox | None, rng: random.Random, plan: dict[str, Any]) -> Trajectory:
    split = task.metadata.get("split")
    script = _Script(task, tools or toolbox(split if split in ("train", "validation", "test") else None), rng)
    _solve_steps(script, task.metadata["family"], task.metadata["entities"], plan)
    trajectory = script.trajectory
    trajectory.outcome = task.check(trajectory.final_answer)
    return trajectory


def solve(task: Task, tools: ToolBox | None = None, *, sample: int = 0) -> Trajectory:
    """A gold trajectory for a world task (model "world:expert"), judged by the task's checker.

    Deterministic for a task and `sample`; different samples draw phrasing and plan afresh (what a
    collector taking k teacher samples per task sees). The tools default to a toolbox sealed to
    the task's split (`metadata["split"]`).
    """
    rng = _rng(task, sample)
    plan = rng.choice(PLANS.get(task.metadata["family"], [{}]))
    return _run(task, tools, rng, plan)


def solve_samples(task: Task, k: int, tools: ToolBox | None = None) -> list[Trajectory]:
    """`k` expert samples for a task: `solve(task, sample=i)` for i in 0..k-1."""
    return [solve(task, tools, sample=i) for i in range(k)]


def reference_plans(task: Task, tools: ToolBox | None = None) -> list[list[ToolCall]]:
    """Every valid plan for a task, as its flat list of calls (what evaluation compares a model's calls to)."""
    plans, seen = [], set()
    for plan in PLANS.get(task.metadata["family"], [{}]):
        calls = _run(task, tools, _rng(task, 0), plan).tool_calls
        signature = tuple(call.canonical() for call in calls)
        if signature not in seen:
            seen.add(signature)
            plans.append(calls)
    return plans
