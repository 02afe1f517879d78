"""The expert: a scripted solver that writes gold trajectories for every world task.

It follows each family's plan, runs the real tools through a `ToolBox`, and reads every value it
passes on (a SKU, a price, a date) out of the tool results, the way a model has to. Each step has
a short reasoning line, so the trajectories teach "think, call, read, answer". It solves every
task by construction; a test holds it to that.
"""

from __future__ import annotations

import json
from typing import Any

from distillery.tasks import Task
from distillery.tools import ToolBox
from distillery.trajectory import Step, ToolCall, Trajectory
from distillery.world import SYSTEM_PROMPT
from distillery.world.tasks import CAPABILITIES_ANSWER, DECLINE_ANSWER
from distillery.world.tools import toolbox

EXPERT_MODEL = "world:expert"


class _Script:
    """Builds one trajectory step by step, running each call for real."""

    def __init__(self, task: Task, tools: ToolBox):
        self.tools = tools
        self.trajectory = Trajectory(
            task_id=task.id,
            query=task.query,
            system=task.system if task.system is not None else SYSTEM_PROMPT,
            tools=tools.specs,
            model=EXPERT_MODEL,
            tags=list(task.tags),
            metadata=dict(task.metadata),
        )

    def call(self, reasoning: str, name: str, **arguments: Any) -> Any:
        """One step: a reasoning line and one tool call; returns the parsed result."""
        index = len(self.trajectory.steps)
        call = ToolCall(id=f"call_{index}", name=name, arguments=arguments)
        result = self.tools.run(call)
        self.trajectory.steps.append(
            Step(text=reasoning, tool_calls=[call], tool_results=[result], stop_reason="tool_use",
                 model=EXPERT_MODEL, producer=EXPERT_MODEL)
        )
        if result.is_error:
            return None
        try:
            return json.loads(result.content)
        except json.JSONDecodeError:
            return result.content  # add_days returns a bare date

    def answer(self, text: str) -> None:
        self.trajectory.steps.append(Step(text=text, stop_reason="end_turn", model=EXPERT_MODEL, producer=EXPERT_MODEL))


def _solve_steps(s: _Script, family: str, e: dict[str, Any]) -> None:
    if family == "smalltalk":
        return s.answer(CAPABILITIES_ANSWER)
    if family == "decline":
        return s.answer(DECLINE_ANSWER)
    if family in ("price", "missing_product"):
        product = s.call("I will look up the product.", "get_product", product=e["product"])
        if product is None:
            return s.answer(f"Sorry, there is no product called {e['product']}.")
        return s.answer(f"The {product['name']} costs {product['price']} USD.")
    if family == "stock":
        sku = _sku_in(s.trajectory.query)  # this family names the SKU in the question
        stock = s.call("I will check the stock.", "get_stock", sku=sku, city=e["city"])
        return s.answer(f"Stock of {sku} in {e['city']}: {stock['units']} units.")
    if family == "order_status":
        order = s.call("I will look up the order.", "get_order", order_id=e["order_id"])
        return s.answer(f"Order {e['order_id']} is {order['status']}.")
    if family == "convert":
        value = s.call("I will convert the units.", "convert_units", value=e["value"],
                       from_unit=e["from_unit"], to_unit=e["to_unit"])
        return s.answer(f"{e['value']} {e['from_unit']} is {value} {e['to_unit']}.")
    if family == "date_shift":
        date = s.call("I will add the days.", "add_days", date=e["date"], days=e["days"])
        return s.answer(f"The date is {date}.")
    if family == "stock_by_name":
        product = s.call("I need the product's SKU first.", "get_product", product=e["product"])
        stock = s.call(f"Now I check the stock in {e['city']}.", "get_stock", sku=product["sku"], city=e["city"])
        return s.answer(f"Stock of the {product['name']} in {e['city']}: {stock['units']} units.")
    if family == "weight_lb":
        product = s.call("I need the product's weight.", "get_product", product=e["product"])
        pounds = s.call("Now I convert kg to lb.", "convert_units", value=product["weight_kg"], from_unit="kg", to_unit="lb")
        return s.answer(f"The {product['name']} weighs {pounds} lb.")
    if family == "order_total":
        order = s.call("I need the order first.", "get_order", order_id=e["order_id"])
        product = s.call("Now the product's price.", "get_product", product=order["sku"])
        total = s.call("Multiply price by quantity.", "calculate",
                       expression=f"{product['price']} * {order['quantity']}")
        return s.answer(f"Order {e['order_id']} costs {total} USD in total.")
    if family == "ship_date":
        order = s.call("I need the order date first.", "get_order", order_id=e["order_id"])
        date = s.call(f"Now I add {e['days']} days.", "add_days", date=order["date"], days=e["days"])
        return s.answer(f"Order {e['order_id']} arrives on {date}.")
    if family == "stock_value":
        product = s.call("I need the product's SKU and price.", "get_product", product=e["product"])
        first = s.call(f"Stock in {e['city']}.", "get_stock", sku=product["sku"], city=e["city"])
        second = s.call(f"Stock in {e['city2']}.", "get_stock", sku=product["sku"], city=e["city2"])
        value = s.call("Multiply the price by the total units.", "calculate",
                       expression=f"{product['price']} * ({first['units']} + {second['units']})")
        return s.answer(f"The {product['name']} stock in {e['city']} and {e['city2']} is worth {value} USD.")
    if family == "order_weight_lb":
        order = s.call("I need the order first.", "get_order", order_id=e["order_id"])
        product = s.call("Now the product's weight.", "get_product", product=order["sku"])
        kilograms = s.call("Multiply weight by quantity.", "calculate",
                           expression=f"{product['weight_kg']} * {order['quantity']}")
        pounds = s.call("Now I convert kg to lb.", "convert_units", value=kilograms, from_unit="kg", to_unit="lb")
        return s.answer(f"Order {e['order_id']} weighs {pounds} lb.")
    if family == "stock_after_order":
        order = s.call("I need the order first.", "get_order", order_id=e["order_id"])
        stock = s.call(f"Now the stock in {order['city']}.", "get_stock", sku=order["sku"], city=order["city"])
        left = s.call("Subtract the order quantity.", "calculate", expression=f"{stock['units']} - {order['quantity']}")
        return s.answer(f"{order['city']} will have {left} units left.")
    raise ValueError(f"the expert has no plan for family {family!r}")


def _sku_in(text: str) -> str:
    start = text.index("SKU-")
    return text[start : start + 8]


def solve(task: Task, tools: ToolBox | None = None) -> Trajectory:
    """A gold trajectory for a world task (model "world:expert"), judged by the task's checker."""
    script = _Script(task, tools or toolbox())
    _solve_steps(script, task.metadata["family"], task.metadata["entities"])
    trajectory = script.trajectory
    trajectory.outcome = task.check(trajectory.final_answer)
    return trajectory
