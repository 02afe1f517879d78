"""Confidence scorers: action-token selection, statistics, agreement, validity, learned scorer, metrics."""

import math

import pytest

from distillery.errors import ConfigError
from distillery.routing.confidence import (
    AgreementScorer,
    LearnedScorer,
    NoActionLogprobs,
    action_key,
    action_token_logprobs,
    get_scorer,
    invalid_reason,
    logprob_features,
    step_features,
)
from distillery.evaluation.metrics import apgr, auroc, cpt, ece, oracle_router_curve, pgr, random_router_curve
from distillery.trajectory import TokenLogprob, ToolCall, ToolSpec, Turn
from tests.routing_fakes import tool_call_tokens, turn_from_tokens

STOCK = ToolSpec(
    name="get_stock",
    parameters={"type": "object", "properties": {"sku": {"type": "string"}, "city": {"type": "string"}},
                "required": ["sku"], "additionalProperties": False},
)


def hand_made_call() -> Turn:
    # Reasoning (-3.0) and the scaffolding (-0.001) must be excluded; name -0.5; arguments in 3 tokens.
    tokens = [("I should look up the stock.\n", -3.0), ("<tool_call>", -0.001), ('\n{"name": "', -0.001),
              ("get", -0.2), ("_stock", -0.8), ('", "arguments": ', -0.001),
              ('{"sku": "', -0.1), ("SKU-1042", -1.5), ('", "city": "Berlin"}', -0.4),
              ("}\n", -0.001), ("</tool_call>", -0.001), ("<|im_end|>", -0.001)]
    return turn_from_tokens(tokens)


def test_action_tokens_are_name_and_arguments_only():
    turn = hand_made_call()
    assert turn.tool_calls[0].name == "get_stock"
    assert action_token_logprobs(turn) == [-0.2, -0.8, -0.1, -1.5, -0.4]


def test_logprob_features_on_hand_made_sequence():
    f = logprob_features(hand_made_call())
    values = sorted([-0.2, -0.8, -0.1, -1.5, -0.4])  # -1.5, -0.8, -0.4, -0.2, -0.1
    assert f["lp_min"] == -1.5
    assert f["lp_mean"] == pytest.approx(sum(values) / 5)
    assert f["lp_q50"] == pytest.approx(-0.4)
    # q25 at position 1.0 -> -0.8; q10 at position 0.4 -> -1.5 + 0.4 * 0.7
    assert f["lp_q25"] == pytest.approx(-0.8)
    assert f["lp_q10"] == pytest.approx(-1.5 + 0.4 * 0.7)
    assert f["n_action_tokens"] == 5


def test_logprob_scorers_are_probabilities_of_the_statistic():
    turn = hand_made_call()
    assert get_scorer("logprob-min")(turn, tools=[STOCK]) == pytest.approx(math.exp(-1.5))
    assert get_scorer("logprob-mean")(turn, tools=[STOCK]) == pytest.approx(math.exp(-3.0 / 5))
    assert get_scorer("logprob-q50")(turn, tools=[STOCK]) == pytest.approx(math.exp(-0.4))


def test_answer_tokens_exclude_thinking_and_special_tokens():
    tokens = [("<think>pondering</think>", -5.0), ("\n", -0.01), ("The answer", -0.3), (" is 42.", -0.7), ("<|im_end|>", -9.0)]
    turn = turn_from_tokens(tokens)
    assert turn.tool_calls == []
    assert action_token_logprobs(turn) == [-0.3, -0.7]


def test_no_logprobs_is_an_error_not_confidence_one():
    turn = Turn(text="42", model="anthropic:claude-haiku-4-5")
    with pytest.raises(NoActionLogprobs, match="agreement"):
        get_scorer("logprob-mean")(turn)
    # A hosted tool call: logprobs cover message text only, not the structured call.
    hosted = Turn(text="Let me check.", tool_calls=[ToolCall(name="get_stock", arguments={"sku": "A"})],
                  logprobs=[TokenLogprob(token="Let me check.", logprob=-0.1)], model="openai:gpt-4o-mini")
    with pytest.raises(NoActionLogprobs, match="tool call"):
        action_token_logprobs(hosted)


def test_invalid_calls_have_zero_confidence_whatever_the_logprobs():
    sure = tool_call_tokens("get_stock", '{"sku": 7}', lp_name=-0.001, lp_args=-0.001)  # sku must be a string
    turn = turn_from_tokens(sure)
    assert "sku" in invalid_reason(turn, [STOCK]) or "string" in invalid_reason(turn, [STOCK])
    for spec in ("logprob-min", "logprob-mean", "schema"):
        assert get_scorer(spec)(turn, tools=[STOCK]) == 0.0
    unknown = turn_from_tokens(tool_call_tokens("get_weather", "{}", lp_name=-0.001, lp_args=-0.001))
    assert get_scorer("schema")(unknown, tools=[STOCK]) == 0.0
    broken = turn_from_tokens([("<tool_call>", -0.01), ('{"name": "get_stock", "arguments": {"sku": ', -0.01), ("</tool_call>", -0.01)])
    assert broken.tool_calls[0].parse_error
    assert get_scorer("logprob-mean")(broken, tools=[STOCK]) == 0.0
    good = turn_from_tokens(tool_call_tokens("get_stock", '{"sku": "A"}', lp_name=-0.001, lp_args=-0.001))
    assert get_scorer("schema")(good, tools=[STOCK]) == 1.0


def test_agreement_counts_samples_with_the_same_canonical_action():
    proposal = Turn(tool_calls=[ToolCall(name="get_stock", arguments={"sku": "A", "city": "Berlin"})])
    same_other_order = Turn(tool_calls=[ToolCall(name="get_stock", arguments={"city": "Berlin", "sku": "A"})])
    different = Turn(tool_calls=[ToolCall(name="get_stock", arguments={"sku": "B"})])
    scorer = get_scorer("agreement:4")
    assert isinstance(scorer, AgreementScorer) and scorer.samples_needed == 4
    assert scorer(proposal, tools=[STOCK], samples=[same_other_order, different, proposal, different]) == 0.5
    # Final answers agree after normalisation.
    assert action_key(Turn(text="Berlin.")) == action_key(Turn(text="  berlin "))


def test_registry_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown confidence scorer 'vibes'"):
        get_scorer("vibes")
    with pytest.raises(ConfigError, match="needs a path"):
        get_scorer("learned")


def test_learned_scorer_fits_separable_features_and_round_trips(tmp_path):
    rows, wrong = [], []
    for i in range(40):
        bad = i % 2 == 0
        lp = -2.0 - (i % 5) * 0.1 if bad else -0.1 - (i % 5) * 0.02
        turn = turn_from_tokens(tool_call_tokens("get_stock", '{"sku": "A"}', lp_name=lp, lp_args=lp))
        rows.append(step_features(turn))
        wrong.append(bad)
    scorer = LearnedScorer.fit(rows, wrong)
    confident = turn_from_tokens(tool_call_tokens("get_stock", '{"sku": "A"}', lp_name=-0.05, lp_args=-0.05))
    doubtful = turn_from_tokens(tool_call_tokens("get_stock", '{"sku": "A"}', lp_name=-2.5, lp_args=-2.5))
    assert scorer(confident, tools=[STOCK]) > 0.8 > 0.2 > scorer(doubtful, tools=[STOCK])
    path = tmp_path / "scorer.json"
    scorer.save(path)
    loaded = get_scorer(f"learned:{path}")
    assert loaded(doubtful, tools=[STOCK]) == pytest.approx(scorer(doubtful, tools=[STOCK]))


def test_auroc_and_ece_against_step_wrongness():
    confidences = [0.9, 0.8, 0.3, 0.2]
    assert auroc(confidences, [False, False, True, True]) == 1.0
    assert auroc(confidences, [True, True, False, False]) == 0.0
    assert auroc(confidences, [False] * 4) is None
    # Perfectly calibrated bin: confidence 0.75 with 3 of 4 right -> ECE 0.
    assert ece([0.75] * 4, [False, False, False, True]) == pytest.approx(0.0)
    # Overconfident: 0.95 but half wrong -> 0.45.
    assert ece([0.95] * 4, [False, True, False, True]) == pytest.approx(0.45)


def test_pgr_apgr_cpt_for_random_oracle_and_no_gap():
    student, teacher = 0.4, 0.8
    fractions = [i / 10 for i in range(11)]
    random_curve = random_router_curve(student, teacher, fractions)
    assert apgr(random_curve, student, teacher) == pytest.approx(0.5)
    assert cpt(random_curve, 0.8, student, teacher) == pytest.approx(0.8)
    # Oracle on 10 tasks: student right on 4, teacher rescues 4 of the other 6 -> all gap closed at 40%.
    student_ok = [True] * 4 + [False] * 6
    teacher_ok = [True] * 8 + [False] * 2
    oracle = oracle_router_curve(student_ok, teacher_ok, fractions)
    assert oracle[4] == (0.4, pytest.approx(0.8))
    assert cpt(oracle, 1.0, student, teacher) == pytest.approx(0.4)
    assert apgr(oracle, student, teacher) > 0.75
    assert pgr(0.6, student, teacher) == pytest.approx(0.5)
    assert pgr(0.6, 0.8, 0.8) is None and apgr(oracle, 0.8, 0.8) is None
