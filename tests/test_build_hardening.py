"""The dataset builder on real-world mess: failed runs, names OpenAI rejects, kept invalid calls,
skip reasons with the argument's path, and tool keys it must not lose."""

from __future__ import annotations

import json

import pytest

from distillery.dataset import DatasetBuilder, ProblemsError
from distillery.dataset.builder import BuildReport
from distillery.dataset.validate import validate_openai_jsonl
from distillery.trajectory import ToolCall, ToolResult, ToolSpec
from tests.test_dataset_support import varied_trajectories


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def failed_runs():
    """An error with no steps, an error after a tool call (ends on a tool result), a max_steps run."""
    empty, mid, cut = varied_trajectories(3, start=100)
    empty.status, empty.error, empty.steps = "error", "APIConnectionError: connection refused", []
    mid.status, mid.error, mid.steps = "error", "RateLimitError: 429", mid.steps[:1]
    cut.status, cut.steps = "max_steps", cut.steps[:2]
    return [empty, mid, cut]


def test_a_store_with_failures_builds_cleanly_and_says_what_it_left_out(tmp_path):
    report = DatasetBuilder(format="hf").write_file(varied_trajectories(4) + failed_runs(), tmp_path / "t.jsonl")
    rows = lines(tmp_path / "t.jsonl")
    assert len(rows) == 4
    assert all(row["messages"][-1]["role"] == "assistant" and not row["messages"][-1]["tool_calls"] for row in rows)
    assert report.removed["status error (--status ok)"] == 2
    assert report.removed["status max_steps (--status ok)"] == 1


def test_failed_runs_only_when_asked(tmp_path):
    report = DatasetBuilder(format="hf", status="error", skip_invalid=True).write_file(
        varied_trajectories(2) + failed_runs(), tmp_path / "e.jsonl")
    rows = lines(tmp_path / "e.jsonl")
    assert len(rows) == 2  # the two failed runs with steps; the empty one cannot be an example
    assert {row["messages"][-1]["role"] for row in rows} == {"tool"}
    assert report.removed["completed run (--status error)"] == 2
    with pytest.raises(Exception, match="--status 'some'"):
        DatasetBuilder(status="some")


def dotted(trajectories):
    """BFCL-style names: get_weather becomes weather.get, in the tools and in every call."""
    for t in trajectories:
        t.tools = [spec.model_copy(update={"name": "weather.get"}) if spec.name == "get_weather" else spec
                   for spec in t.tools]
        for step in t.steps:
            for call in step.tool_calls:
                if call.name == "get_weather":
                    call.name = "weather.get"
            for result in step.tool_results:
                if result.name == "get_weather":
                    result.name = "weather.get"
    return trajectories


def test_openai_format_refuses_names_openai_rejects_and_hf_keeps_them(tmp_path):
    with pytest.raises(ProblemsError, match=r"tools\[\d\]\.function\.name: 'weather\.get' is not a valid OpenAI function name"):
        DatasetBuilder(format="openai").write_file(dotted(varied_trajectories(2)), tmp_path / "o.jsonl")
    report = DatasetBuilder(format="openai", skip_invalid=True).write_file(
        dotted(varied_trajectories(2)) + varied_trajectories(1, start=9), tmp_path / "o.jsonl")
    assert len(lines(tmp_path / "o.jsonl")) == 1 and any("weather.get" in s for s in report.skipped)
    DatasetBuilder(format="hf").write_file(dotted(varied_trajectories(2)), tmp_path / "h.jsonl")
    row = lines(tmp_path / "h.jsonl")[0]
    assert "weather.get" in {t["function"]["name"] for t in json.loads(row["tools"])}
    assert row["messages"][2]["tool_calls"][0]["function"]["name"] == "weather.get"


def test_build_validate_enforces_the_name_rule(tmp_path):
    DatasetBuilder(format="openai").write_file(varied_trajectories(2), tmp_path / "ok.jsonl")
    records = lines(tmp_path / "ok.jsonl")
    records[1]["tools"][0]["function"]["name"] = "a" * 65
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = validate_openai_jsonl(tmp_path / "bad.jsonl")
    assert [(p.line, p.field) for p in report.problems if "function name" in p.message] == [(2, "tools[0].function.name")]


def schema_violation(trajectory):
    trajectory.tools[0] = ToolSpec(name="get_weather", parameters={
        "type": "object", "properties": {"city": {"type": "string"}, "start_date": {"type": "string"}}})
    trajectory.steps[0].tool_calls[0] = ToolCall(id="call_paris", name="get_weather",
                                                 arguments={"city": "Paris", "start_date": None})
    trajectory.steps[0].tool_results[0] = ToolResult(tool_call_id="call_paris", name="get_weather", content="{}")
    return trajectory


def test_keep_invalid_calls_keeps_them_and_skip_reasons_name_the_argument(tmp_path):
    trajectories = [schema_violation(t) for t in varied_trajectories(2)]
    report = DatasetBuilder(format="openai").write_file(trajectories + varied_trajectories(1, start=5), tmp_path / "d.jsonl")
    assert len(lines(tmp_path / "d.jsonl")) == 1
    assert any("function.arguments: does not match get_weather's schema: start_date: None is not of type 'string'" in s
               for s in report.skipped), report.skipped
    DatasetBuilder(format="openai", drop_invalid_calls=False).write_file(trajectories, tmp_path / "k.jsonl")
    kept = lines(tmp_path / "k.jsonl")
    assert len(kept) == 2
    assert json.loads(kept[0]["messages"][2]["tool_calls"][0]["function"]["arguments"])["start_date"] is None


def test_tool_specs_keep_keys_they_do_not_know(tmp_path):
    spec = ToolSpec.model_validate({"name": "lookup", "parameters": {"type": "object", "properties": {}},
                                    "strict": True, "response": {"type": "string"}})
    assert spec.model_dump()["response"] == {"type": "string"}
    assert ToolSpec.model_validate_json(spec.model_dump_json()) == spec
    trajectories = varied_trajectories(2)
    for t in trajectories:
        t.tools[0] = ToolSpec.model_validate({**t.tools[0].model_dump(), "strict": False, "response": {"type": "object"}})
    report = DatasetBuilder(format="openai").write_file(trajectories, tmp_path / "o.jsonl")
    function = lines(tmp_path / "o.jsonl")[0]["tools"][0]["function"]
    assert function["strict"] is False and "response" not in function
    assert any("response" in w and "left out" in w for w in report.warnings)
    DatasetBuilder(format="hf").write_file(trajectories, tmp_path / "h.jsonl")
    assert json.loads(lines(tmp_path / "h.jsonl")[0]["tools"])[0]["function"]["response"] == {"type": "object"}


@pytest.mark.parametrize("text", ["nan,0.5,0.5", "0.5,nan", "inf", "-0.5,1.5", "0.8,0.1", "a,b"])
def test_split_fractions_are_checked(text):
    from distillery.dataset.splits import parse_fractions
    from distillery.errors import ConfigError

    with pytest.raises(ConfigError, match="--split"):
        parse_fractions(text)


@pytest.mark.parametrize("threshold", [1.5, 0.0, -1.0, float("nan")])
def test_near_threshold_is_a_similarity(threshold):
    from distillery.errors import ConfigError

    with pytest.raises(ConfigError, match="--near-threshold must be a Jaccard similarity in"):
        DatasetBuilder(dedup="near", near_threshold=threshold)


def test_build_reads_the_store_collect_writes_by_default(tmp_path, monkeypatch, capsys):
    from distillery.cli import run
    from distillery.store import DEFAULT_STORE_PATH, SQLiteStore

    monkeypatch.chdir(tmp_path)
    assert run(["build", "--out", "data", "--format", "hf"]) == 2
    assert "no store at the default .distillery/store.db" in " ".join(capsys.readouterr().err.split())
    store = SQLiteStore(DEFAULT_STORE_PATH)
    for trajectory in varied_trajectories(3):
        store.put(trajectory)
    store.close()
    assert run(["build", "--out", "data", "--format", "hf"]) == 0
    assert "reading .distillery/store.db" in capsys.readouterr().err
    assert len(lines(tmp_path / "data" / "train.jsonl")) == 3


def test_a_captured_gateway_step_that_calls_tools_is_a_training_example(tmp_path):
    # The gateway captures the step it answered; when that step calls tools, the client runs them,
    # so the trajectory ends on the call. That call is the flywheel's training target.
    captured = varied_trajectories(2)
    for t in captured:
        t.steps = t.steps[:1]
        t.steps[0].tool_results = []
        t.tags = ["gateway", "escalated"]
    report = DatasetBuilder(format="openai").write_file(captured, tmp_path / "o.jsonl")
    rows = lines(tmp_path / "o.jsonl")
    assert len(rows) == 2 and not report.skipped
    assert rows[0]["messages"][-1]["role"] == "assistant" and len(rows[0]["messages"][-1]["tool_calls"]) == 2
    assert validate_openai_jsonl(tmp_path / "o.jsonl", min_examples=0).ok
    DatasetBuilder(format="hf").write_file(captured, tmp_path / "h.jsonl")
    assert lines(tmp_path / "h.jsonl")[0]["messages"][-1]["tool_calls"]
    # A run cut off after its tool results is still left out: it ends on a tool message.
    cut = varied_trajectories(1, start=50)
    cut[0].steps = cut[0].steps[:1]
    report = BuildReport(format="hf")
    kept = DatasetBuilder(format="hf").select(captured + cut, report)
    assert sum(len(v) for v in kept.values()) == 2
    assert report.removed["unfinished run (ends on a tool result) (--status ok)"] == 1
