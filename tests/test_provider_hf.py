"""The local transformers provider, with tiny models built from configs (no downloads)."""

from __future__ import annotations

import json

import pytest
import torch

from distillery.formats import hermes
from distillery.agent import Agent
from distillery.errors import ConfigError, DistilleryError, ModelError
from distillery.models import load_model
from distillery.models.hf import HFModel, _split_thinking
from distillery.tasks import Task
from distillery.tools import tool
from distillery.trajectory import Message, ToolCall, ToolSpec, Turn
from tests.tiny_models import save_tiny_model, tiny_llama, tiny_tokenizer, train_tiny


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first addend.
        b: The second addend.
    """
    return a + b


# What the model sees: the schema @tool derives from the signature and docstring above.
ADD_SPEC: ToolSpec = add.spec
QUESTION = [Message(role="user", content="What is 2 + 3?")]
CALL_TEXT = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
ANSWER_TEXT = "The answer is 5."


def after_tool_result(call_id: str = "call_x") -> list[Message]:
    return [
        *QUESTION,
        Message(role="assistant", tool_calls=[ToolCall(id=call_id, name="add", arguments={"a": 2, "b": 3})]),
        Message(role="tool", content="5", tool_call_id=call_id, name="add"),
    ]


@pytest.fixture(scope="module")
def random_model() -> HFModel:
    tokenizer = tiny_tokenizer()
    return HFModel("random", model=tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)


@pytest.fixture(scope="module")
def trained_model() -> HFModel:
    """A tiny model that learned one two-step episode: call add(2, 3), then answer 5."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer, seed=0)
    untrained = HFModel("trained", model=model, tokenizer=tokenizer)
    episode = {
        untrained.render_prompt(QUESTION, [ADD_SPEC]): CALL_TEXT + tokenizer.eos_token,
        untrained.render_prompt(after_tool_result(), [ADD_SPEC]): ANSWER_TEXT + tokenizer.eos_token,
    }
    train_tiny(model, tokenizer, episode)
    return HFModel("trained", model=model, tokenizer=tokenizer)


# ---------------------------------------------------------------- prompts and the chat template


def test_render_prompt_is_the_templates_own_output(random_model):
    hand_written = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    expected = random_model.tokenizer.apply_chat_template(
        hand_written,
        tools=[{"type": "function", "function": ADD_SPEC.model_dump()}],
        add_generation_prompt=True,
        tokenize=False,
    )
    messages = [Message(role="system", content="Be brief."), *QUESTION]
    prompt = random_model.render_prompt(messages, [ADD_SPEC])
    assert prompt == expected
    assert json.dumps(ADD_SPEC.model_dump()) in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<tools>" not in random_model.render_prompt(messages)


def test_rendered_parallel_tool_calls_parse_back_to_the_same_calls(random_model):
    calls = [
        ToolCall(name="add", arguments={"a": 2, "b": 3}),
        ToolCall(name="lookup", arguments={"key": "Zürich", "nested": {"deep": [1, 2.5, None, True]}}),
    ]
    for content in ("", "Let me compute both."):
        reply = Message(role="assistant", content=content, tool_calls=calls)
        written = random_model.render_completion(QUESTION, [ADD_SPEC], reply)
        assert written.count(hermes.TOOL_CALL_OPEN) == 2
        text, parsed = hermes.parse_tool_calls(written)
        assert text == content
        assert [(c.name, c.arguments) for c in parsed] == [(c.name, c.arguments) for c in calls]
        assert [c.canonical() for c in parsed] == [c.canonical() for c in calls]


def test_render_completion_of_a_turn_is_what_the_trained_model_writes(trained_model):
    turn = Turn(tool_calls=[ToolCall(name="add", arguments={"a": 2, "b": 3})])
    assert trained_model.render_completion(QUESTION, [ADD_SPEC], turn) == CALL_TEXT


# ---------------------------------------------------------------- generation


def test_trained_model_generates_the_tool_call(trained_model):
    first, second = trained_model.generate(QUESTION, [ADD_SPEC]), trained_model.generate(QUESTION, [ADD_SPEC])
    turn = first[0]
    assert len(first) == 1
    assert turn.stop_reason == "tool_use"
    assert turn.text == ""
    assert [(c.name, c.arguments, c.parse_error) for c in turn.tool_calls] == [("add", {"a": 2, "b": 3}, None)]
    assert turn.tool_calls[0].id != second[0].tool_calls[0].id  # ids are unique across calls
    prompt_tokens = len(trained_model.encode(trained_model.render_prompt(QUESTION, [ADD_SPEC])))
    written_tokens = len(trained_model.encode(CALL_TEXT)) + 1  # + the end-of-turn token
    assert (turn.usage.input_tokens, turn.usage.output_tokens) == (prompt_tokens, written_tokens)
    assert turn.model == "hf:trained"
    # A local model costs what serving its parameters costs (prices.toml [self_hosted]), not nothing.
    from distillery.pricing import self_hosted_price

    assert turn.cost_usd == pytest.approx(self_hosted_price(trained_model.n_params).cost(turn.usage))
    assert turn.cost_usd > 0 and turn.latency_s > 0


def test_final_answer_ends_the_turn(trained_model):
    turn = trained_model.generate(after_tool_result(), [ADD_SPEC])[0]
    assert (turn.text, turn.tool_calls, turn.stop_reason) == (ANSWER_TEXT, [], "end_turn")


def test_max_tokens_cuts_off(trained_model):
    turn = trained_model.generate(QUESTION, [ADD_SPEC], max_tokens=3, logprobs=True)[0]
    assert turn.stop_reason == "max_tokens"
    assert turn.usage.output_tokens == 3 and len(turn.logprobs) == 3
    assert CALL_TEXT.startswith("".join(t.token for t in turn.logprobs))


def test_priced_uri_gets_a_cost(trained_model):
    priced = HFModel("x", model=trained_model.model, tokenizer=trained_model.tokenizer, uri="world:teacher")
    turn = priced.generate(QUESTION, [ADD_SPEC])[0]
    expected = (turn.usage.input_tokens * 5.0 + turn.usage.output_tokens * 25.0) / 1e6  # prices.toml world.teacher
    assert turn.cost_usd == pytest.approx(expected)


def test_sampling_n_turns_differ_and_seed_reproduces(random_model):
    before = torch.random.get_rng_state()
    turns = random_model.generate(QUESTION, [ADD_SPEC], n=4, temperature=1.0, max_tokens=12, seed=7)
    again = random_model.generate(QUESTION, [ADD_SPEC], n=4, temperature=1.0, max_tokens=12, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    assert len(turns) == 4
    raw = [t.text + "".join(c.canonical() for c in t.tool_calls) for t in turns]
    assert len(set(raw)) > 1
    assert raw == [t.text + "".join(c.canonical() for c in t.tool_calls) for t in again]


def test_checkpoint_sampling_defaults_do_not_leak_in(random_model):
    """Qwen checkpoints ship do_sample/top_k/top_p/repetition_penalty defaults; our calls override them."""
    import copy

    tokenizer = random_model.tokenizer
    model = copy.deepcopy(random_model.model)
    model.generation_config.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    qwen_like = HFModel("qwen-like", model=model, tokenizer=tokenizer)
    ids = lambda turns: [[t.token_id for t in turn.logprobs] for turn in turns]  # noqa: E731
    for kwargs in ({}, {"n": 3, "temperature": 1.0, "seed": 11}):
        expected = random_model.generate(QUESTION, [ADD_SPEC], max_tokens=12, logprobs=True, **kwargs)
        got = qwen_like.generate(QUESTION, [ADD_SPEC], max_tokens=12, logprobs=True, **kwargs)
        assert ids(got) == ids(expected)
    # Asked for explicitly, a filter does apply: top_k=1 sampling is greedy decoding.
    greedy = random_model.generate(QUESTION, [ADD_SPEC], max_tokens=12, logprobs=True)
    top1 = random_model.generate(QUESTION, [ADD_SPEC], n=2, temperature=1.0, top_k=1, max_tokens=12, logprobs=True)
    assert ids(top1) == ids(greedy) * 2


def test_greedy_n_gives_identical_turns(random_model):
    turns = random_model.generate(QUESTION, None, n=3, max_tokens=8, logprobs=True)
    assert len(turns) == 3
    assert len({tuple(t.token_id for t in turn.logprobs) for turn in turns}) == 1


def test_generate_many_matches_one_at_a_time(trained_model, random_model):
    conversations = [QUESTION, after_tool_result(), [Message(role="user", content="Hi")], QUESTION]
    batched = trained_model.generate_many(conversations, [ADD_SPEC], max_tokens=48)
    alone = [trained_model.generate(c, [ADD_SPEC], max_tokens=48)[0] for c in conversations]
    assert [len(turns) for turns in batched] == [1, 1, 1, 1]
    summary = lambda t: (t.text, [c.canonical() for c in t.tool_calls], t.stop_reason, t.usage)  # noqa: E731
    assert [summary(turns[0]) for turns in batched] == [summary(t) for t in alone]
    assert batched[0][0].stop_reason == "tool_use" and batched[1][0].text == ANSWER_TEXT

    # Left padding must not shift logprobs: each row re-scores to the same values unbatched.
    sampled = random_model.generate_many(
        conversations[:3], [[ADD_SPEC], None, [ADD_SPEC]], n=2, temperature=1.0, max_tokens=10, logprobs=True, seed=5
    )
    assert [len(turns) for turns in sampled] == [2, 2, 2]
    for conversation, tools, turns in zip(conversations[:3], [[ADD_SPEC], None, [ADD_SPEC]], sampled):
        rescored = random_model.sequence_logprobs(conversation, tools, [[t.token_id for t in turn.logprobs] for turn in turns])
        for turn, reference in zip(turns, rescored):
            assert [t.logprob for t in turn.logprobs] == pytest.approx([t.logprob for t in reference], abs=1e-4)
    with pytest.raises(ConfigError, match="2 tool lists for 3"):
        random_model.generate_many(conversations[:3], [[ADD_SPEC], None])


# ---------------------------------------------------------------- logprobs


def forward_logprobs(model: HFModel, prompt_ids: list[int], generated: list[int]) -> torch.Tensor:
    """log_softmax of a plain forward pass at the positions that predicted `generated`."""
    ids = torch.tensor([prompt_ids + generated])
    with torch.no_grad():
        logits = model.model(input_ids=ids).logits[0].float()
    return logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(generated)].log_softmax(-1)


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_logprobs_align_with_text_and_match_a_forward_pass(random_model, temperature):
    turn = random_model.generate(
        QUESTION, [ADD_SPEC], temperature=temperature, max_tokens=24, logprobs=True, top_logprobs=5, seed=3
    )[0]
    ids = [t.token_id for t in turn.logprobs]
    assert len(ids) == turn.usage.output_tokens - (0 if turn.stop_reason == "max_tokens" else 1)
    raw_text = random_model.tokenizer.decode(ids, skip_special_tokens=False)
    assert "".join(t.token for t in turn.logprobs) == raw_text

    prompt_ids = random_model.encode(random_model.render_prompt(QUESTION, [ADD_SPEC]))
    reference = forward_logprobs(random_model, prompt_ids, ids)
    # Temperature-1 logprobs, whatever temperature sampled the tokens.
    expected = reference.gather(-1, torch.tensor(ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor([t.logprob for t in turn.logprobs]), expected, atol=1e-4)
    for position, token in enumerate(turn.logprobs):
        values = [alt.logprob for alt in token.top]
        assert len(values) == 5 and values == sorted(values, reverse=True)
        assert values[0] == pytest.approx(reference[position].max().item(), abs=1e-4)
        if temperature == 0.0:
            assert token.top[0].token_id == token.token_id


def test_token_pieces_split_multibyte_characters_without_losing_text(random_model):
    text = 'Zürich → 日本 {"ok": true}'
    ids = random_model.encode(text)
    pieces = random_model.token_pieces(ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)


def metaspace_tokenizer():
    """A SentencePiece-style tokenizer (Llama 2, Mistral): decoding drops the first token's leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(byte_fallback=False, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<|im_end|>"], show_progress=False)
    backend.train_from_iterator(["the quick brown fox jumps over the lazy dog", "hello world of tools"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", unk_token="<unk>")
    tokenizer.chat_template = hermes.HERMES_CHAT_TEMPLATE
    return tokenizer


def test_token_pieces_concatenate_for_any_ids_and_tokenizer(random_model):
    import random

    byte_level = random_model
    tokenizer = metaspace_tokenizer()
    metaspace = HFModel("m", model=tiny_llama(tokenizer), tokenizer=tokenizer)
    ids = metaspace.encode("the lazy dog jumps over the quick fox")
    pieces = metaspace.token_pieces(ids)
    assert "".join(pieces) == tokenizer.decode(ids) == "the lazy dog jumps over the quick fox"
    assert pieces[1].startswith(" ")  # a later token keeps its space although it is decoded in a window

    rng = random.Random(0)
    for model in (byte_level, metaspace):
        size = len(model.tokenizer)
        for _ in range(100):
            ids = [rng.randrange(size) for _ in range(rng.randrange(40))]
            pieces = model.token_pieces(ids)
            assert len(pieces) == len(ids)
            assert "".join(pieces) == model.tokenizer.decode(ids, skip_special_tokens=False)


def test_sequence_logprobs_equal_generate_time_logprobs(random_model, trained_model):
    # Token ids: exactly what the random model sampled, even where it is not the canonical tokenization.
    turn = random_model.generate(QUESTION, [ADD_SPEC], max_tokens=16, logprobs=True)[0]
    [scored] = random_model.sequence_logprobs(QUESTION, [ADD_SPEC], [[t.token_id for t in turn.logprobs]])
    assert [t.token_id for t in scored] == [t.token_id for t in turn.logprobs]
    assert [t.token for t in scored] == [t.token for t in turn.logprobs]
    assert [t.logprob for t in scored] == pytest.approx([t.logprob for t in turn.logprobs], abs=1e-4)

    # Text: the trained model's greedy tool call, re-scored in a batch with a shorter alternative.
    turn = trained_model.generate(QUESTION, [ADD_SPEC], logprobs=True)[0]
    written = "".join(t.token for t in turn.logprobs)
    scored, other = trained_model.sequence_logprobs(QUESTION, [ADD_SPEC], [written, "The answer is"])
    assert [t.logprob for t in scored] == pytest.approx([t.logprob for t in turn.logprobs], abs=1e-4)
    assert "".join(t.token for t in other) == "The answer is"
    assert sum(t.logprob for t in other) < sum(t.logprob for t in scored)


def test_sequence_logprobs_can_score_the_end_of_turn(trained_model):
    [with_end] = trained_model.sequence_logprobs(QUESTION, [ADD_SPEC], [CALL_TEXT], include_end=True, top_logprobs=2)
    assert with_end[-1].token == "<|im_end|>" and with_end[-1].token_id == trained_model.tokenizer.eos_token_id
    assert with_end[-1].logprob > -0.5  # the trained model is sure the turn ends after its call
    assert "".join(t.token for t in with_end[:-1]) == CALL_TEXT
    assert trained_model.sequence_logprobs(QUESTION, [ADD_SPEC], []) == []
    assert trained_model.sequence_logprobs(QUESTION, [ADD_SPEC], [""]) == [[]]


# ---------------------------------------------------------------- loading and errors


def test_missing_directory_is_a_one_line_config_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError) as caught:
        load_model(f"hf:{missing}")
    assert str(missing) in str(caught.value) and "\n" not in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        HFModel(tmp_path / "empty")
    tiny_llama(tiny_tokenizer()).save_pretrained(tmp_path / "weights-only")
    with pytest.raises(ConfigError, match="no tokenizer files"):
        HFModel(tmp_path / "weights-only")


def test_loads_from_a_directory_and_matches_the_in_memory_model(tmp_path, trained_model):
    path = save_tiny_model(tmp_path / "m", model=trained_model.model, tokenizer=trained_model.tokenizer)
    loaded = load_model(f"hf:{path}", max_new_tokens=64)
    assert isinstance(loaded, HFModel) and loaded.uri == f"hf:{path}"
    assert loaded.render_prompt(QUESTION, [ADD_SPEC]) == trained_model.render_prompt(QUESTION, [ADD_SPEC])
    turn = loaded.generate(QUESTION, [ADD_SPEC], logprobs=True)[0]
    reference = trained_model.generate(QUESTION, [ADD_SPEC], logprobs=True)[0]
    assert [c.canonical() for c in turn.tool_calls] == [c.canonical() for c in reference.tool_calls]
    assert [t.logprob for t in turn.logprobs] == pytest.approx([t.logprob for t in reference.logprobs], abs=1e-5)


def test_bad_arguments_and_overlong_prompts_are_clear_errors(random_model):
    with pytest.raises(DistilleryError, match="temperature"):
        random_model.generate(QUESTION, temperature=-1)
    with pytest.raises(DistilleryError, match="n must be"):
        random_model.generate(QUESTION, n=0)
    tokenizer = random_model.tokenizer
    short = HFModel("short", model=tiny_llama(tokenizer, max_positions=64), tokenizer=tokenizer)
    with pytest.raises(ModelError, match="context is 64"):
        short.generate(QUESTION, [ADD_SPEC])


def test_a_tokenizer_without_chat_template_is_refused(random_model):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="chat_template"):
        HFModel("x", model=random_model.model, tokenizer=tokenizer)


def test_chat_template_kwargs_reach_the_template_and_config_eos_ids_stop(random_model):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}{{ 'T' if enable_thinking else 'F' }}"
    model = tiny_llama(tokenizer)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]  # as Qwen2.5 ships
    thinking = HFModel("x", model=model, tokenizer=tokenizer, chat_template_kwargs={"enable_thinking": True})
    assert thinking.render_prompt(QUESTION) == "What is 2 + 3?T"
    assert HFModel("x", model=model, tokenizer=tokenizer).render_prompt(QUESTION) == "What is 2 + 3?F"
    assert thinking.stop_token_ids == {tokenizer.eos_token_id, tokenizer.pad_token_id}


def test_leading_think_block_becomes_thinking():
    thinking, rest = _split_thinking("<think>\nadd them\n</think>\n\n" + CALL_TEXT)
    assert [t.thinking for t in thinking] == ["add them"] and rest.strip() == CALL_TEXT
    assert _split_thinking("no thoughts") == ([], "no thoughts")


# ---------------------------------------------------------------- the agent loop


def test_agent_runs_the_trained_model_with_a_real_tool(trained_model):
    agent = Agent(trained_model, [add], logprobs=True)
    task = Task(id="add-2-3", query=QUESTION[0].content, expected=5, checker="numeric")
    trajectory = agent.run(task)
    assert trajectory.status == "ok"
    assert [s.stop_reason for s in trajectory.steps] == ["tool_use", "end_turn"]
    [result] = trajectory.steps[0].tool_results
    assert (result.content, result.is_error) == ("5", False)
    assert result.tool_call_id == trajectory.steps[0].tool_calls[0].id
    assert trajectory.final_answer == ANSWER_TEXT
    assert trajectory.outcome is not None and trajectory.outcome.success
    assert all(step.logprobs and step.producer == "hf:trained" for step in trajectory.steps)
