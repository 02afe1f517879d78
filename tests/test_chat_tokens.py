"""Training tokens are exactly what inference asks the model to continue (`distillery.chat_tokens`).

Checked with the world tokenizer (merges cross newlines, so a turn that starts with `<tool_call>`
merges into its prompt when a whole conversation is tokenized at once) and with a Qwen-style
byte-level tokenizer built here (Qwen2.5's pre-tokenizer regex, `<tool_call>` an added token), on
tool-call-only turns (GPT-4o's habit), parallel calls, and turns with text.
"""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from distillery.formats.hermes import EOS_TOKEN, HERMES_CHAT_TEMPLATE, PAD_TOKEN, SPECIAL_TOKENS
from distillery.chat_tokens import (
    check_prefix_property,
    completion_text,
    encode,
    render,
    tokenize_conversation,
    tokenize_rows,
)
from distillery.errors import ConfigError
from distillery.world.models import load_world_tokenizer

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "convert_currency", "description": "Convert money.",
     "parameters": {"type": "object", "properties": {"amount": {"type": "number"}, "to": {"type": "string"}},
                    "required": ["amount", "to"]}}},
]


def _call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def conversation(kind: str) -> list[dict]:
    """A two-step agent conversation whose first assistant turn is of the given kind."""
    first = {
        "tool_only": {"role": "assistant", "content": "", "tool_calls": [_call("a", "get_weather", {"city": "Paris"})]},
        "parallel": {"role": "assistant", "content": "", "tool_calls": [
            _call("a", "get_weather", {"city": "Paris"}), _call("b", "get_weather", {"city": "Rome"})]},
        "text": {"role": "assistant", "content": "I'll check the weather first.",
                 "tool_calls": [_call("a", "get_weather", {"city": "Paris"})]},
    }[kind]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": '{"sky": "clear", "celsius": 21}'}
               for c in first["tool_calls"]]
    return [
        {"role": "system", "content": "You are a travel agent."},
        {"role": "user", "content": "What's the weather in Paris and Rome?"},
        first,
        *results,
        {"role": "assistant", "content": "", "tool_calls": [_call("c", "convert_currency", {"amount": 20, "to": "EUR"})]},
        {"role": "tool", "tool_call_id": "c", "content": "18.4"},
        {"role": "assistant", "content": "Clear and 21 C; 20 USD is 18.40 EUR."},
    ]


def qwen_style_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with Qwen2.5's pre-tokenizer and `<tool_call>` tags as added tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    corpus = [render_plain(conversation(kind)) for kind in ("tool_only", "parallel", "text")]
    backend.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=600, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in
                        ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                        additional_special_tokens=["<|im_start|>"], clean_up_tokenization_spaces=False)
    tokenizer.chat_template = HERMES_CHAT_TEMPLATE
    return tokenizer


def render_plain(messages: list[dict]) -> str:
    return "\n".join(json.dumps(m) for m in messages)


TOKENIZERS = {"world": load_world_tokenizer, "qwen-style": qwen_style_tokenizer}


@pytest.mark.parametrize("tokenizer_name", sorted(TOKENIZERS))
@pytest.mark.parametrize("kind", ["tool_only", "parallel", "text"])
def test_every_trained_turn_follows_its_inference_prompt_exactly(tokenizer_name, kind):
    tokenizer = TOKENIZERS[tokenizer_name]()
    messages = conversation(kind)
    pieces = tokenize_conversation(tokenizer, messages, TOOLS)
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    assert sorted(t for p in pieces for t in p.turns) == assistant_turns  # each turn trained once
    for piece in pieces:
        for turn in piece.turns:
            prompt, completion = completion_text(tokenizer, messages, turn, TOOLS)
            prompt_ids, completion_ids = encode(tokenizer, prompt), encode(tokenizer, completion)
            # What HFModel feeds the model at inference, then what it should write.
            assert piece.input_ids[: len(prompt_ids)] == prompt_ids
            assert piece.input_ids[len(prompt_ids): len(prompt_ids) + len(completion_ids)] == completion_ids
            assert piece.loss_mask[len(prompt_ids): len(prompt_ids) + len(completion_ids)] == [1] * len(completion_ids)
            assert tokenizer.decode(completion_ids).endswith(EOS_TOKEN)
    # The trained tokens are the assistant turns and nothing else.
    trained = [tokenizer.decode([t for t, m in zip(p.input_ids, p.loss_mask) if m]) for p in pieces]
    assert "".join(trained).count(EOS_TOKEN) == len(assistant_turns)
    assert "<tool_response>" not in "".join(trained) and '"sky"' not in "".join(trained)  # no tool result
    rows = [{"messages": messages, "tools": json.dumps(TOOLS)}]
    check_prefix_property(tokenizer, rows, tokenize_rows(tokenizer, rows))


def test_the_world_tokenizer_merges_a_tool_only_turn_into_its_prompt():
    # The bug this module exists for: whole-conversation tokens differ from the inference prompt's.
    tokenizer = load_world_tokenizer()
    messages = conversation("tool_only")
    whole = tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True)
    prompt_ids = encode(tokenizer, render(tokenizer, messages[:2], TOOLS, add_generation_prompt=True))
    assert whole["input_ids"][: len(prompt_ids)] != prompt_ids
    labels = [t if m else -100 for t, m in zip(whole["input_ids"], whole["assistant_masks"])]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    rows = [{"messages": messages, "tools": TOOLS}]
    with pytest.raises(ConfigError, match=r"training example 0 \(sequence 0\): assistant turn 2: the inference prompt"):
        check_prefix_property(tokenizer, rows, [{"input_ids": whole["input_ids"], "labels": labels,
                                                 "source_row": 0, "turns": turns}])
    # Tokenized turn by turn, the conversation splits where the history re-tokenizes differently.
    pieces = tokenize_conversation(tokenizer, messages, TOOLS)
    assert len(pieces) > 1


def test_the_check_names_the_first_bad_example():
    tokenizer = load_world_tokenizer()
    rows = [{"messages": conversation("text"), "tools": TOOLS}, {"messages": conversation("tool_only"), "tools": TOOLS}]
    sequences = tokenize_rows(tokenizer, rows)
    check_prefix_property(tokenizer, rows, sequences)
    bad = next(i for i, s in enumerate(sequences) if s["source_row"] == 1)
    sequences[bad]["input_ids"] = sequences[bad]["input_ids"][:5] + [0] + sequences[bad]["input_ids"][6:]
    with pytest.raises(ConfigError, match=rf"training example 1 \(sequence {bad}\)"):
        check_prefix_property(tokenizer, rows, sequences)


def test_the_trainer_trains_the_turn_by_turn_tokens():
    from distillery.distill.trainer import DistillationTrainer, chat_rows
    from distillery.distill.training_arguments import DistillationTrainingArguments
    from tests.tiny_models import tiny_llama

    tokenizer = load_world_tokenizer()
    rows = chat_rows([{"messages": conversation(kind), "tools": TOOLS} for kind in ("tool_only", "parallel", "text")])
    args = DistillationTrainingArguments(output_dir="unused", max_steps=1, report_to="none", use_cpu=True, max_length=4096)
    trainer = DistillationTrainer(tiny_llama(tokenizer), args=args, train_dataset=Dataset.from_list(rows),
                                  processing_class=tokenizer)
    prepared = trainer.train_dataset.to_list()
    assert {s["source_row"] for s in prepared} == {0, 1, 2}
    for sequence in prepared:
        row = rows[sequence["source_row"]]
        messages = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
        first = sequence["turns"][0]
        prompt_ids = encode(tokenizer, completion_text(tokenizer, messages, first, row["tools"])[0])
        assert sequence["input_ids"][: len(prompt_ids)] == prompt_ids
        assert sequence["labels"][len(prompt_ids) - 1] == -100 and sequence["labels"][len(prompt_ids)] != -100


def test_build_with_a_tokenizer_checks_every_example(tmp_path):
    from distillery.dataset.builder import DatasetBuilder
    from tests.test_dataset_support import varied_trajectories

    tokenizer = load_world_tokenizer()
    trajectories = varied_trajectories(4)
    for t in trajectories:
        t.steps[0].text = ""  # GPT-4o's habit: the first turn is calls only
    report = DatasetBuilder(format="hf", tokenizer=tokenizer).write_file(trajectories, tmp_path / "train.jsonl")
    conversations, sequences = report.sequences["train"]
    assert conversations == 4 and sequences >= 4
    assert report.to_dict()["sequences"]["train"] == {"conversations": 4, "training_sequences": sequences}
    # A template that renders history unlike its own prompts cannot be trained on: the build says
    # which example, instead of writing a dataset the student cannot use.
    broken = load_world_tokenizer()
    generation_prompt = "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    assert generation_prompt in HERMES_CHAT_TEMPLATE
    broken.chat_template = HERMES_CHAT_TEMPLATE.replace(generation_prompt, generation_prompt.replace("\\n", "\\n\\n"))
    with pytest.raises(ConfigError, match=r"^samples\[0\]: assistant turn 2: the chat template renders"):
        DatasetBuilder(format="hf", tokenizer=broken).write_file(trajectories, tmp_path / "broken.jsonl")
