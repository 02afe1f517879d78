"""Golden files for each format, reasoning policies, weights, and bad input that writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillery.dataset import DatasetBuilder, ProblemsError, build_finetune_jsonl
from distillery.errors import ConfigError, DistilleryError
from distillery.trajectory import DistillationSample, ToolCall
from tests.test_dataset_support import golden_trajectory, varied_trajectories

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} changed; rerun with UPDATE_GOLDEN=1 and review the diff"


def test_openai_golden(tmp_path):
    build_finetune_jsonl([golden_trajectory()], tmp_path / "train.jsonl", format="openai")
    check_golden("dataset_openai.jsonl", (tmp_path / "train.jsonl").read_text(encoding="utf-8"))


def test_hf_golden(tmp_path):
    build_finetune_jsonl([golden_trajectory()], tmp_path / "train.jsonl", format="hf")
    check_golden("dataset_hf.jsonl", (tmp_path / "train.jsonl").read_text(encoding="utf-8"))


def test_parquet_golden(tmp_path):
    build_finetune_jsonl([golden_trajectory()], tmp_path / "train.parquet", format="parquet")
    table = pq.read_table(tmp_path / "train.parquet")
    text = json.dumps({"schema": [f"{f.name}: {f.type}" for f in table.schema], "rows": table.to_pylist()}, indent=1, ensure_ascii=False)
    check_golden("dataset_parquet.json", text + "\n")


def test_openai_record_follows_the_documented_schema(tmp_path):
    build_finetune_jsonl([golden_trajectory()], tmp_path / "t.jsonl")
    record = json.loads((tmp_path / "t.jsonl").read_text())
    assert set(record) == {"messages", "tools", "parallel_tool_calls"}
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]
    first = record["messages"][2]
    assert [c["function"]["arguments"] for c in first["tool_calls"]] == ['{"city": "Paris"}', '{"city": "Tokyo", "unit": "celsius"}']
    assert all(isinstance(c["function"]["arguments"], str) and c["type"] == "function" for c in first["tool_calls"])
    assert [m["tool_call_id"] for m in record["messages"] if m["role"] == "tool"] == ["call_paris", "call_tokyo", "call_time"]
    assert "content" not in record["messages"][5]  # a calls-only assistant message has no content
    assert all(m["weight"] == 1 for m in record["messages"] if m["role"] == "assistant")
    assert all("weight" not in m for m in record["messages"] if m["role"] != "assistant")


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("keep", [True, False, True]),  # step 1 has no reasoning to keep
        ("drop", [False, False, False]),
        ("first", [True, False, False]),
        ("last", [False, False, True]),
    ],
)
def test_reasoning_policies(tmp_path, policy, expected):
    build_finetune_jsonl([golden_trajectory()], tmp_path / "t.jsonl", reasoning=policy)
    assistant = [m for m in json.loads((tmp_path / "t.jsonl").read_text())["messages"] if m["role"] == "assistant"]
    assert ["<think>" in m.get("content", "") for m in assistant] == expected
    # The visible pre-call text is reasoning too; the final answer is never dropped.
    assert ("I'll check both cities." in assistant[0].get("content", "")) == expected[0]
    assert assistant[-1]["content"].endswith("it is 21:04 in Tokyo.")
    assert [len(m.get("tool_calls", [])) for m in assistant] == [2, 1, 0]


def test_redacted_thinking_is_never_written(tmp_path):
    t = golden_trajectory()
    t.steps[0].thinking[0].type = "redacted_thinking"
    t.steps[0].thinking[0].data = "ENCRYPTED-BLOB"
    build_finetune_jsonl([t], tmp_path / "t.jsonl")
    text = (tmp_path / "t.jsonl").read_text()
    assert "ENCRYPTED-BLOB" not in text and "Both cities are needed" not in text


def test_mask_failed_steps_sets_weight_zero_only_on_the_failed_step(tmp_path):
    t = golden_trajectory()
    t.steps[1].tool_results[0].is_error = True
    build_finetune_jsonl([t], tmp_path / "t.jsonl", mask_failed_steps=True)
    weights = [m["weight"] for m in json.loads((tmp_path / "t.jsonl").read_text())["messages"] if m["role"] == "assistant"]
    assert weights == [1, 0, 1]
    with pytest.raises(ConfigError, match="only the openai format"):
        build_finetune_jsonl([t], tmp_path / "h.jsonl", format="hf", mask_failed_steps=True)
    assert not (tmp_path / "h.jsonl").exists()


def test_samples_and_trajectories_give_the_same_file(tmp_path):
    t = golden_trajectory()
    build_finetune_jsonl([t], tmp_path / "a.jsonl")
    build_finetune_jsonl([DistillationSample.from_trajectory(t)], tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


# -- bad input: a clear error naming the example and field, and nothing on disk ------------------


def _no_files(directory: Path) -> bool:
    return not any(directory.iterdir())


def test_tool_call_without_result_is_an_error(tmp_path):
    t = golden_trajectory()
    t.steps[0].tool_results.pop()
    with pytest.raises(ProblemsError, match=r"samples\[0\]: messages\[2\]\.tool_calls\[id=call_tokyo\]: tool call has no result"):
        build_finetune_jsonl([t], tmp_path / "t.jsonl")
    assert _no_files(tmp_path)


def test_arguments_that_are_not_json_are_an_error(tmp_path):
    t = golden_trajectory()
    t.steps[1].tool_calls[0] = ToolCall(id="call_time", name="get_local_time", raw_arguments='{"timezone": Asia', parse_error="invalid JSON: Expecting value")
    with pytest.raises(ProblemsError, match=r"messages\[5\]\.tool_calls\[0\]\.function\.arguments: not valid JSON"):
        build_finetune_jsonl([t], tmp_path / "t.jsonl")
    assert _no_files(tmp_path)


def test_skip_invalid_drops_and_reports_instead(tmp_path):
    bad = golden_trajectory(trajectory_id="bad")
    bad.steps[0].tool_results.pop()
    report = build_finetune_jsonl([bad, *varied_trajectories(2)], tmp_path / "t.jsonl", skip_invalid=True)
    assert report.removed["malformed (--skip-invalid)"] == 1
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 2
    assert any("call_tokyo" in line for line in report.skipped)


def test_malformed_trajectory_jsonl_names_file_line_and_field(tmp_path):
    from distillery.dataset import read_trajectory_jsonl

    path = tmp_path / "in.jsonl"
    good = golden_trajectory().model_dump_json()
    path.write_text(good + "\n" + json.dumps({"task_id": "x", "query": "q", "steps": [{"tool_calls": [{"name": 3}]}]}) + "\n")
    with pytest.raises(DistilleryError, match=r"in\.jsonl:2: malformed trajectory: steps\.0\.tool_calls\.0\.name"):
        list(read_trajectory_jsonl(path))
    path.write_text(good + "\n{not json\n")
    with pytest.raises(DistilleryError, match=r"in\.jsonl:2: not valid JSON"):
        list(read_trajectory_jsonl(path))


def test_empty_selection_and_unknown_format(tmp_path):
    failed = golden_trajectory(success=False)
    with pytest.raises(ConfigError, match=r"empty selection.*not successful \(--success-only\): 1"):
        build_finetune_jsonl([failed], tmp_path / "t.jsonl", success_only=True)
    with pytest.raises(ConfigError, match="unknown format 'csv'; choose one of openai, hf, parquet"):
        build_finetune_jsonl([golden_trajectory()], tmp_path / "t.jsonl", format="csv")
    assert _no_files(tmp_path)


def test_a_failing_build_leaves_an_existing_output_untouched(tmp_path):
    build_finetune_jsonl(varied_trajectories(3), tmp_path / "t.jsonl")
    before = (tmp_path / "t.jsonl").read_bytes()
    broken = golden_trajectory()
    broken.steps[1].tool_results = []
    with pytest.raises(ProblemsError):
        build_finetune_jsonl([*varied_trajectories(3), broken], tmp_path / "t.jsonl")
    assert (tmp_path / "t.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]  # no temp files left behind


def test_schema_invalid_calls_are_dropped_and_reported(tmp_path):
    bad = golden_trajectory(trajectory_id="bad", task_id="bad")
    bad.steps[0].tool_calls[1].arguments = {"city": "Tokyo", "unit": "kelvin"}
    report = build_finetune_jsonl([bad, *varied_trajectories(2)], tmp_path / "t.jsonl")
    assert report.removed["invalid tool call (unknown tool or schema)"] == 1
    assert "'kelvin' is not one of" in report.skipped[0]


def test_build_directory_writes_splits_and_summary(tmp_path):
    report = DatasetBuilder(split=(0.5, 0.25, 0.25), seed=1).build(varied_trajectories(12), tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["build.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    counts = {name: len((tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()) for name in ("train", "validation", "test")}
    assert counts == {"train": 6, "validation": 3, "test": 3}
    summary = json.loads((tmp_path / "out" / "build.json").read_text())
    assert summary["splits"]["train"]["examples"] == 6 and report.examples == 12
