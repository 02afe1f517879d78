"""KD sidecars: top-k logprobs aligned to student tokens (round trip within fp16), refusal for
different vocabularies, and empirical action distributions from n teacher samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distillery.dataset import DatasetBuilder, TopKSidecar, tokenizer_fingerprint
from distillery.dataset.sidecar import SidecarError
from distillery.trajectory import ToolCall, ToolResult
from tests.test_dataset_support import golden_trajectory, teacher_logprobs, varied_trajectories
from tests.tiny_models import tiny_tokenizer

K = 4


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def build(tmp_path, trajectories, tokenizer, **options):
    builder = DatasetBuilder(tokenizer=tokenizer, teacher_tokenizer=tokenizer, topk=K, **options)
    return builder.build(trajectories, tmp_path / "out")


def test_topk_round_trip_within_fp16(tmp_path, tokenizer):
    trajectories = [teacher_logprobs(t, tokenizer, k=K, seed=i) for i, t in enumerate(varied_trajectories(3))]
    report = build(tmp_path, trajectories, tokenizer)
    topk = report.topk["train"]
    assert topk.coverage == 1.0  # reasoning kept: the training text is exactly what the teacher wrote
    assert topk.bytes == (tmp_path / "out" / "train.topk.parquet").stat().st_size
    header = json.loads((tmp_path / "out" / "train.topk.json").read_text())
    assert header["k"] == K and header["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer)
    assert header["bytes_per_target_token"] == pytest.approx(topk.bytes / topk.target_positions, abs=1e-3)

    sidecar = TopKSidecar(tmp_path / "out" / "train.topk.parquet")
    lines = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    for index, trajectory in enumerate(trajectories):
        ids, values, has_target = sidecar[index]
        written = [entry for step in trajectory.steps for entry in step.logprobs]
        assert ids.shape == values.shape == (has_target.shape[0], K)
        assert int(has_target.sum()) == len(written)
        # Read back in order: the same ids, and logprobs equal within fp16 rounding.
        for row, entry in zip(has_target.nonzero().flatten().tolist(), written):
            assert ids[row].tolist() == [t.token_id for t in entry.top]
            expected = torch.tensor([t.logprob for t in entry.top])
            assert torch.allclose(values[row], expected, rtol=1e-3, atol=1e-3)
            assert torch.equal(values[row], expected.half().float())
        assert json.loads(lines[index])["messages"][1]["content"] == trajectory.query
        # Positions without a target are padding: no ids, -inf values.
        assert (ids[~has_target] == -1).all() and torch.isinf(values[~has_target]).all()


def test_targets_sit_on_the_tokens_the_teacher_generated(tmp_path, tokenizer):
    trajectory = teacher_logprobs(golden_trajectory(), tokenizer, k=K)
    build(tmp_path, [trajectory], tokenizer)
    ids, values, has_target = TopKSidecar(tmp_path / "out" / "train.topk.parquet")[0]
    from distillery.dataset.render import training_messages
    from distillery.dataset.stats import template_messages
    from distillery.trajectory import DistillationSample

    messages, _ = training_messages(DistillationSample.from_trajectory(trajectory))
    tools = [{"type": "function", "function": s.model_dump()} for s in trajectory.tools]
    sequence = tokenizer.apply_chat_template(template_messages(messages), tools=tools, tokenize=True, return_dict=True)["input_ids"]
    positions = has_target.nonzero().flatten()
    # The sampled token is the top-1 alternative in this fixture, so it must equal the sequence token.
    assert [sequence[p] for p in positions.tolist()] == ids[positions, 0].tolist()


def test_dropped_reasoning_has_no_target_where_the_context_differs(tmp_path, tokenizer):
    # "first" keeps step 0's reasoning and drops step 2's thinking: steps 0 and 1 are what the
    # teacher generated; the final answer's context (and text) is not.
    trajectory = teacher_logprobs(golden_trajectory(), tokenizer, k=K)
    report = build(tmp_path / "exact", [trajectory], tokenizer, reasoning="first")
    assert 0.3 < report.topk["train"].coverage < 1.0
    ids, _, has_target = TopKSidecar(tmp_path / "exact" / "out" / "train.topk.parquet")[0]
    targeted = tokenizer.decode(ids[has_target, 0].tolist())
    assert "I'll check both cities." in targeted and '{"timezone": "Asia/Tokyo"}' in targeted
    assert "Tokyo is warmer" not in targeted

    # "matched" also targets the answer tokens the teacher produced after its (dropped) thinking.
    report = build(tmp_path / "matched", [trajectory], tokenizer, reasoning="first", topk_alignment="matched")
    assert report.topk["train"].coverage == 1.0
    ids, _, has_target = TopKSidecar(tmp_path / "matched" / "out" / "train.topk.parquet")[0]
    assert "Tokyo is warmer" in tokenizer.decode(ids[has_target, 0].tolist())

    # Dropping all reasoning changes step 0 right after its first shared token(s) ("<" of
    # "<think>" vs "<tool_call>"), and with it every later context: almost nothing is targeted.
    dropped = build(tmp_path / "drop", [trajectory], tokenizer, reasoning="drop").topk["train"]
    assert dropped.target_positions <= 2


def test_different_vocabularies_are_refused(tmp_path, tokenizer):
    other = tiny_tokenizer(["a completely different corpus for another vocabulary"], vocab_size=300)
    trajectory = teacher_logprobs(golden_trajectory(), tokenizer, k=K)
    builder = DatasetBuilder(tokenizer=tokenizer, teacher_tokenizer=other, topk=K)
    with pytest.raises(SidecarError, match="sparse logit targets need a shared vocabulary.*sequence-level KD"):
        builder.build([trajectory], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_logprobs_or_unknown_teacher_tokenizer_is_refused(tmp_path, tokenizer):
    with pytest.raises(SidecarError, match="no selected trajectory has token logprobs"):
        DatasetBuilder(tokenizer=tokenizer, teacher_tokenizer=tokenizer, topk=K).build([golden_trajectory()], tmp_path / "o")
    trajectory = teacher_logprobs(golden_trajectory(model="openai:Qwen/Qwen2.5-7B-Instruct"), tokenizer, k=K)
    with pytest.raises(SidecarError, match="--teacher-tokenizer"):
        DatasetBuilder(tokenizer=tokenizer, topk=K).build([trajectory], tmp_path / "o")
    assert not (tmp_path / "o").exists()


def _sample(index: int, first_city: str, answer: str):
    """Sample `index` of one task: step 0 calls get_weather for `first_city` (and Tokyo)."""
    t = golden_trajectory(trajectory_id=f"s{index}", sample_index=index)
    t.steps[0].text = f"Reasoning that differs in sample {index}."
    t.steps[0].tool_calls[0] = ToolCall(id=f"c{index}", name="get_weather", arguments={"city": first_city})
    t.steps[0].tool_results[0] = ToolResult(tool_call_id=f"c{index}", name="get_weather", content='{"temp_c": 14, "sky": "rain"}')
    t.steps[2].text = answer
    return t


def test_action_distributions_over_n_samples(tmp_path):
    samples = [
        _sample(0, "Paris", "Tokyo is warmer."),
        _sample(1, "Paris", "Tokyo is warmer."),
        _sample(2, "Paris", "It is warmer in Tokyo."),
        _sample(3, "paris", "Tokyo is warmer."),
    ]
    report = DatasetBuilder(action_distributions=True, dedup="none").build(samples, tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.actions.jsonl").read_text().splitlines()]
    assert report.action_rows["train"] == len(rows) == 12
    first = [r for r in rows if r["example"] == 0]
    # Step 0: one state shared by all 4 samples; parallel calls canonicalised as a sorted list.
    paris = '[{"arguments":{"city":"Paris"},"name":"get_weather"},{"arguments":{"city":"Tokyo","unit":"celsius"},"name":"get_weather"}]'
    assert first[0]["n"] == 4 and first[0]["distribution"][paris] == 0.75
    assert sum(first[0]["distribution"].values()) == pytest.approx(1.0)
    # Step 1 onwards: only the 3 samples that took the same actions (reasoning text ignored) share the state.
    assert first[1]["n"] == 3 and list(first[1]["distribution"].values()) == [1.0]
    assert first[2]["n"] == 3
    assert first[2]["distribution"] == {
        '{"final_answer":"It is warmer in Tokyo."}': pytest.approx(1 / 3),
        '{"final_answer":"Tokyo is warmer."}': pytest.approx(2 / 3),
    }
    lowercase = [r for r in rows if r["example"] == 3]
    assert lowercase[1]["n"] == 1  # a different action leads to a different state


def test_action_distributions_count_failed_samples_before_success_only(tmp_path):
    samples = [_sample(0, "Paris", "A."), _sample(1, "Lyon", "B.")]
    samples[1].outcome.success = False
    DatasetBuilder(action_distributions=True, success_only=True).build(samples, tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.actions.jsonl").read_text().splitlines()]
    assert rows[0]["n"] == 2 and len(rows[0]["distribution"]) == 2
    assert np.isclose(sum(rows[0]["distribution"].values()), 1.0)


@pytest.mark.parametrize("format", ["hf", "parquet"])
def test_action_distributions_ride_in_the_hf_and_parquet_rows(tmp_path, format):
    from datasets import load_dataset

    samples = [_sample(0, "Paris", "A."), _sample(1, "Lyon", "A.")]
    DatasetBuilder(format=format, action_distributions=True).build(samples, tmp_path / "out")
    loader = "json" if format == "hf" else "parquet"
    suffix = "jsonl" if format == "hf" else "parquet"
    row = load_dataset(loader, data_files=str(tmp_path / "out" / f"train.{suffix}"), split="train")[1]
    distributions = json.loads(row["action_distributions"])
    assert len(distributions) == 3 and sorted(distributions[0].values()) == [0.5, 0.5]
    assert distributions[1] == {'{"arguments":{"timezone":"Asia/Tokyo"},"name":"get_local_time"}': 1.0}
