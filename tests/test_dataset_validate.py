"""Each OpenAI format rule catches its own malformed case, reported as FILE:LINE: field: problem."""

from __future__ import annotations

import copy
import json

import pytest

from distillery.dataset import build_finetune_jsonl, validate_openai_jsonl
from distillery.dataset.stats import TokenCounter
from tests.test_dataset_support import varied_trajectories
from tests.tiny_models import tiny_tokenizer


@pytest.fixture(scope="module")
def good_records(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "good.jsonl"
    build_finetune_jsonl(varied_trajectories(10), path)
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(tmp_path, records, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_our_output_is_valid(tmp_path, good_records):
    report = validate_openai_jsonl(write(tmp_path, good_records))
    assert report.ok, report.lines()
    assert report.examples == 10 and len(report.token_counts) == 10


def _assistant(record, n=0):
    return [m for m in record["messages"] if m["role"] == "assistant"][n]


def _break(kind):
    """Each case corrupts example 3 (file line 4) in exactly one way."""

    def arguments_object(r):
        _assistant(r)["tool_calls"][0]["function"]["arguments"] = {"city": "Paris"}

    def arguments_not_json(r):
        _assistant(r)["tool_calls"][0]["function"]["arguments"] = '{"city": Paris'

    def arguments_schema(r):
        _assistant(r)["tool_calls"][1]["function"]["arguments"] = '{"city": "Oslo", "unit": "kelvin"}'

    def unknown_tool(r):
        _assistant(r)["tool_calls"][0]["function"]["name"] = "get_wether"

    def unanswered_call(r):
        r["messages"] = [m for m in r["messages"] if m.get("tool_call_id") != _assistant(r)["tool_calls"][1]["id"]]

    def orphan_tool_message(r):
        r["messages"][3]["tool_call_id"] = "call_nobody"

    def bad_role(r):
        r["messages"][1]["role"] = "human"

    def unknown_message_key(r):
        r["messages"][1]["tool_calls"] = []

    def missing_content(r):
        del r["messages"][1]["content"]

    def weight_on_user(r):
        r["messages"][1]["weight"] = 1

    def bad_weight(r):
        _assistant(r, 2)["weight"] = 0.5

    def no_trained_assistant(r):
        for m in r["messages"]:
            if m["role"] == "assistant":
                m["weight"] = 0

    def wrong_call_type(r):
        _assistant(r)["tool_calls"][0]["type"] = "tool"

    def missing_call_id(r):
        del _assistant(r)["tool_calls"][0]["id"]

    def unknown_top_level_key(r):
        r["metadata"] = {"x": 1}

    def not_parallel(r):
        r["parallel_tool_calls"] = False

    def bad_tool_schema(r):
        r["tools"][0]["function"]["parameters"] = {"type": "object", "properties": {"city": {"type": "strng"}}}

    def no_messages(r):
        r["messages"] = []

    return locals()[kind]


CASES = {
    # rule: (expected field, expected problem fragment)
    "arguments_object": ("messages[2].tool_calls[0].function.arguments", "must be a JSON string, got an object"),
    "arguments_not_json": ("messages[2].tool_calls[0].function.arguments", "not valid JSON"),
    "arguments_schema": ("messages[2].tool_calls[1].function.arguments", "does not match get_weather's schema: unit: 'kelvin'"),
    "unknown_tool": ("messages[2].tool_calls[0].function.name", "'get_wether' is not one of the example's tools"),
    "unanswered_call": ("messages[2].tool_calls[1]", "has no tool message answering it"),
    "orphan_tool_message": ("messages[3].tool_call_id", "'call_nobody' answers no tool call"),
    "bad_role": ("messages[1].role", "unknown role 'human'"),
    "unknown_message_key": ("messages[1].tool_calls", "key not allowed on a user message"),
    "missing_content": ("messages[1].content", "missing content"),
    "weight_on_user": ("messages[1].weight", "key not allowed on a user message"),
    "bad_weight": ("messages[7].weight", "must be 0 or 1, got 0.5"),
    "no_trained_assistant": ("messages", "no assistant message with weight 1"),
    "wrong_call_type": ("messages[2].tool_calls[0].type", 'must be "function"'),
    "missing_call_id": ("messages[2].tool_calls[0].id", "missing id"),
    "unknown_top_level_key": ("metadata", "unknown top-level key"),
    "not_parallel": ("messages[2].tool_calls", "2 calls but parallel_tool_calls is false"),
    "bad_tool_schema": ("tools[0].function.parameters", "not a valid JSON Schema"),
    "no_messages": ("messages", "missing or empty messages list"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_rule_catches_its_case(tmp_path, good_records, kind):
    records = copy.deepcopy(good_records)
    _break(kind)(records[3])
    report = validate_openai_jsonl(write(tmp_path, records))
    field, fragment = CASES[kind]
    assert not report.ok
    assert all(line.startswith(f"{tmp_path / 'data.jsonl'}:4: ") for line in report.lines()), report.lines()
    assert any(p.field == field and fragment in p.message for p in report.problems), report.lines()


def test_invalid_json_line_and_every_problem_is_listed(tmp_path, good_records):
    records = copy.deepcopy(good_records)
    _break("arguments_object")(records[1])
    records[5] = "{not json"
    report = validate_openai_jsonl(write(tmp_path, records))
    assert [p.line for p in report.problems] == [2, 6]
    assert "not valid JSON" in report.problems[1].message


def test_minimum_example_count(tmp_path, good_records):
    report = validate_openai_jsonl(write(tmp_path, good_records[:9]))
    assert [(p.line, p.field) for p in report.problems] == [(0, "(file)")]
    assert "9 examples; fine-tuning needs at least 10" in report.problems[0].message


def test_per_example_token_limit_uses_the_tokenizer(tmp_path, good_records):
    tokenizer = tiny_tokenizer()
    counter = TokenCounter(tokenizer)
    path = write(tmp_path, good_records)
    counts = validate_openai_jsonl(path, counter=counter).token_counts
    from distillery.dataset.stats import template_messages

    first = good_records[0]
    exact = tokenizer.apply_chat_template(template_messages(first["messages"]), tools=first["tools"], tokenize=True, return_dict=True)
    assert counts[0] == len(exact["input_ids"])
    limit = sorted(counts)[-2]  # exactly one example is longer than this
    report = validate_openai_jsonl(path, counter=counter, token_limit=limit)
    assert len(report.problems) == counts.count(max(counts)) and "token limit" in report.problems[0].message


def test_cli_validate_lists_problems_and_exits_nonzero(tmp_path, good_records):
    from typer.testing import CliRunner

    from distillery.cli import app

    records = copy.deepcopy(good_records)
    _break("arguments_not_json")(records[0])
    _break("bad_role")(records[2])
    path = write(tmp_path, records)
    result = CliRunner().invoke(app, ["build", "validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}:1: messages[2].tool_calls[0].function.arguments: not valid JSON" in result.output
    assert f"{path}:3: messages[1].role: unknown role 'human'" in result.output
    ok = CliRunner().invoke(app, ["build", "validate", str(write(tmp_path, good_records, "ok.jsonl"))])
    assert ok.exit_code == 0, ok.output
    assert "10" in ok.output
