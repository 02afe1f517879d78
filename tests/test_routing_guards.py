"""Routing guards (issue #16): an invalid action scores 0 under every scorer, in one place; config warnings.

The student of the issue wrote `Incurrencurrency…</tool_call>` and the cascade kept it at
confidence 0.79-0.93. These tests pin down that such a step, an unknown tool and schema-invalid
arguments all score 0 whatever the scorer (the learned one included), that a valid call keeps its
score, and that `cascade.toml` problems surface as one-line errors or warnings.
"""

import json
import math

import pytest

from distillery.errors import ConfigError
from distillery.routing import Cascade
from distillery.routing.confidence import (
    SCORERS,
    ConfidenceScorer,
    LearnedScorer,
    get_scorer,
    invalid_reason,
    register_scorer,
    score_action,
    step_features,
)
from distillery.routing.config import (
    CascadeConfig,
    TierConfig,
    calibration_warning,
    config_warnings,
    load_cascade_config,
    self_check_warning,
)
from distillery.tools import tool
from distillery.trajectory import ToolSpec, Turn
from tests.routing_fakes import ScriptedModel, answer_tokens, n_tool_messages, tool_call_tokens, turn_from_tokens

STOCK = ToolSpec(
    name="get_stock",
    parameters={"type": "object", "properties": {"sku": {"type": "string"}, "city": {"type": "string"}},
                "required": ["sku"], "additionalProperties": False},
)
SURE = -0.05  # every action token at probability 0.95: a confident scorer would keep the step


def call_turn(name="get_stock", args='{"sku": "SKU-1"}', lp=SURE) -> Turn:
    return turn_from_tokens(tool_call_tokens(name, args, lp_name=lp, lp_args=lp))


def garbage_answer() -> Turn:
    """What the issue's student wrote: no opening tag, so it parses as a final answer, markup and all."""
    return turn_from_tokens([("Incurrencurrencurrency", SURE), ("…", SURE), ("</tool_call>", SURE), ("<|im_end|>", SURE)])


@pytest.fixture(scope="module")
def learned_path(tmp_path_factory):
    """A learned scorer that trusts high-probability actions (fitted on hand-made rows)."""
    rows = [step_features(call_turn(lp=lp)) for lp in (-0.01, -0.02, -0.05, -2.0, -3.0, -4.0)]
    scorer = LearnedScorer.fit(rows, [False, False, False, True, True, True])
    path = tmp_path_factory.mktemp("scorer") / "learned.json"
    scorer.save(path)
    return path


def every_scorer(learned_path) -> list[ConfidenceScorer]:
    return [get_scorer(spec) for spec in
            ("logprob-mean", "logprob-min", "logprob-q10", "schema", "agreement:3", f"learned:{learned_path}")]


def confidences(turn: Turn, learned_path, tools=(STOCK,)) -> dict[str, float]:
    # Agreement samples all equal the proposal: an agreement scorer would say 1.0 if it were asked.
    return {s.name: s(turn, tools=list(tools), samples=[turn] * 3) for s in every_scorer(learned_path)}


def test_valid_call_keeps_its_score_under_every_scorer(learned_path):
    turn = call_turn()
    assert invalid_reason(turn, [STOCK]) is None
    scores = confidences(turn, learned_path)
    assert scores["logprob-mean"] == pytest.approx(math.exp(SURE))
    assert scores["logprob-min"] == pytest.approx(math.exp(SURE))
    assert scores["schema"] == 1.0 and scores["agreement:3"] == 1.0
    assert scores[f"learned:{learned_path}"] > 0.5


def test_tool_call_markup_in_a_final_answer_scores_zero(learned_path):
    turn = garbage_answer()
    assert turn.tool_calls == [] and "</tool_call>" in turn.text
    assert "tool-call markup </tool_call>" in invalid_reason(turn, [STOCK])
    assert confidences(turn, learned_path) == {name: 0.0 for name in confidences(call_turn(), learned_path)}
    # An opening tag whose block never closes and does not parse is a parse error: also 0.
    broken = turn_from_tokens([("<tool_call>", SURE), ('{"name": "get_st', SURE)])
    assert set(confidences(broken, learned_path).values()) == {0.0}


def test_unknown_tool_scores_zero(learned_path):
    turn = call_turn(name="get_weather", args='{"city": "Paris"}')
    assert "unknown tool 'get_weather'" in invalid_reason(turn, [STOCK])
    assert set(confidences(turn, learned_path).values()) == {0.0}
    # No tools offered at all: any call names an unknown tool.
    assert set(confidences(call_turn(), learned_path, tools=()).values()) == {0.0}


@pytest.mark.parametrize("args, fragment", [
    ('{"sku": 1042}', "arguments.sku: 1042 is not of type 'string'"),
    ('{"city": "Berlin"}', "'sku' is a required property"),
    ('{"sku": "SKU-1", "colour": "red"}', "Additional properties are not allowed"),
])
def test_schema_invalid_arguments_score_zero(learned_path, args, fragment):
    turn = call_turn(args=args)
    assert fragment in invalid_reason(turn, [STOCK])
    assert set(confidences(turn, learned_path).values()) == {0.0}


def test_unparseable_call_scores_zero(learned_path):
    turn = turn_from_tokens([("<tool_call>", SURE), ('\n{"name": "get_stock", "arguments": {"sku": ', SURE),
                             ("</tool_call>", SURE)])
    assert turn.tool_calls[0].parse_error
    assert set(confidences(turn, learned_path).values()) == {0.0}


def test_the_gate_is_not_up_to_the_scorer():
    """A registered scorer that only implements `score` (and is always sure) is gated too; the random
    router, a baseline that must ignore the action, is the one opt-out."""

    class AlwaysSure(ConfidenceScorer):
        name = "always-sure"

        def score(self, turn, *, tools=None, samples=()):
            return 0.99

    register_scorer("always-sure")(lambda arg: AlwaysSure())
    try:
        sure = get_scorer("always-sure")
        assert sure(call_turn(), tools=[STOCK]) == 0.99
        assert sure(garbage_answer(), tools=[STOCK]) == 0.0
        assert score_action(sure, garbage_answer(), tools=[STOCK])[0] == 0.0
    finally:
        SCORERS.pop("always-sure")
    random_confidence, reason = score_action(get_scorer("random:0"), garbage_answer(), tools=[STOCK])
    assert random_confidence > 0.0 and reason  # scored at random, still recorded as invalid


@tool
def get_stock(sku: str) -> int:
    """Units in stock.

    Args:
        sku: The SKU.
    """
    return 7


def teacher_script(messages, call_index, n, temperature):
    if n_tool_messages(messages) == 0:
        return [turn_from_tokens(tool_call_tokens("get_stock", '{"sku": "SKU-1"}', lp_name=-0.1, lp_args=-0.1))] * n
    return [turn_from_tokens(answer_tokens("There are 7 units.", -0.1))] * n


@pytest.mark.parametrize("student_turn, reason", [
    (garbage_answer, "tool-call markup"),
    (lambda: call_turn(name="delete_everything", args="{}"), "unknown tool"),
    (lambda: call_turn(args='{"sku": 5}'), "is not of type 'string'"),
])
def test_cascade_escalates_an_invalid_but_confident_student(student_turn, reason):
    student = ScriptedModel("fake:student", lambda messages, i, n, t: [student_turn()] * n)
    teacher = ScriptedModel("fake:teacher", teacher_script)
    cascade = Cascade([student, teacher], [0.5], [get_stock], scorer="logprob-mean")
    trajectory = cascade.run("How many units of SKU-1?")
    first = trajectory.steps[0]
    assert first.producer == "fake:teacher" and first.escalated
    student_entry = first.routing.confidences[0]
    assert student_entry.confidence == 0.0 and reason in student_entry.invalid
    assert trajectory.final_answer.startswith("There are 7 units.")


def test_cascade_keeps_a_valid_confident_student():
    student = ScriptedModel("fake:student", teacher_script)
    teacher = ScriptedModel("fake:teacher", teacher_script)
    trajectory = Cascade([student, teacher], [0.5], [get_stock]).run("How many units of SKU-1?")
    assert [s.producer for s in trajectory.steps] == ["fake:student", "fake:student"]
    assert teacher.calls == [] and trajectory.steps[0].confidence == pytest.approx(math.exp(-0.1))


# --- cascade.toml: base_url on a tier, warnings --------------------------------------------------


def write(tmp_path, text, name="cascade.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_url_on_a_tier_is_an_option(tmp_path):
    path = write(tmp_path, '[[tiers]]\nmodel = "world:student-xs"\nthreshold = 0.5\n'
                           '[[tiers]]\nmodel = "openai:gpt-4o"\nbase_url = "http://127.0.0.1:9/v1"\n'
                           'options = { timeout = 5.0 }\n')
    config = load_cascade_config(path)
    assert config.tiers[1].options == {"timeout": 5.0, "base_url": "http://127.0.0.1:9/v1"}
    # The same value in both places is fine; different values are a one-line error naming both fields.
    same = write(tmp_path, '[[tiers]]\nmodel = "openai:gpt-4o"\nbase_url = "http://a/v1"\noptions = { base_url = "http://a/v1" }\n', "same.toml")
    assert load_cascade_config(same).tiers[0].options == {"base_url": "http://a/v1"}
    clash = write(tmp_path, '[[tiers]]\nmodel = "openai:gpt-4o"\nbase_url = "http://a/v1"\noptions = { base_url = "http://b/v1" }\n', "clash.toml")
    with pytest.raises(ConfigError) as error:
        load_cascade_config(clash)
    message = str(error.value)
    assert "\n" not in message and "clash.toml" in message
    assert "tiers[0].base_url" in message and "tiers[0].options.base_url" in message


def test_unknown_tier_key_points_to_options(tmp_path):
    path = write(tmp_path, '[[tiers]]\nmodel = "openai:gpt-4o"\napi_base = "http://a/v1"\n')
    with pytest.raises(ConfigError, match=r"tiers\[0\]: unknown key\(s\) api_base.*options = \{ key = value \}"):
        load_cascade_config(path)


def student_dir(tmp_path, self_check=None, name="student"):
    directory = tmp_path / name
    directory.mkdir()
    report = {"settings": {}}
    if self_check is not None:
        report["self_check"] = self_check
    (directory / "distillation.json").write_text(json.dumps(report))
    return directory


FAILED = {"examples": 16, "valid_format": 0.0, "exact_calls": 0.0, "exact_answers": None, "ok": False,
          "warning": "the student reproduces 0/16 of its training examples; check the chat template"}


def test_self_check_warning_from_distillation_json(tmp_path):
    failed = student_dir(tmp_path, FAILED, "failed")
    assert self_check_warning(f"hf:{failed}") == (
        f"model hf:{failed} failed its self-check ({failed / 'distillation.json'}): {FAILED['warning']}")
    no_text = student_dir(tmp_path, {**FAILED, "warning": None, "exact_calls": 0.25}, "no_text")
    assert "exact calls 25%" in self_check_warning(f"hf:{no_text}") and "16 training examples" in self_check_warning(f"hf:{no_text}")
    # Silent: a passing check, an older run without one, no file at all, a model that is not local.
    assert self_check_warning(f"hf:{student_dir(tmp_path, {**FAILED, 'ok': True, 'warning': None}, 'ok')}") is None
    assert self_check_warning(f"hf:{student_dir(tmp_path, None, 'old')}") is None
    assert self_check_warning(f"hf:{tmp_path / 'nowhere'}") is None
    assert self_check_warning("openai:gpt-4o") is None


def test_config_warnings_name_the_tier_and_the_missing_calibration(tmp_path):
    failed = student_dir(tmp_path, FAILED)
    config = CascadeConfig([TierConfig(f"hf:{failed}", threshold=0.5), TierConfig("world:teacher")], source="c.toml")
    warnings = config_warnings(config)
    assert len(warnings) == 2
    assert warnings[0].startswith(f"tiers[0].model hf:{failed} failed its self-check") and FAILED["warning"] in warnings[0]
    assert warnings[1] == calibration_warning(config) and "c.toml has no [calibration] table" in warnings[1]
    config.calibration = {"predicted_task_escalation_rate": 0.2}
    assert calibration_warning(config) is None and config_warnings(config, calibration=False) == warnings[:1]
