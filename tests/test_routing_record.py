"""The typed routing record, the one escalation rule, scorer defaults, and the gateway's long-lived cascade."""

import asyncio
import json
import sqlite3

import pytest

from distillery.evaluation.runs import TierRun
from distillery.evaluation.simulate import simulate
from distillery.routing import Cascade, should_escalate
from distillery.routing.config import CascadeConfig, TierConfig, default_scorers
from distillery.serve.backend import GatewayError, StepOptions
from distillery.store import SQLiteStore
from distillery.trajectory import Message, ModelCallRecord, RoutingRecord, Step, ToolCall, Trajectory, Turn, Usage
from tests.routing_fakes import ScriptedModel, answer_tokens, turn_from_tokens
from tests.serve_helpers import STUDENT_URI, TEACHER_URI, scripted_backend

# A step as the cascade stored it before the record was typed: a plain dict with the itemised fields only.
OLD_ROUTING = {
    "tier": 1,
    "confidences": [
        {"tier": 0, "model": "world:student-xs", "confidence": 0.31, "threshold": 0.5},
        {"tier": 1, "model": "world:teacher", "confidence": None},
    ],
    "rejected": [{"tier": 0, "model": "world:student-xs", "confidence": 0.31, "action": "answer:7", "text": "7",
                  "tool_calls": [{"id": "call_1", "name": "get_stock", "arguments": {"sku": "SKU-1"},
                                  "raw_arguments": None, "parse_error": None}]}],
    "calls": [
        {"tier": 0, "model": "world:student-xs", "kind": "proposal", "n": 1, "latency_s": 0.1, "cost_usd": 0.001,
         "usage": {"input_tokens": 100, "output_tokens": 5, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, "reasoning_tokens": 0}},
        {"tier": 1, "model": "world:teacher", "kind": "proposal", "n": 1, "latency_s": 0.2, "cost_usd": 0.01,
         "usage": {"input_tokens": 300, "output_tokens": 25, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, "reasoning_tokens": 0}},
    ],
}


def old_format_trajectory_json() -> str:
    steps = [
        {"text": "There are 7 units.", "producer": "world:teacher", "confidence": None, "escalated": True,
         "cost_usd": 0.011, "routing": OLD_ROUTING},
        {"text": "collected, never routed", "routing": {}},
    ]
    return json.dumps({"id": "old-1", "task_id": "t1", "query": "How many?", "steps": steps, "tags": ["escalated"]})


def check_old_record(trajectory: Trajectory) -> None:
    record = trajectory.steps[0].routing
    assert isinstance(record, RoutingRecord)
    assert record.tier == 1 and record.escalated and record.confidence is None and record.threshold is None
    assert record.usage == Usage(input_tokens=300, output_tokens=25)  # the answering (teacher) call's tokens
    assert record.calls[0].usage.input_tokens == 100 and record.rejected[0].tool_calls[0] == ToolCall(
        id="call_1", name="get_stock", arguments={"sku": "SKU-1"})
    assert record.reasons == ["tier 0 (world:student-xs): confidence 0.31 < threshold 0.5"]
    assert trajectory.steps[1].routing is None and trajectory.steps[1].tier == 0
    assert trajectory.steps[0].tier == 1


def test_an_old_format_routing_dict_loads_as_a_typed_record():
    check_old_record(Trajectory.model_validate_json(old_format_trajectory_json()))


def test_an_old_format_record_in_sqlite_loads_and_round_trips(tmp_path):
    store = SQLiteStore(tmp_path / "store.db")
    store.put(Trajectory(id="old-1", task_id="t1", query="How many?"))
    store.close()
    with sqlite3.connect(tmp_path / "store.db") as conn:  # the row as the old code wrote it
        conn.execute("UPDATE trajectories SET data = ? WHERE id = ?", (old_format_trajectory_json(), "old-1"))
    loaded = SQLiteStore(tmp_path / "store.db").get("old-1")
    check_old_record(loaded)
    assert Trajectory.model_validate_json(loaded.model_dump_json()) == loaded


def test_should_escalate_below_threshold_and_unscored_not_at_threshold():
    assert should_escalate(0.49, 0.5) and not should_escalate(0.5, 0.5) and not should_escalate(0.9, 0.5)
    assert should_escalate(None, 0.5) and should_escalate(None, 0.0)  # unscored: never trusted
    assert not should_escalate(0.0, 0.0)


def sure_answer(text: str = "7") -> Turn:
    return turn_from_tokens(answer_tokens(text, -0.001))


def test_runtime_and_calibration_agree_on_an_unscored_step():
    student = ScriptedModel("fake:student", lambda messages, i, n, t: [sure_answer("6")] * n)
    teacher = ScriptedModel("fake:teacher", lambda messages, i, n, t: [sure_answer("7")] * n)
    cascade = Cascade([student, teacher], [0.0], scorer=[None, None])  # tier 0 has no scorer at all
    step = cascade.run("How many?").steps[0]
    assert step.producer == "fake:teacher" and step.routing.escalated
    assert step.routing.reasons == ["tier 0 (fake:student): confidence none (unscored) < threshold 0"]
    # Calibration's simulation over the same runs makes the same call.
    student_run = TierRun("t1", False, 0.001, 0.1, [None], [0.001], [0.1])
    teacher_run = TierRun("t1", True, 0.01, 0.1, [None], [0.01], [0.1])
    assert student_run.first_doubt(0.0) == 0
    point = simulate([[student_run], [teacher_run]], [0.0])
    assert point.teacher_fraction == 1.0 and point.step_escalation_rate == 1.0


def test_scorer_defaults_come_from_one_place():
    one = CascadeConfig(tiers=[TierConfig(model="world:student-xs")])
    two = CascadeConfig(tiers=[TierConfig(model="world:student-xs", threshold=0.5), TierConfig(model="world:teacher")])
    named = CascadeConfig(tiers=[TierConfig(model="world:student-xs", threshold=0.5, scorer="logprob-min"),
                                 TierConfig(model="world:teacher")])
    assert one.scorer_names() == default_scorers(1) == ["logprob-mean"]  # a lone tier is scored
    assert two.scorer_names() == ["logprob-mean", None] and named.scorer_names() == ["logprob-min", None]
    model = ScriptedModel("fake:m", lambda messages, i, n, t: [sure_answer()] * n)
    assert [t.scorer and t.scorer.name for t in Cascade([model]).tiers] == ["logprob-mean"]
    assert [t.scorer and t.scorer.name for t in Cascade([model, model], [0.5]).tiers] == ["logprob-mean", None]


EASY = [Message(role="user", content="easy: say hello")]


def test_the_gateway_keeps_one_cascade_and_overrides_thresholds_per_request(monkeypatch):
    backend = scripted_backend(threshold=0.5)
    built = []
    original = Cascade.__init__
    monkeypatch.setattr(Cascade, "__init__", lambda self, *a, **k: (built.append(1), original(self, *a, **k))[1])

    async def both():
        return await asyncio.gather(backend.step(EASY, [], StepOptions()),
                                    backend.step(EASY, [], StepOptions(thresholds=[1.0])))

    default, strict = asyncio.run(both())
    assert built == [] and backend.cascade.tiers[0].threshold == 0.5  # no cascade built, none changed
    assert default.tier == STUDENT_URI and not default.escalated and default.routing.threshold == 0.5
    assert strict.tier == TEACHER_URI and strict.escalated and strict.routing.confidences[0].threshold == 1.0
    assert strict.routing.reasons and strict.usage == strict.routing.usage == Usage(input_tokens=300, output_tokens=25)


def test_a_pinned_request_records_the_config_tier_index():
    backend = scripted_backend()
    routed = asyncio.run(backend.step(EASY, [], StepOptions(tier=1)))
    assert routed.tier == TEACHER_URI and routed.tier_index == 1
    assert routed.routing.tier == 1 and routed.routing.pinned and [c.tier for c in routed.routing.confidences] == [1]
    assert [c.tier for c in routed.routing.calls] == [1] and not routed.escalated


@pytest.mark.parametrize("thresholds", [[0.5, 0.5], [1.5]])
def test_a_bad_threshold_override_is_a_400(thresholds):
    with pytest.raises(GatewayError) as error:
        asyncio.run(scripted_backend().step(EASY, [], StepOptions(thresholds=thresholds)))
    assert error.value.status == 400 and error.value.param == "distillery.threshold"


def test_a_record_built_by_hand_derives_its_summary():
    record = RoutingRecord(tier=0, calls=[ModelCallRecord(tier=0, usage=Usage(input_tokens=3))])
    assert record.usage == Usage(input_tokens=3) and not record.escalated and record.reasons == []
    assert Step(routing={}).routing is None
