"""Filters, splits, and `distillery build` end to end from a store and from JSONL."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from distillery.cli import app
from distillery.dataset import DatasetBuilder
from distillery.dataset.splits import parse_fractions
from distillery.errors import ConfigError
from tests.test_dataset_support import golden_trajectory, varied_trajectories


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def queries(path):
    return [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in lines(path)]


def test_success_only_is_rejection_sampling(tmp_path):
    ok, failed, unchecked = varied_trajectories(3), varied_trajectories(2, start=3, success=False), varied_trajectories(1, start=5, success=None)
    report = DatasetBuilder(success_only=True).build(ok + failed + unchecked, tmp_path)
    assert report.removed["not successful (--success-only)"] == 3
    assert queries(tmp_path / "train.jsonl") == [t.query for t in ok]


def test_exact_and_near_duplicates(tmp_path):
    base = varied_trajectories(4)
    copy = base[0].model_copy(deep=True)
    copy.id = "copy"
    for call in copy.steps[0].tool_calls:  # call ids differ between samples; the conversation does not
        call.id += "-x"
    for result in copy.steps[0].tool_results:
        result.tool_call_id += "-x"
    near = base[1].model_copy(deep=True)
    near.id, near.steps[2].text = "near", near.steps[2].text.replace("21:04", "21:05")
    report = DatasetBuilder(dedup="exact").build(base + [copy, near], tmp_path / "exact")
    assert report.removed["exact duplicate"] == 1 and report.examples == 5
    report = DatasetBuilder(dedup="near").build(base + [copy, near], tmp_path / "near")
    assert report.removed["exact duplicate"] == 1 and report.removed["near duplicate (Jaccard >= 0.9)"] == 1
    assert report.examples == 4
    report = DatasetBuilder(dedup="none").build(base + [copy, near], tmp_path / "none")
    assert report.examples == 6


def test_max_tokens_tag_model_and_date(tmp_path):
    from datetime import datetime, timezone

    trajectories = varied_trajectories(6)
    long = trajectories[5]
    long.steps[2].text = "word " * 400
    trajectories[0].tags = ["other"]
    trajectories[1].model = "openai:gpt-4o"
    trajectories[2].created_at = datetime(2025, 1, 1, tzinfo=timezone.utc)
    report = DatasetBuilder(max_tokens=600, tags=["weather"], models=["world:teacher"], since="2026-01-01").build(trajectories, tmp_path)
    assert report.removed["tag/model/date"] == 3 and report.removed["over 600 tokens"] == 1
    assert queries(tmp_path / "train.jsonl") == [trajectories[3].query, trajectories[4].query]


def test_decontamination_against_an_eval_set(tmp_path):
    trajectories = varied_trajectories(5)
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(
        json.dumps({"id": "task-0", "query": "unrelated wording"}) + "\n"  # same task id
        + json.dumps({"id": "e1", "query": trajectories[1].query.upper() + "!"}) + "\n"  # same query, normalised
        + json.dumps({"id": "e2", "query": "Prefix words " + " ".join(trajectories[2].query.split()[:13])}) + "\n"  # a shared 13-gram
        + json.dumps({"id": "e3", "query": "Request 3: compare the weather"}) + "\n"  # too short to share a 13-gram
    )
    report = DatasetBuilder(decontaminate=eval_path).build(trajectories, tmp_path / "out")
    assert report.removed["overlaps eval set eval.jsonl"] == 3
    assert queries(tmp_path / "out" / "train.jsonl") == [trajectories[3].query, trajectories[4].query]


def test_split_is_seeded_stratified_and_keeps_tasks_together(tmp_path):
    trajectories = []
    for i, t in enumerate(varied_trajectories(40)):
        t.tags = [f"tier:{'hard' if i % 4 == 0 else 'easy'}"]
        for sample in range(2):  # two samples per task, which must land in the same split
            copy = t.model_copy(deep=True)
            copy.id, copy.sample_index = f"{t.id}-{sample}", sample
            copy.steps[2].text += f" (sample {sample})"
            trajectories.append(copy)
    builder = DatasetBuilder(split=(0.8, 0.1, 0.1), stratify="tier", seed=7)
    builder.build(trajectories, tmp_path / "a")
    DatasetBuilder(split=(0.8, 0.1, 0.1), stratify="tier", seed=7).build(trajectories, tmp_path / "b")
    DatasetBuilder(split=(0.8, 0.1, 0.1), stratify="tier", seed=8).build(trajectories, tmp_path / "c")
    splits = {name: queries(tmp_path / "a" / f"{name}.jsonl") for name in ("train", "validation", "test")}
    assert {name: len(q) for name, q in splits.items()} == {"train": 64, "validation": 8, "test": 8}
    assert all(Counter(q)[x] == 2 for q in splits.values() for x in q)  # both samples of a task together
    assert not set(splits["train"]) & (set(splits["validation"]) | set(splits["test"]))
    by_query = {t.query: t.tags[0] for t in trajectories}
    for name, expected_hard in (("train", 16), ("validation", 2), ("test", 2)):
        assert sum(by_query[q] == "tier:hard" for q in splits[name]) == expected_hard  # 10 hard tasks, 8/1/1
    assert (tmp_path / "a" / "train.jsonl").read_text() == (tmp_path / "b" / "train.jsonl").read_text()
    assert (tmp_path / "a" / "train.jsonl").read_text() != (tmp_path / "c" / "train.jsonl").read_text()


def test_parse_fractions():
    assert parse_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.3", "a,b", "0.5,0.25,0.125,0.125"):
        with pytest.raises(ConfigError, match="--split"):
            parse_fractions(bad)


def test_cli_build_from_store(tmp_path):
    from distillery.store import SQLiteStore

    store = SQLiteStore(tmp_path / "store.db")
    for i, t in enumerate(varied_trajectories(12)):
        t.tags = [f"tier:{i % 2}"]
        store.put(t)
    store.put(golden_trajectory(task_id="failed", success=False))
    store.close()
    out = tmp_path / "data"
    result = CliRunner().invoke(
        app,
        ["build", "--from-store", str(tmp_path / "store.db"), "--out", str(out), "--format", "hf", "--success-only",
         "--split", "0.5,0.5", "--stratify", "tier", "--epochs", "2"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "train.jsonl", "validation.jsonl"]
    assert "not successful (--success-only): 1" in result.output
    summary = json.loads((out / "build.json").read_text())
    assert summary["splits"]["train"]["examples"] == summary["splits"]["validation"]["examples"] == 6
    assert summary["cost"]["usd"] == pytest.approx(summary["splits"]["train"]["total"] * 2 * 3.0 / 1e6)


def test_cli_build_reports_every_bad_line_and_writes_nothing(tmp_path):
    good, bad = varied_trajectories(2)
    bad.steps[0].tool_results = []
    path = tmp_path / "in.jsonl"
    path.write_text(good.model_dump_json() + "\n" + bad.model_dump_json() + "\n")
    result = CliRunner().invoke(app, ["build", "--from-jsonl", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"{path}:2: messages[2].tool_calls[id=call_paris]: tool call has no result" in result.output
    assert f"{path}:2: messages[2].tool_calls[id=call_tokyo]: tool call has no result" in result.output
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["build", "--from-jsonl", str(path), "--out", str(tmp_path / "out"), "--format", "xml"])
    assert result.exit_code == 2 and "unknown format 'xml'" in result.output  # a usage error, found when parsing
