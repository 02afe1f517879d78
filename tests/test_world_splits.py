"""World v2's sealed splits: entities never cross train / validation / test, in queries or tool results.

The main test draws 20,000 tasks per split (four seeds of 5,000), solves each with the expert, and
reads every product, SKU, order id and unknown-product name out of the query, the expert's text,
its tool calls and its tool results. Every entity a split's tasks show must be that split's own, so
the three sets are disjoint; so are the canonical task keys and the conversion and date facts the
tasks compute.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest

from distillery.trajectory import ToolCall
from distillery.world.db import ADJECTIVES, CITIES, NOUNS, SPLITS, get_db
from distillery.world.expert import solve
from distillery.world.tasks import FAMILIES, canonical_key, generate_tasks, split_of
from distillery.world.tools import toolbox

SEEDS = (0, 1, 2, 3)
PER_SEED = 5_000  # 20,000 tasks per split

_ENTITY = re.compile(
    r"\bSKU-\d{4}\b|\bORD-\d{5}\b|\b(?:" + "|".join(ADJECTIVES) + r") (?:" + "|".join(NOUNS) + r")(?=s?\b)"
)


def _facts(calls: list[ToolCall]) -> set[tuple]:
    """The generic facts a trajectory computes: conversions and date shifts, canonical."""
    out = set()
    for call in calls:
        if call.name == "convert_units":
            a = call.arguments
            out.add(canonical_key(("convert_units", a["value"], a["from_unit"].lower(), a["to_unit"].lower())))
        elif call.name == "add_days":
            out.add(canonical_key(("add_days", call.arguments["date"], call.arguments["days"])))
    return out


@pytest.fixture(scope="module")
def observed():
    started = time.perf_counter()
    seen = {split: {"entities": Counter(), "keys": set(), "facts": set(), "tasks": 0} for split in SPLITS}
    for split in SPLITS:
        for seed in SEEDS:
            for task in generate_tasks(split, PER_SEED, seed=seed):
                gold = solve(task)
                assert gold.outcome.success, (task.query, gold.final_answer, gold.outcome.detail)
                texts = [task.query]
                for step in gold.steps:
                    texts.append(step.text)
                    texts += [json.dumps(call.arguments) for call in step.tool_calls]
                    texts += [result.content for result in step.tool_results]
                for text in texts:
                    seen[split]["entities"].update(_ENTITY.findall(text))
                seen[split]["keys"].add(tuple(task.metadata["key"]))
                seen[split]["facts"] |= _facts(gold.tool_calls)
                seen[split]["tasks"] += 1
    seen["seconds"] = time.perf_counter() - started
    return seen


def test_no_entity_key_or_fact_crosses_splits_over_20000_tasks_per_split(observed):
    db = get_db()
    for split in SPLITS:
        assert observed[split]["tasks"] == len(SEEDS) * PER_SEED >= 20_000
        foreign = {e: db.split_of_entity(e) for e in observed[split]["entities"] if db.split_of_entity(e) != split}
        assert not foreign, f"{split} tasks show other splits' entities: {list(foreign.items())[:5]}"
        assert all(split_of(key) == split for key in observed[split]["keys"])
        assert all(split_of(fact) == split for fact in observed[split]["facts"])
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        for what in ("entities", "keys", "facts"):
            shared = set(observed[a][what]) & set(observed[b][what])
            assert not shared, f"{a} and {b} share {what}: {sorted(shared)[:5]}"
    print(f"\nsplit disjointness: {sum(observed[s]['tasks'] for s in SPLITS)} tasks solved and read in "
          f"{observed['seconds']:.1f} s; distinct entities / task keys / facts: "
          + ", ".join(f"{s} {len(observed[s]['entities'])} / {len(observed[s]['keys'])} / {len(observed[s]['facts'])}"
                      for s in SPLITS))


def test_held_out_splits_are_drawn_alike_and_cover_their_pools(observed):
    db = get_db()
    for split in ("validation", "test"):
        entities = set(observed[split]["entities"])
        products = {p.name for p in db.products_in(split)}
        orders = {o.order_id for o in db.orders_in(split)}
        # 20,000 tasks reach (nearly) every product and order of the split: no small fixed pool.
        assert len(products & entities) >= 0.95 * len(products)
        assert len(orders & entities) >= 0.95 * len(orders)
    assert len(db.products_in("validation")) == len(db.products_in("test"))
    assert len(db.orders_in("validation")) == len(db.orders_in("test"))
    sizes = {s: len(observed[s]["keys"]) for s in ("validation", "test")}
    assert abs(sizes["validation"] - sizes["test"]) <= 0.1 * sizes["test"]


def test_catalogue_size_and_orders_hold_only_their_own_splits_products():
    db = get_db()
    assert len(db.products) >= 500 and len(db.orders) >= 2_000 and len(CITIES) >= 20
    assert len({p.sku for p in db.products}) == len(db.products)
    assert len({p.price for p in db.products}) == len(db.products)  # a price names one product
    assert len({p.weight_kg for p in db.products}) == len(db.products)
    for order in db.orders:
        assert db.product_by_sku(order.sku).split == order.split
        assert db.day_split[order.date] == order.split
    assert {p.split for p in db.products} == set(SPLITS) == {o.split for o in db.orders}


def test_keys_are_canonical_so_266_and_266_point_0_are_one_task():
    assert canonical_key(("convert_units", 266.0, "kg", "lb")) == canonical_key(("convert_units", 266, "kg", "lb"))
    assert split_of(("convert_units", 266.0, "kg", "lb")) == split_of(("convert_units", 266, "kg", "lb"))
    assert split_of(("price", "  Nova   Lamp ")) == split_of(("price", "Nova Lamp"))
    for split in SPLITS:
        for task in generate_tasks(split, 300, seed=9, families=["convert"]):
            value = task.metadata["entities"]["value"]
            assert not (isinstance(value, float) and value.is_integer())
            assert f"{value}" in task.query and f"{value}.0 " not in task.query


def test_conversions_of_a_products_weight_belong_to_the_products_split():
    db = get_db()
    for product in db.products[:200]:
        assert split_of(("convert_units", product.weight_kg, "kg", "lb")) == product.split


def test_a_sealed_toolbox_finds_only_its_own_split():
    db = get_db()
    test_product, train_product = db.products_in("test")[0], db.products_in("train")[0]
    test_order = db.orders_in("test")[0]
    train_tools = toolbox("train")

    def run(tools, name, **arguments):
        return tools.run(ToolCall(name=name, arguments=arguments))

    for probe in (test_product.sku, test_product.name):
        sealed = run(train_tools, "get_product", product=probe)
        assert sealed.is_error and "no product named or numbered" in sealed.content
        assert not run(toolbox(), "get_product", product=probe).is_error  # the open shop still has it
    assert run(train_tools, "get_stock", sku=test_product.sku, city="Paris").is_error
    assert run(train_tools, "get_order", order_id=test_order.order_id).content == \
        f"Error: LookupError: no order {test_order.order_id!r}"
    assert not run(train_tools, "get_product", product=train_product.name).is_error
    assert not run(toolbox("test"), "get_order", order_id=test_order.order_id).is_error
    assert [t.spec for t in train_tools] == [t.spec for t in toolbox()]  # the model sees the same tools


def test_every_family_draws_from_every_split():
    for split in SPLITS:
        for name in FAMILIES:
            task = generate_tasks(split, 1, seed=0, families=[name])[0]
            assert split_of(tuple(task.metadata["key"])) == split == task.metadata["split"]
