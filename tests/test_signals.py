"""Teacher signals on their own: sidecar layout in batches, action rendering, action batches."""

from __future__ import annotations

import json

import torch
from datasets import Dataset

from distillery.distill.signals import (
    PAD_LOGPROB,
    ActionSignal,
    SparseTopKSignal,
    _action_message,
    same_vocabulary,
)
from distillery.chat_tokens import completion_text, encode
from distillery.distill.trainer import chat_rows
from distillery.trajectory import ToolCall
from tests.tiny_models import tiny_tokenizer
from tests.trainer_helpers import chat_records


def test_sparse_targets_move_to_the_position_that_predicts_them():
    # One example of 6 tokens; targets for tokens 2 and 4, k = 3, one padded slot at token 4.
    ids = torch.full((6, 3), -1)
    logprobs = torch.full((6, 3), float("-inf"))
    has_target = torch.zeros(6, dtype=torch.bool)
    ids[2], logprobs[2], has_target[2] = torch.tensor([7, 8, 9]), torch.tensor([-0.1, -2.0, -3.0]), True
    ids[4], logprobs[4], has_target[4] = torch.tensor([0, 5, -1]), torch.tensor([-0.5, -1.0, float("-inf")]), True
    signal = SparseTopKSignal({0: (ids, logprobs, has_target)})
    batch = {"input_ids": torch.zeros(1, 8, dtype=torch.long), "attention_mask": torch.tensor([[1] * 6 + [0] * 2])}
    batch = signal.collate(batch, [0])
    assert batch["kd_mask"][0].tolist() == [False, True, False, True, False, False, False, False]
    assert batch["kd_topk_ids"][0, 1].tolist() == [7, 8, 9]  # logits at 1 predict token 2
    assert torch.allclose(batch["kd_topk_logprobs"][0, 1], torch.tensor([-0.1, -2.0, -3.0]))
    # The padded slot gets an id not already among the alternatives and a finite, tiny logprob.
    filled = batch["kd_topk_ids"][0, 3].tolist()
    assert filled[:2] == [0, 5] and filled[2] not in (0, 5) and filled[2] >= 0
    assert batch["kd_topk_logprobs"][0, 3, 2].item() == PAD_LOGPROB


def test_action_keys_render_as_assistant_messages():
    call = ToolCall(name="get_weather", arguments={"city": "Paris"})
    single = _action_message(call.canonical())
    assert single["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    pair = _action_message("[" + ",".join([call.canonical(), ToolCall(name="add", arguments={"a": 1}).canonical()]) + "]")
    assert [c["function"]["name"] for c in pair["tool_calls"]] == ["get_weather", "add"]
    answer = _action_message(json.dumps({"final_answer": "It is 21 degrees."}))
    assert answer == {"role": "assistant", "content": "It is 21 degrees."}


def test_action_batches_score_only_the_new_assistant_turn():
    tokenizer = tiny_tokenizer()
    rows = chat_rows(chat_records(2))
    weather = ToolCall(name="get_weather", arguments={"city": "Paris"}).canonical()
    rome = ToolCall(name="get_weather", arguments={"city": "Rome"}).canonical()
    # Row 1 is a weather conversation: two assistant steps, a distribution for each.
    rows[1]["action_distributions"] = json.dumps([{weather: 0.75, rome: 0.25}, {json.dumps({"final_answer": "21"}): 1.0}])
    rows[0]["action_distributions"] = json.dumps([])
    signal = ActionSignal(Dataset.from_list(rows), tokenizer)
    batch = signal.collate({}, [0, 1])
    assert batch["action_state"].tolist() == [0, 0, 1]
    assert batch["action_prob"].tolist() == [0.75, 0.25, 1.0]
    decoded = [tokenizer.decode(ids[labels != -100]) for ids, labels in zip(batch["action_input_ids"], batch["action_labels"])]
    assert decoded[0].startswith("<tool_call>") and '"Paris"' in decoded[0] and decoded[0].endswith("<|im_end|>")
    assert '"Rome"' in decoded[1] and "What is the weather" not in decoded[1]
    # The second state's prefix holds the first assistant turn, which is context, not a target.
    assert decoded[2] == "21<|im_end|>"
    messages = [{k: v for k, v in m.items() if v is not None} for m in rows[1]["messages"]]
    second = [i for i, m in enumerate(messages) if m["role"] == "assistant"][1]
    prompt, _ = completion_text(tokenizer, messages, second, rows[1]["tools"])
    prompt_ids = encode(tokenizer, prompt)
    # Exactly the inference prompt's tokens come first, all context.
    assert batch["action_input_ids"][2, : len(prompt_ids)].tolist() == prompt_ids
    assert batch["action_labels"][2, : len(prompt_ids)].eq(-100).all()


def test_same_vocabulary():
    assert same_vocabulary(tiny_tokenizer(), tiny_tokenizer())
    assert not same_vocabulary(tiny_tokenizer(), tiny_tokenizer(["another corpus entirely"], vocab_size=280))
