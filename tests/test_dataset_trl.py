"""TRL's SFTTrainer reads our HF format as we meant it: same text, assistant-only loss.

The HF file is loaded the way users load it (`load_dataset("json", ...)`), which runs it through
Arrow; the tokenized rows TRL builds are then compared with `apply_chat_template` on the original
messages, and the loss mask with what the assistant wrote.
"""

from __future__ import annotations

import json

import pytest
from datasets import load_dataset

from distillery.formats.hermes import to_hf_messages, to_hf_tools
from distillery.dataset import build_finetune_jsonl
from distillery.trajectory import DistillationSample
from tests.test_dataset_support import golden_trajectory, varied_trajectories
from tests.tiny_models import tiny_llama, tiny_tokenizer


def world_or_tiny_tokenizer():
    """The world tokenizer when it is shipped; otherwise the tiny test tokenizer (same template)."""
    try:
        from distillery.world.models import load_world_tokenizer

        return load_world_tokenizer()
    except Exception:  # world assets not built in this checkout
        return tiny_tokenizer()


@pytest.fixture(scope="module")
def tokenizer():
    return world_or_tiny_tokenizer()


@pytest.fixture(scope="module")
def trajectories():
    # Rows whose argument objects and tool schemas have different keys: Arrow would pad them.
    first, second = golden_trajectory(), varied_trajectories(1)[0]
    second.steps[0].tool_calls[1].arguments = {"city": "Oslo", "unit": "fahrenheit"}
    second.steps[0].tool_calls[0].arguments = {"city": "Lima"}
    return [second, first]


@pytest.fixture(scope="module")
def sft_rows(tmp_path_factory, tokenizer, trajectories):
    from trl import SFTConfig, SFTTrainer

    tmp = tmp_path_factory.mktemp("trl")
    build_finetune_jsonl(trajectories, tmp / "train.jsonl", format="hf")
    dataset = load_dataset("json", data_files=str(tmp / "train.jsonl"), split="train")
    args = SFTConfig(
        output_dir=str(tmp / "out"), assistant_only_loss=True, report_to=[], use_cpu=True, bf16=False, max_length=None
    )
    trainer = SFTTrainer(model=tiny_llama(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer)
    return [trainer.train_dataset[i] for i in range(len(dataset))]


def original_render(tokenizer, trajectory, **kwargs):
    """What the model sees at inference: our neutral messages, arguments as objects, tools as dicts."""
    sample = DistillationSample.from_trajectory(trajectory)
    messages = to_hf_messages(sample.messages)
    for m in messages:  # the builder writes thinking as <think> text; render the same content
        m.pop("name", None)
    from distillery.dataset.render import training_messages

    rendered_messages, _ = training_messages(sample)
    for m, r in zip(messages, rendered_messages):
        m["content"] = r["content"]
    return tokenizer.apply_chat_template(messages, tools=to_hf_tools(sample.tools), **kwargs)


def test_trl_renders_exactly_the_original_conversation(sft_rows, tokenizer, trajectories):
    for row, trajectory in zip(sft_rows, trajectories):
        expected = original_render(tokenizer, trajectory, tokenize=True, return_dict=True)["input_ids"]
        assert row["input_ids"] == list(expected)
        text = tokenizer.decode(row["input_ids"])
        assert '"unit": null' not in text and '"city": null' not in text


def test_assistant_only_loss_masks_everything_but_the_assistant(sft_rows, tokenizer, trajectories):
    row, trajectory = sft_rows[1], trajectories[1]  # the golden trajectory
    ids, labels = row["input_ids"], row["labels"]
    trained = tokenizer.decode([i for i, label in zip(ids, labels) if label != -100])
    masked = tokenizer.decode([i for i, label in zip(ids, labels) if label == -100])
    # Trained: reasoning, tool-call JSON, the final answer, and each assistant turn's <|im_end|>.
    assert "I'll check both cities." in trained
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo", "unit": "celsius"}}\n</tool_call>' in trained
    assert '{"name": "get_local_time", "arguments": {"timezone": "Asia/Tokyo"}}' in trained
    assert "it is 21:04 in Tokyo." in trained
    assert trained.count("<|im_end|>") == 3
    # Masked: system prompt and tool definitions, the user's query, every tool result.
    for text in ("You are a concise travel assistant.", '"name": "get_weather", "description"', trajectory.query,
                 '{"temp_c": 14, "sky": "rain"}', '{"temp_c": 19, "sky": "clear"}', "<tool_response>\n21:04"):
        assert text in masked and text not in trained
    assert "<|im_start|>" not in trained


def test_naive_struct_arguments_would_corrupt_the_text(tmp_path, tokenizer, trajectories):
    """The failure the string encoding prevents: object arguments through Arrow gain null keys."""
    from datasets import Dataset

    rows = []
    for t in trajectories:
        sample = DistillationSample.from_trajectory(t)
        rows.append({"messages": to_hf_messages(sample.messages), "tools": to_hf_tools(sample.tools)})
    naive = Dataset.from_list(rows)
    rendered = tokenizer.apply_chat_template(naive[1]["messages"], tools=naive[1]["tools"], tokenize=False)
    # Every argument object gains every other call's keys, and every tool schema every other
    # tool's properties, as nulls the template renders into the training text.
    assert '"arguments": {"city": "Paris", "unit": null, "timezone": null}' in rendered
    assert '"properties": {"city": null, "unit": null, "timezone": {"type": "string"}}' in rendered
    build_finetune_jsonl(trajectories, tmp_path / "ours.jsonl", format="hf")
    ours = load_dataset("json", data_files=str(tmp_path / "ours.jsonl"), split="train")[1]
    rendered = tokenizer.apply_chat_template(ours["messages"], tools=json.loads(ours["tools"]), tokenize=False)
    assert '"arguments": {"city": "Paris"}' in rendered and "null" not in rendered
