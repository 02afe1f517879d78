"""StudentAgent / Cascade routing: thresholds, cost accounting, task mode, fallback failures, store, config."""

import time

import pytest

from distillery.errors import ConfigError
from distillery.pricing import cost_usd
from distillery.routing import Cascade, StudentAgent, load_cascade_config, run_student, write_cascade_config
from distillery.routing.cascade import CascadeConfig, TierConfig
from distillery.routing.confidence import ConfidenceScorer
from distillery.store import SQLiteStore
from distillery.tasks import Task
from distillery.tools import tool
from distillery.trajectory import ToolCall, Turn, Usage
from tests.routing_fakes import ScriptedModel, answer_tokens, n_tool_messages, tool_call_tokens, turn_from_tokens


@tool
def get_stock(sku: str) -> int:
    """Units of a SKU in stock.

    Args:
        sku: The product's stock-keeping unit.
    """
    return {"SKU-1": 12, "SKU-2": 30}.get(sku, 0)


TASK = Task(id="t1", query="How many units of SKU-1?", expected=12, checker="numeric")


def agent_script(lp: float, answer: str = "12", sku: str = "SKU-1"):
    """Call get_stock first, then answer; every action token has logprob `lp`."""

    def script(messages, call_index, n, temperature):
        if n_tool_messages(messages) == 0:
            tokens = tool_call_tokens("get_stock", f'{{"sku": "{sku}"}}', lp_name=lp, lp_args=lp)
        else:
            tokens = answer_tokens(answer, lp)
        return [turn_from_tokens(tokens, usage=Usage(input_tokens=1000, output_tokens=50))] * n

    return script


class FixedScorer(ConfidenceScorer):
    """Returns the confidences it is given, one per call, so tests control routing exactly."""

    name = "fixed"

    def __init__(self, values):
        self.values = list(values)

    def score(self, turn, *, tools=None, samples=()):
        return self.values.pop(0)


def test_escalation_happens_below_threshold_not_at_it():
    student = ScriptedModel("world:student-xs", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))
    # Step 1 exactly at the threshold -> kept; step 2 a hair below -> escalated.
    agent = StudentAgent(student, teacher, scorer=FixedScorer([0.5, 0.5 - 1e-9]), threshold=0.5, tools=[get_stock])
    trajectory = agent.run(TASK)
    first, second = trajectory.steps
    assert (first.producer, first.escalated, first.confidence) == ("world:student-xs", False, 0.5)
    assert (second.producer, second.escalated) == ("world:teacher", True)
    assert second.routing.rejected[0].confidence == pytest.approx(0.5 - 1e-9)
    assert [c.confidence for c in second.routing.confidences] == [pytest.approx(0.5 - 1e-9), None]
    assert trajectory.outcome.success and "escalated" in trajectory.tags
    assert trajectory.metadata["routing"]["steps_by_tier"] == [1, 1]


def test_logprob_threshold_boundary_with_real_scorer():
    import math

    student = ScriptedModel("world:student-xs", agent_script(-0.5))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))
    at = StudentAgent(student, teacher, scorer="logprob-mean", threshold=math.exp(-0.5), tools=[get_stock]).run(TASK)
    assert all(s.producer == "world:student-xs" for s in at.steps) and teacher.calls == []
    above = StudentAgent(student, teacher, scorer="logprob-mean", threshold=math.exp(-0.5) + 1e-12, tools=[get_stock]).run(TASK)
    assert all(s.producer == "world:teacher" and s.escalated for s in above.steps)
    # The student was asked for logprobs (the scorer needs them); the last tier is never scored.
    assert student.calls[0]["logprobs"] is True and teacher.calls[0]["logprobs"] is False


def test_cost_sums_to_every_call_made_including_rejected_proposals_and_samples():
    student = ScriptedModel("world:student-xs", agent_script(-2.0))  # agreement 1.0 but we force escalation below
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))

    def disagreeing(messages, call_index, n, temperature):
        turns = agent_script(-2.0)(messages, call_index, 1, temperature)
        # Samples disagree with the proposal on step 1 (different SKU) -> agreement 0 -> escalate.
        if n > 1 and n_tool_messages(messages) == 0:
            return [turn_from_tokens(tool_call_tokens("get_stock", '{"sku": "SKU-9"}', lp_name=-1, lp_args=-1),
                                     usage=Usage(input_tokens=1000, output_tokens=50))] * n
        return turns * n

    student.script = disagreeing
    agent = StudentAgent(student, teacher, scorer="agreement:3", threshold=0.5, tools=[get_stock])
    trajectory = agent.run(TASK)
    assert [s.producer for s in trajectory.steps] == ["world:teacher", "world:student-xs"]
    # Independent tally: every turn each fake returned, priced by its URI.
    expected = 0.0
    for model in (student, teacher):
        for call in model.calls:
            expected += call["n"] * cost_usd(model.uri, Usage(input_tokens=1000, output_tokens=50))
    assert len(student.calls) == 4 and len(teacher.calls) == 1  # 2 steps x (proposal + samples), 1 fallback
    assert trajectory.cost_usd == pytest.approx(expected)
    assert sum(c.cost_usd for s in trajectory.steps for c in s.routing.calls) == pytest.approx(expected)
    assert trajectory.metadata["routing"]["cost_by_tier"][1] == pytest.approx(cost_usd("world:teacher", Usage(input_tokens=1000, output_tokens=50)))
    assert trajectory.usage.output_tokens == 50 * (1 + 3 + 1 + 1 + 3)


def test_task_mode_keeps_the_fallback_for_the_rest_of_the_task():
    student = ScriptedModel("world:student-xs", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))
    agent = StudentAgent(student, teacher, scorer=FixedScorer([0.1, 0.99]), threshold=0.5, escalate="task", tools=[get_stock])
    trajectory = agent.run(TASK)
    assert [s.producer for s in trajectory.steps] == ["world:teacher", "world:teacher"]
    assert len(student.calls) == 1  # never asked again after escalating
    assert [s.escalated for s in trajectory.steps] == [True, False]


def test_restart_mode_starts_a_doubted_task_over_with_the_teacher_and_charges_the_abandoned_attempt():
    # The student's first call names the wrong SKU with confidence; its answer step is then doubted.
    student = ScriptedModel("world:student-xs", agent_script(-0.1, answer="30", sku="SKU-2"))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))
    agent = StudentAgent(student, teacher, scorer=FixedScorer([0.9, 0.1]), threshold=0.5, escalate="restart",
                         tools=[get_stock])
    trajectory = agent.run(TASK)
    # Only the teacher's clean run is kept: it looked up SKU-1 from the query, not the student's SKU-2.
    assert [s.producer for s in trajectory.steps] == ["world:teacher", "world:teacher"]
    assert trajectory.steps[0].tool_calls[0].arguments == {"sku": "SKU-1"}
    assert trajectory.outcome.success and "escalated" in trajectory.tags
    assert len(student.calls) == 2 and len(teacher.calls) == 2  # the teacher was not asked mid-task
    # The abandoned student steps are paid for by the first kept step.
    student_cost = cost_usd("world:student-xs", Usage(input_tokens=1000, output_tokens=50))
    teacher_cost = cost_usd("world:teacher", Usage(input_tokens=1000, output_tokens=50))
    assert trajectory.cost_usd == pytest.approx(2 * student_cost + 2 * teacher_cost)
    # The student was asked twice (its kept-then-abandoned tool call, its doubted answer), and doubted once.
    abandoned = trajectory.steps[0].routing.abandoned_attempt.model_dump()
    [detail] = abandoned.pop("attempts_detail")
    assert abandoned == {
        "attempts": 1, "steps": 1, "cost_usd": pytest.approx(2 * student_cost), "asked_tiers": [0, 0], "doubted_tiers": [0],
    }
    # What was abandoned is kept for readers: the attempt's step and the doubted proposal.
    assert len(detail["steps"]) == 1 and "logprobs" not in detail["steps"][0]
    assert detail["rejected"]["confidence"] == 0.1 and detail["rejected"]["threshold"] == 0.5
    assert detail["rejected"]["model"] == "world:student-xs"
    assert trajectory.metadata["restarted"]["abandoned_steps"] == 1
    record = trajectory.steps[0].routing
    assert record.escalated and record.reasons[-1] == "restarted at tier 1 after 1 abandoned attempt(s) (1 step(s))"
    stored = record.model_dump(mode="json", exclude={"reasons", "escalated", "usage"})  # as an old dict held it
    assert type(record).model_validate(stored).reasons == record.reasons
    assert trajectory.metadata["routing"]["steps_by_tier"] == [0, 2]
    assert trajectory.metadata["routing"]["cost_by_tier"] == pytest.approx([2 * student_cost, 2 * teacher_cost])
    assert trajectory.usage.output_tokens == 50 * 4


def test_restart_mode_does_not_restart_a_doubted_first_step():
    student = ScriptedModel("world:student-xs", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))
    agent = StudentAgent(student, teacher, scorer=FixedScorer([0.1]), threshold=0.5, escalate="restart", tools=[get_stock])
    trajectory = agent.run(TASK)
    # Nothing to abandon: the teacher answers step 1 and, as in task mode, keeps the task.
    assert [s.producer for s in trajectory.steps] == ["world:teacher", "world:teacher"]
    assert len(student.calls) == 1 and "restarted" not in trajectory.metadata
    assert [s.escalated for s in trajectory.steps] == [True, False]


def test_three_tiers_climb_in_order():
    small = ScriptedModel("world:student-xs", agent_script(-0.1))
    medium = ScriptedModel("world:student-s", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))
    # Step 1: small 0.2 < 0.5 -> medium 0.3 < 0.4 -> teacher. Step 2: small 0.1 -> medium 0.9 accepted.
    cascade = Cascade([small, medium, teacher], [0.5, 0.4], [get_stock],
                      scorer=[FixedScorer([0.2, 0.1]), FixedScorer([0.3, 0.9])])
    trajectory = cascade.run(TASK)
    assert [s.routing.tier for s in trajectory.steps] == [2, 1]
    assert [r.tier for r in trajectory.steps[0].routing.rejected] == [0, 1]
    assert trajectory.model == "cascade:world:student-xs>world:student-s>world:teacher"


def test_fallback_failure_keep_flagged_keeps_the_student_answer():
    student = ScriptedModel("world:student-xs", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1), fail=True)
    agent = StudentAgent(student, teacher, scorer=FixedScorer([0.1, 0.1]), threshold=0.5, tools=[get_stock])
    trajectory = agent.run(TASK)
    assert trajectory.status == "ok" and trajectory.outcome.success
    assert all(s.producer == "world:student-xs" and "503" in s.routing.fallback_failed for s in trajectory.steps)
    assert "fallback_failed" in trajectory.tags


def test_fallback_failure_fail_policy_fails_the_task():
    student = ScriptedModel("world:student-xs", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1), fail=True)
    agent = StudentAgent(student, teacher, scorer=FixedScorer([0.1]), threshold=0.5, tools=[get_stock],
                         on_fallback_error="fail")
    trajectory = agent.run(TASK)
    assert trajectory.status == "error" and "on_fallback_error='fail'" in trajectory.error
    assert trajectory.outcome.success is False


def test_hanging_fallback_times_out_instead_of_hanging():
    student = ScriptedModel("world:student-xs", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1), delay_s=30)
    agent = StudentAgent(student, teacher, scorer=FixedScorer([0.1, 0.9]), threshold=0.5, tools=[get_stock],
                         fallback_timeout_s=0.2)
    start = time.perf_counter()
    trajectory = agent.run(TASK)
    assert time.perf_counter() - start < 5
    assert "no answer within 0.2s" in trajectory.steps[0].routing.fallback_failed
    assert trajectory.outcome.success


def test_escalated_trajectories_go_to_the_store_tagged(tmp_path):
    store = SQLiteStore(tmp_path / "store.db")
    student = ScriptedModel("world:student-xs", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))
    agent = StudentAgent(student, teacher, scorer=FixedScorer([0.9, 0.9, 0.1, 0.9]), threshold=0.5,
                         tools=[get_stock], store=store)
    calm = agent.run(TASK)
    hard = agent.run(Task(id="t2", query="How many units of SKU-1, really?", expected=12, checker="numeric"))
    assert "escalated" not in calm.tags and "escalated" in hard.tags
    stored = list(store.iter_trajectories(tags_any=["escalated"]))
    assert [t.task_id for t in stored] == ["t2"]
    assert stored[0].steps[0].routing.rejected[0].model == "world:student-xs"
    store.close()


def test_run_student_alone_records_confidence():
    student = ScriptedModel("world:student-xs", agent_script(-0.2))
    trajectory = run_student(TASK, student, tools=[get_stock])
    import math

    assert [s.confidence for s in trajectory.steps] == [pytest.approx(math.exp(-0.2))] * 2
    assert trajectory.model == "world:student-xs" and not any(s.escalated for s in trajectory.steps)


def test_unscoreable_student_escalates_instead_of_trusting():
    def no_logprobs(messages, call_index, n, temperature):
        if n_tool_messages(messages) == 0:
            return [Turn(tool_calls=[ToolCall(name="get_stock", arguments={"sku": "SKU-1"})], stop_reason="tool_use")]
        return [Turn(text="12")]

    student = ScriptedModel("openai:gpt-4o-mini", no_logprobs)
    teacher = ScriptedModel("anthropic:claude-opus-4-6", agent_script(-0.1))
    trajectory = StudentAgent(student, teacher, threshold=0.1, tools=[get_stock]).run(TASK)
    assert all(s.producer == "anthropic:claude-opus-4-6" for s in trajectory.steps)
    assert "logprobs" in trajectory.steps[0].routing.confidences[0].score_error


def test_bad_arguments_are_refused_with_clear_errors():
    student = ScriptedModel("world:student-xs", agent_script(-0.1))
    teacher = ScriptedModel("world:teacher", agent_script(-0.1))
    with pytest.raises(ConfigError, match=r"thresholds\[0\] = 1.5 is outside \[0, 1\]"):
        Cascade([student, teacher], [1.5])
    with pytest.raises(ConfigError, match="need 1 threshold"):
        Cascade([student, teacher], [])


def write(tmp_path, text):
    path = tmp_path / "cascade.toml"
    path.write_text(text)
    return path


def test_config_round_trip(tmp_path):
    config = CascadeConfig(
        tiers=[TierConfig("world:student-xs", threshold=0.62, scorer="logprob-min"),
               TierConfig("hf:./runs/s", threshold=0.3, options={"device": "cpu"}),
               TierConfig("anthropic:claude-opus-4-6", timeout_s=30.0)],
        escalate="task", on_fallback_error="fail", calibration={"target": 0.98, "predicted_escalation_rate": 0.21},
    )
    path = tmp_path / "out" / "cascade.toml"
    write_cascade_config(config, path, header="written by a test")
    loaded = load_cascade_config(path)
    assert loaded.thresholds == [0.62, 0.3]
    assert [t.model for t in loaded.tiers] == ["world:student-xs", "hf:./runs/s", "anthropic:claude-opus-4-6"]
    assert loaded.tiers[1].options == {"device": "cpu"} and loaded.tiers[2].timeout_s == 30.0
    assert (loaded.escalate, loaded.on_fallback_error, loaded.calibration["target"]) == ("task", "fail", 0.98)


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[tiers]]\nmodel = "nope:thing"\nthreshold = 0.5\n[[tiers]]\nmodel = "world:teacher"\n',
         r"tiers\[0\].model: unknown model URI 'nope:thing'"),
        ('[[tiers]]\nmodel = "world:student-xs"\nthreshold = 1.2\n[[tiers]]\nmodel = "world:teacher"\n',
         r"tiers\[0\].threshold = 1.2 is outside \[0, 1\]"),
        ('[[tiers]]\nmodel = "world:student-xs"\nthreshold = -0.1\n[[tiers]]\nmodel = "world:teacher"\n',
         r"outside \[0, 1\]"),
        ('[[tiers]]\nmodel = "anthropic:claude-opus-4-6"\nthreshold = 0.5\n[[tiers]]\nmodel = "anthropic:claude-haiku-4-5"\n',
         r"tiers\[1\] \(anthropic:claude-haiku-4-5.*cheaper than tiers\[0\]"),
        ('[[tiers]]\nmodel = "world:student-xs"\n[[tiers]]\nmodel = "world:teacher"\n', r"tiers\[0\].threshold is missing"),
        ('[[tiers]]\nmodel = "world:student-xs"\nthreshold = 0.5\n[[tiers]]\nmodel = "world:teacher"\nthreshold = 0.5\n',
         r"tiers\[1\].threshold: the last tier"),
        ('[[tiers]]\nmodel = "world:student-xs"\nthreshold = 0.5\nscorer = "vibes"\n[[tiers]]\nmodel = "world:teacher"\n',
         r"tiers\[0\].scorer: unknown confidence scorer"),
        ('escalate = "sometimes"\n[[tiers]]\nmodel = "world:teacher"\n', r"escalate = 'sometimes'"),
        ('treshold = 0.5\n[[tiers]]\nmodel = "world:teacher"\n', r"unknown key\(s\) treshold"),
        ('[[tiers]\n', r"invalid TOML"),
    ],
)
def test_bad_configs_get_one_line_errors(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as info:
        load_cascade_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_caller_logprob_options_reach_the_model_without_clashing_with_the_scorer():
    import asyncio

    from distillery.routing import Cascade
    from tests.routing_fakes import ScriptedModel, answer_tokens, turn_from_tokens

    student = ScriptedModel("fake:student", lambda m, i, n, t: [turn_from_tokens(answer_tokens("4", -0.01))])
    teacher = ScriptedModel("fake:teacher", lambda m, i, n, t: [turn_from_tokens(answer_tokens("4", -0.01))])
    cascade = Cascade([student, teacher], [0.5], generate_options={"logprobs": True, "top_logprobs": 3})
    trajectory = asyncio.run(cascade.arun("2+2?"))
    assert trajectory.status == "ok"
    assert student.calls[0]["logprobs"] is True and student.calls[0]["top_logprobs"] == 3
