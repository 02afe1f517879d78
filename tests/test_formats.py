"""The vendor wire formats: each stop-reason table exists once, and round trips are what they should be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.dataset import build_finetune_jsonl
from distillery.formats import anthropic, openai
from distillery.trajectory import DistillationSample, ToolResult
from tests.test_dataset_support import golden_trajectory, varied_trajectories

OURS = ["end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal", "pause_turn", "error"]


@pytest.mark.parametrize("ours", OURS)
def test_anthropic_stop_reasons_survive_the_gateway_and_the_provider(ours):
    # The gateway writes ours to an Anthropic client; the provider reads the API's: the same names,
    # except an error, which the API never sends (a finished turn).
    assert anthropic.stop_reason_from_wire(anthropic.stop_reason_to_wire(ours)) == (ours if ours != "error" else "end_turn")


@pytest.mark.parametrize("ours, wire, back", [
    ("end_turn", "stop", "end_turn"), ("tool_use", "tool_calls", "tool_use"), ("max_tokens", "length", "max_tokens"),
    ("refusal", "content_filter", "refusal"),
    # OpenAI has no name for these: they read as a plain stop.
    ("stop_sequence", "stop", "end_turn"), ("pause_turn", "stop", "end_turn"), ("error", "stop", "end_turn"),
])
def test_openai_finish_reasons_both_ways(ours, wire, back):
    assert openai.stop_reason_to_wire(ours) == wire
    assert openai.stop_reason_from_wire(wire) == back


def test_undocumented_wire_values_are_not_guessed():
    assert anthropic.stop_reason_from_wire("something_new") is None
    assert openai.stop_reason_from_wire("something_new") is None
    assert anthropic.stop_reason_from_wire("model_context_window_exceeded") == "max_tokens"


# --- the on-disk training format -----------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden"


def wire_golden_trajectories():
    """Two plain trajectories and one with a failed tool call and non-ASCII text and arguments."""
    trajectories = varied_trajectories(2)
    odd = golden_trajectory(task_id="odd", trajectory_id="traj-odd", query="ünïcode query 東京")
    odd.steps[0].tool_calls[0].arguments = {"city": "Zürich"}
    odd.steps[0].tool_results[0] = ToolResult(tool_call_id="call_paris", name="get_weather", content="error: no such city",
                                              is_error=True)
    odd.steps[1].tool_calls[0].arguments = {"timezone": "Asia/東京"}
    return [*trajectories, odd]


@pytest.mark.parametrize("name, format, options", [
    ("wire_openai_keep.jsonl", "openai", {}),
    ("wire_openai_drop_masked.jsonl", "openai", {"reasoning": "drop", "mask_failed_steps": True}),
    ("wire_hf_keep.jsonl", "hf", {}),
    ("wire_hf_drop.jsonl", "hf", {"reasoning": "drop"}),
])
def test_training_files_keep_their_bytes(tmp_path, name, format, options):
    # The golden files were written before the converters moved into formats/: same bytes since.
    build_finetune_jsonl(wire_golden_trajectories(), tmp_path / name, format=format, **options)
    assert (tmp_path / name).read_bytes() == (GOLDEN / name).read_bytes()


def test_trainer_rows_keep_their_shape():
    # What `train_student` turns samples and HF-format records into, written before the move.
    from distillery.distill.trainer import chat_rows

    samples = [DistillationSample.from_trajectory(t) for t in wire_golden_trajectories()]
    records = [json.loads(line) for line in (GOLDEN / "wire_hf_keep.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = chat_rows(samples) + chat_rows(records)
    assert json.dumps(rows, ensure_ascii=False, indent=1) + "\n" == (GOLDEN / "wire_trainer_rows.json").read_text(encoding="utf-8")
