"""The world's tools: ordinary `@tool` functions over the shop database.

Every result is computed (a lookup, arithmetic, a conversion, a date), never a canned string.
Numbers are rounded to 2 decimals so that a small model copies short values. Bad arguments raise
with a message that says what was wrong; `Tool.run` turns that into an error result the agent reads.
Descriptions are kept short on purpose: the `<tools>` block is rendered into every prompt.

The lookups are keyed (a product by name or SKU, stock by SKU and city, an order by id): no tool
lists the catalogue or a city's whole stock, so a task's tool results only ever hold the rows it
asked for, all of its own split. `toolbox(split)` goes further and seals a split: its lookups
find only that split's products and orders, so an agent working on train tasks cannot reach a
test row even by inventing an id. `toolbox()` (and `TOOLS`) see the whole shop.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import operator

from distillery.tools import Tool, ToolBox, tool
from distillery.world.db import CITIES, ShopDB, get_db


def _round(value: float) -> float | int:
    """2 decimals, and whole numbers without a trailing `.0`."""
    value = round(float(value), 2)
    return int(value) if value.is_integer() else value


def _lookup_product(product: str, db: ShopDB | None = None) -> dict:
    db = db or get_db()
    found = db.product_by_sku(product) or db.product_by_name(product)
    if found is None:
        raise LookupError(f"no product named or numbered {product!r}")
    return {"sku": found.sku, "name": found.name, "price": found.price, "weight_kg": found.weight_kg}


def _lookup_stock(sku: str, city: str, db: ShopDB | None = None) -> dict:
    db = db or get_db()
    product = db.product_by_sku(sku)
    if product is None:
        raise LookupError(f"unknown SKU {sku!r}")
    city_name = city.strip().title()
    if city_name not in CITIES:
        raise LookupError(f"no warehouse in {city!r}; warehouses: {', '.join(CITIES)}")
    return {"units": db.stock[(product.sku, city_name)]}


def _lookup_order(order_id: str, db: ShopDB | None = None) -> dict:
    order = (db or get_db()).order(order_id)
    if order is None:
        raise LookupError(f"no order {order_id!r}")
    return {
        "sku": order.sku,
        "quantity": order.quantity,
        "city": order.city,
        "date": order.date,
        "status": order.status,
    }


@tool
def get_product(product: str) -> dict:
    """Look up a product by name or SKU.

    Args:
        product: A product name or a SKU like "SKU-1042".
    """
    return _lookup_product(product)


@tool
def get_stock(sku: str, city: str) -> dict:
    """Units of a product in stock at a city's warehouse.

    Args:
        sku: The product's SKU.
        city: A warehouse city.
    """
    return _lookup_stock(sku, city)


@tool
def get_order(order_id: str) -> dict:
    """Look up an order.

    Args:
        order_id: An order id like "ORD-12345".
    """
    return _lookup_order(order_id)


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    """Arithmetic only: numbers, + - * / and brackets. Anything else is refused, never executed."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError("only numbers, + - * / and brackets are allowed")


@tool
def calculate(expression: str) -> float:
    """Evaluate arithmetic with + - * / and brackets.

    Args:
        expression: For example "12.5 * (3 + 4)".
    """
    try:
        tree = ast.parse(expression.replace(",", ""), mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot parse {expression!r} as arithmetic") from None
    try:
        return _round(_evaluate(tree))
    except ZeroDivisionError:
        raise ValueError("division by zero") from None


# Each unit's dimension and its size in that dimension's base unit (kg, m, l).
UNITS: dict[str, tuple[str, float]] = {
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "lb": ("mass", 0.45359237),
    "oz": ("mass", 0.028349523125),
    "km": ("length", 1000.0),
    "m": ("length", 1.0),
    "mi": ("length", 1609.344),
    "ft": ("length", 0.3048),
    "l": ("volume", 1.0),
    "ml": ("volume", 0.001),
    "gal": ("volume", 3.785411784),
}
TEMPERATURES = ("c", "f")


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    """Convert between kg, g, lb, oz, km, m, mi, ft, l, ml, gal, c, f.

    Args:
        value: The amount.
        from_unit: Unit of value.
        to_unit: Unit wanted.
    """
    source, target = from_unit.strip().lower(), to_unit.strip().lower()
    if source in TEMPERATURES and target in TEMPERATURES:
        if source == target:
            return _round(value)
        return _round(value * 9 / 5 + 32 if source == "c" else (value - 32) * 5 / 9)
    for unit in (source, target):
        if unit not in UNITS and unit not in TEMPERATURES:
            raise ValueError(f"unknown unit {unit!r}; known: {', '.join([*UNITS, *TEMPERATURES])}")
    if source in TEMPERATURES or target in TEMPERATURES or UNITS[source][0] != UNITS[target][0]:
        raise ValueError(f"cannot convert {source} to {target}: different kinds of quantity")
    return _round(value * UNITS[source][1] / UNITS[target][1])


@tool
def add_days(date: str, days: int) -> str:
    """The date a number of days after (or before, if negative) a date.

    Args:
        date: An ISO date, YYYY-MM-DD.
        days: Days to add.
    """
    try:
        start = dt.date.fromisoformat(date.strip())
    except ValueError:
        raise ValueError(f"{date!r} is not a YYYY-MM-DD date") from None
    return (start + dt.timedelta(days=days)).isoformat()


TOOLS: list[Tool] = [get_product, get_stock, get_order, calculate, convert_units, add_days]


@functools.lru_cache(maxsize=None)
def split_tools(split: str) -> list[Tool]:
    """The six tools with lookups sealed to one split: another split's rows are "not found".

    Same names, descriptions and schemas as `TOOLS` (a model sees the same prompt).
    """
    view = get_db().view(split)
    lookups = {"get_product": _lookup_product, "get_stock": _lookup_stock, "get_order": _lookup_order}
    return [Tool(functools.partial(lookups[t.name], db=view), t.spec, timeout_s=t.timeout_s) if t.name in lookups else t
            for t in TOOLS]


def toolbox(split: str | None = None) -> ToolBox:
    """A fresh `ToolBox` with every world tool, ready for `Agent(model, toolbox())`.

    With `split` ("train", "validation" or "test") the lookups see only that split's rows: use it
    to collect or evaluate on one split with the guarantee that no other split's product or order
    can appear in a tool result, whatever the model asks for.
    """
    return ToolBox(TOOLS if split is None else split_tools(split))
