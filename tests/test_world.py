"""The offline world: tasks, splits, tools, checkers, expert, tokenizer and the bundled teacher."""

from __future__ import annotations

import json

import pytest

from distillery.formats import hermes
from distillery.models import load_model
from distillery.tasks import Task, load_tasks
from distillery.trajectory import Message, ToolCall
from distillery.world import SYSTEM_PROMPT
from distillery.world.db import CITIES, get_db
from distillery.world.evaluate import evaluate_model, matched_prefix
from distillery.world.expert import solve
from distillery.world.models import TEACHER_DIR, load_world_tokenizer
from distillery.world.tasks import FAMILIES, TIERS, generate_tasks, split_of
from distillery.world.tools import TOOLS, toolbox


def run_tool(name: str, **arguments):
    return toolbox().run(ToolCall(name=name, arguments=arguments))


# ---- tasks and splits --------------------------------------------------------------------------


def test_generation_is_deterministic_per_seed():
    first = generate_tasks("test", 40, seed=3)
    again = generate_tasks("test", 40, seed=3)
    other = generate_tasks("test", 40, seed=4)
    assert [t.model_dump() for t in first] == [t.model_dump() for t in again]
    assert [t.query for t in first] != [t.query for t in other]


def test_tasks_carry_family_tier_checker_and_system_prompt():
    tasks = generate_tasks("train", 400, seed=0)
    assert {t.metadata["tier"] for t in tasks} == set(TIERS)
    assert {t.metadata["family"] for t in tasks} == set(FAMILIES)
    for task in tasks:
        assert task.metadata["family"] in task.tags and f"tier:{task.metadata['tier']}" in task.tags
        assert task.checker in ("money", "count", "quantity", "date", "status", "not_found", "mentions", "refusal")
        assert task.system == SYSTEM_PROMPT and task.metadata["split"] == "train"
    hard = [t for t in tasks if t.metadata["tier"] == "hard"]
    assert all(t.metadata["expert_calls"] >= 3 for t in hard)


def test_splits_hold_disjoint_entity_combinations():
    keys = {}
    for split in ("train", "validation", "test"):
        tasks = generate_tasks(split, 600, seed=0)
        keys[split] = {FAMILIES[t.metadata["family"]].key(t.metadata["entities"]) for t in tasks}
        assert all(split_of(key) == split for key in keys[split])
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]


def test_restricting_families_and_bad_split_name():
    tasks = generate_tasks("validation", 20, seed=0, families=["price", "order_total"])
    assert {t.metadata["family"] for t in tasks} <= {"price", "order_total"}
    with pytest.raises(Exception, match="unknown split"):
        generate_tasks("dev", 3)  # type: ignore[arg-type]


# ---- the expert --------------------------------------------------------------------------------


def test_expert_solves_every_task_with_the_planned_number_of_calls():
    tasks = generate_tasks("test", 300, seed=11) + generate_tasks("train", 300, seed=11)
    for task in tasks:
        gold = solve(task)
        assert gold.outcome.success, (task.query, task.expected, gold.final_answer)
        assert len(gold.tool_calls) == task.metadata["expert_calls"]
        assert not any(r.is_error for s in gold.steps for r in s.tool_results) or task.metadata["family"] == "missing_product"
        assert gold.model == "world:expert" and gold.steps[-1].text


def test_gold_trajectory_round_trips_and_feeds_later_arguments_from_results():
    task = generate_tasks("test", 1, seed=0, families=["order_weight_lb"])[0]
    gold = solve(task)
    assert type(gold).model_validate_json(gold.model_dump_json()) == gold
    order = get_db().order(task.metadata["entities"]["order_id"])
    # The second call's SKU was read from the first call's result, not from the question.
    assert order.sku not in task.query and gold.tool_calls[1].arguments == {"product": order.sku}


# ---- checkers ----------------------------------------------------------------------------------


def _task(family: str) -> Task:
    return generate_tasks("test", 1, seed=5, families=[family])[0]


def test_count_checker_reads_the_count_not_the_sku():
    task = _task("stock")
    sku = task.query[task.query.index("SKU-") : task.query.index("SKU-") + 8]
    assert task.checker == "count"
    assert task.check(f"Stock of {sku} in Paris: {task.expected} units.").success
    assert not task.check(f"Stock of {sku} in Paris: {task.expected + 1} units.").success
    assert task.check(f"{task.expected} units of {sku}").success  # the SKU is an identifier, not -2083
    assert not task.check("I don't know.").success
    assert not task.check(None).success


def test_numeric_checker_tolerance_and_thousands_separators():
    task = Task(id="t", query="q", expected=23253.12, checker="numeric", tolerance=1e-3)
    assert task.check("worth 23,253.12 USD").success
    assert task.check("worth 23253.1 USD").success
    assert not task.check("worth 23353.12 USD").success


def test_date_status_and_decline_checkers():
    date_task = _task("date_shift")
    assert date_task.check(f"The date is {date_task.expected}.").success
    assert not date_task.check("The date is 1999-01-01.").success
    status = _task("order_status")
    assert status.check(f"Order X is {status.expected.upper()}.").success
    decline = _task("decline")
    assert decline.check("Sorry, I can't help with that.").success
    assert not decline.check("It will be sunny.").success
    missing = _task("missing_product")
    assert missing.check(f"Sorry, there is no product called {missing.metadata['entities']['product']}.").success
    assert not missing.check("It costs 12 USD.").success


# ---- tools -------------------------------------------------------------------------------------


def test_tools_compute_real_results():
    product = get_db().products[0]
    assert json.loads(run_tool("get_product", product=product.name.upper()).content)["sku"] == product.sku
    units = json.loads(run_tool("get_stock", sku=product.sku, city="paris").content)["units"]
    assert units == get_db().stock[(product.sku, "Paris")]
    assert run_tool("calculate", expression="12.5 * (3 + 4)").content == "87.5"
    assert run_tool("calculate", expression="10 / 4").content == "2.5"
    assert run_tool("convert_units", value=10, from_unit="kg", to_unit="lb").content == "22.05"
    assert run_tool("convert_units", value=100, from_unit="c", to_unit="f").content == "212"
    assert run_tool("add_days", date="2024-02-28", days=2).content == "2024-03-01"
    assert run_tool("add_days", date="2024-03-01", days=-1).content == "2024-02-29"
    assert len(TOOLS) >= 4 and len(CITIES) >= 20


@pytest.mark.parametrize(
    "name, arguments, message",
    [
        ("get_product", {"product": "Golden Teapot"}, "no product named"),
        ("get_stock", {"sku": "SKU-0000", "city": "Berlin"}, "unknown SKU"),
        ("get_stock", {"sku": "SKU-0000"}, "'city' is a required property"),
        ("get_order", {"order_id": 42}, "is not of type 'string'"),
        ("calculate", {"expression": "__import__('os').system('true')"}, "only numbers"),
        ("calculate", {"expression": "2 ** 999999"}, "only numbers"),
        ("calculate", {"expression": "1 / 0"}, "division by zero"),
        ("calculate", {"expression": "3 +"}, "cannot parse"),
        ("convert_units", {"value": 1, "from_unit": "kg", "to_unit": "km"}, "different kinds"),
        ("convert_units", {"value": 1, "from_unit": "stone", "to_unit": "kg"}, "unknown unit 'stone'"),
        ("add_days", {"date": "next Tuesday", "days": 3}, "not a YYYY-MM-DD date"),
        ("no_such_tool", {}, "unknown tool"),
    ],
)
def test_tools_turn_bad_arguments_into_clear_error_results(name, arguments, message):
    result = run_tool(name, **arguments)
    assert result.is_error and message in result.content


def test_stock_names_known_warehouses_when_the_city_is_wrong():
    result = run_tool("get_stock", sku=get_db().products[0].sku, city="Atlantis")
    assert result.is_error and "Berlin" in result.content


# ---- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_round_trips_rendered_transcripts_and_splits_digits():
    tokenizer = load_world_tokenizer()
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template == hermes.HERMES_CHAT_TEMPLATE
    for task in generate_tasks("test", 30, seed=2):
        gold = solve(task)
        text = tokenizer.apply_chat_template(
            hermes.to_hf_messages(gold.messages()), tools=hermes.to_hf_tools(gold.tools), tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("ORD-12345 costs 987.65", add_special_tokens=False)["input_ids"])
    for digit in "1234598765":
        assert digit in pieces
    assert all(not (any(c.isdigit() for c in p) and len(p) > 1) for p in pieces)


def test_city_names_are_one_token_in_every_context():
    tokenizer = load_world_tokenizer()
    for city in CITIES:
        ids = {tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in (city, f'"city": "{city}"', f" in {city}?")}
        city_ids = tokenizer(city, add_special_tokens=False)["input_ids"]
        assert len(city_ids) == 1 and all(city_ids[0] in seq for seq in ids)


@pytest.mark.parametrize("prefix", ["SKU-", "ORD-"])
def test_an_id_prefix_is_one_token_in_every_context(prefix):
    # The digits of an id are copied from the question or a tool result into a call: the token
    # before them must be the same wherever the id appears, or the copy has nothing to key on.
    tokenizer = load_world_tokenizer()
    [prefix_id] = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    key = "sku" if prefix == "SKU-" else "order_id"
    for text in (f"Is {prefix}4821 in stock?", f'{{"{key}": "{prefix}4821"}}', f'"arguments": {{"{key}": "{prefix}4821", "city": "Oslo"}}',
                 f"order {prefix}4821.", f"({prefix}4821)"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        first_digit = tokenizer.convert_ids_to_tokens(ids).index("4")
        assert ids[first_digit - 1] == prefix_id, (text, tokenizer.convert_ids_to_tokens(ids))


def test_rendered_tool_call_is_parsed_back_by_the_hf_provider():
    from distillery.models.hf import HFModel
    from distillery.world.models import build_student

    model = HFModel("world:student-xs", model=build_student("student-xs"), tokenizer=load_world_tokenizer(), uri="world:student-xs")
    task = _task("stock_value")
    gold = solve(task)
    messages = [Message(role="system", content=task.system), Message(role="user", content=task.query)]
    first = gold.steps[0]
    completion = model.render_completion(messages, gold.tools, first)
    assert completion.startswith(first.text) and "<tool_call>" in completion
    content, calls = hermes.parse_tool_calls(completion)
    assert content == first.text
    assert [c.canonical() for c in calls] == [c.canonical() for c in first.tool_calls]
    # The prompt the provider renders is the Qwen/Hermes layout, with every world tool in it.
    prompt = model.render_prompt(messages, gold.tools)
    assert prompt.endswith("<|im_start|>assistant\n") and all(f'"name": "{t.name}"' in prompt for t in TOOLS)


def test_student_uris_are_fresh_models_of_the_shipped_sizes():
    def size(m):
        return sum(p.numel() for p in m.model.parameters())

    from distillery.world.models import build_student

    teacher_params = sum(p.numel() for p in build_student("teacher").parameters())  # same config as the shipped one
    small, tiny = load_model("world:student-s"), load_model("world:student-xs")
    assert 3 <= teacher_params / size(small) <= 6
    assert 12 <= teacher_params / size(tiny) <= 20
    assert small.uri == "world:student-s"
    with pytest.raises(Exception, match="unknown world model"):
        load_model("world:professor")


# ---- the bundled teacher -----------------------------------------------------------------------

# Nine fixed held-out tasks covering every tier (the first test-split task, seed 0, of each family).
# The shipped teacher solved all nine when it was committed (stock, ship_date and
# stock_after_order are the families the first teacher failed: they need a city or a day count
# found in the query by content); one miss is tolerated so that a different CPU's float rounding
# under greedy decoding does not make the test flaky.
TEACHER_SAMPLE = ["price", "stock", "order_status", "stock_by_name", "ship_date", "order_total",
                  "stock_after_order", "order_weight_lb", "decline"]


@pytest.mark.skipif(not (TEACHER_DIR / "model.safetensors").is_file(), reason="bundled teacher not built")
def test_bundled_teacher_solves_a_fixed_held_out_sample_offline():
    tasks = [generate_tasks("test", 1, seed=0, families=[family])[0] for family in TEACHER_SAMPLE]
    teacher = load_model("world:teacher")
    report, trajectories = evaluate_model(teacher, tasks, max_steps=6)
    assert teacher.uri == "world:teacher"
    assert report["success"] >= 8 / 9, [t.final_answer for t in trajectories]
    assert report["by_tier"]["none"]["success"] == 1.0
    for trajectory, task in zip(trajectories, tasks):
        if trajectory.outcome.success and task.metadata["tier"] != "none":
            assert matched_prefix(trajectory, solve(task)) >= 1  # it got there by calling the tools


def test_generate_command_writes_a_loadable_task_file(tmp_path):
    from typer.testing import CliRunner

    from distillery.cli import app

    out = tmp_path / "tasks.jsonl"
    result = CliRunner().invoke(app, ["world", "generate", "--split", "validation", "--n", "12", "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded = load_tasks(out)
    assert [t.id for t in loaded] == [t.id for t in generate_tasks("validation", 12)]
    assert all(t.check(solve(t).final_answer).success for t in loaded)
