"""Evaluation with scripted models: rows, reference labels, curves, gates, JSON + PNG, no-call reports."""

import pytest

from distillery.evaluation.evaluate import check_gates, evaluate, tool_call_accuracy
from distillery.evaluation.results import load_results, save_results
from distillery.routing.cascade import CascadeConfig, TierConfig
from distillery.tasks import Task
from distillery.tools import ToolBox, tool
from distillery.trajectory import ToolCall, Trajectory, Step, Usage
from tests.routing_fakes import ScriptedModel, answer_tokens, n_tool_messages, tool_call_tokens, turn_from_tokens

STOCK = {"SKU-1": 12, "SKU-2": 30, "SKU-3": 7, "SKU-4": 55}


@tool
def get_stock(sku: str) -> int:
    """Units in stock.

    Args:
        sku: The SKU.
    """
    return STOCK.get(sku, 0)


TASKS = [Task(id=f"t{i}", query=f"How many units of {sku}?", expected=n, checker="numeric")
         for i, (sku, n) in enumerate(list(STOCK.items()) * 3)]


def sku_of(messages):
    return next(m.content for m in messages if m.role == "user").split()[-1].rstrip("?")


def make_script(knows: set[str], *, good_lp=-0.05, bad_lp=-2.0):
    """A model that is right and sure about SKUs in `knows`, and wrong and unsure about the others."""

    def script(messages, call_index, n, temperature):
        sku = sku_of(messages)
        sure = sku in knows
        lp = good_lp if sure else bad_lp
        usage = Usage(input_tokens=500, output_tokens=20)
        if n_tool_messages(messages) == 0:
            asked = sku if sure else "SKU-9"  # the unsure model looks up the wrong SKU
            tokens = tool_call_tokens("get_stock", f'{{"sku": "{asked}"}}', lp_name=lp, lp_args=lp)
        else:
            value = next(m.content for m in messages if m.role == "tool")
            tokens = answer_tokens(f"There are {value} units.", lp)
        return [turn_from_tokens(tokens, usage=usage)] * n

    return script


def setup():
    student = ScriptedModel("world:student-xs", make_script({"SKU-1", "SKU-2"}))
    teacher = ScriptedModel("world:teacher", make_script(set(STOCK)))
    config = CascadeConfig(tiers=[TierConfig("world:student-xs", threshold=0.5, scorer="logprob-mean"),
                                  TierConfig("world:teacher")],
                           calibration={"predicted_task_escalation_rate": 0.4, "predicted_step_escalation_rate": 0.4})
    return student, teacher, config


def test_evaluate_rows_curves_and_labels(tmp_path):
    student, teacher, config = setup()
    results = evaluate(TASKS, config, tools=ToolBox([get_stock]), models=[student, teacher], concurrency=2)
    rows = {row["name"].split(" (")[0]: row for row in results["rows"]}
    assert rows["student alone"]["success"] == 0.5 and rows["teacher alone"]["success"] == 1.0
    cascade = rows["cascade"]
    assert cascade["success"] == 1.0 and cascade["pgr"] == 1.0
    assert cascade["task_escalation_rate"] == 0.5 and cascade["step_escalation_rate"] == 0.5
    assert cascade["escalation_rate_by_tier"] == [0.5]
    # Cost: student on all 12 tasks' first steps + teacher on the escalated half; cheaper than teacher-only.
    assert 0 < cascade["cost_per_1k_usd"] < rows["teacher alone"]["cost_per_1k_usd"]
    assert cascade["saving_vs_teacher"] == pytest.approx(1 - cascade["cost_per_1k_usd"] / rows["teacher alone"]["cost_per_1k_usd"])
    assert rows["oracle router"]["success"] == 1.0 and rows["oracle router"]["task_escalation_rate"] == 0.5
    random_row = rows["random router"]
    assert random_row["thresholds"] == [0.5] and random_row["kind"] == "run"
    # Tool-call accuracy: the student picks the teacher's exact call on the SKUs it knows (half).
    accuracy = rows["student alone"]["tool_call_accuracy"]
    assert accuracy["exact"] == 0.5 and accuracy["arguments"] == 0.5
    assert rows["student alone"]["agreement_with_teacher"] == 0.5
    # A perfectly separating scorer: AUROC 1 at both levels; APGR near the oracle's, above random's 0.5.
    assert results["scorer"]["step_level"]["auroc"] == 1.0 and results["scorer"]["task_level"]["auroc"] == 1.0
    routing = results["routing"]
    assert routing["apgr_random"] == pytest.approx(0.5)
    assert routing["apgr"] == pytest.approx(routing["apgr_oracle"]) and routing["apgr"] > 0.7
    assert routing["cpt"]["95%"] == 0.5
    assert results["calibration"]["task_escalation_gap"] == pytest.approx(0.1)
    assert results["meta"]["offline_world"] and results["meta"]["stand_in_prices"]

    json_path, png_path = save_results(results, tmp_path / "eval.json")
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    again = load_results(json_path)
    assert again["rows"][2]["success"] == 1.0
    assert check_gates(again, min_success=0.99, min_pgr=0.9, max_cost=1e9) == []
    failures = check_gates(again, max_cost=cascade["cost_per_1k_usd"] / 2)
    assert len(failures) == 1 and "--max-cost" in failures[0]


def test_tool_call_accuracy_argument_level():
    step = Step(tool_calls=[ToolCall(name="get_stock", arguments={"sku": "A", "city": "Rome"})])
    trajectory = Trajectory(task_id="t", query="q", steps=[step])
    reference = [{"key": "x", "tool_calls": [{"name": "get_stock", "arguments": {"sku": "A", "city": "Oslo"}}]}]
    result = tool_call_accuracy([trajectory], [reference])
    assert result == {"exact": 0.0, "arguments": 0.5, "steps": 1}
    wrong_tool = [{"key": "x", "tool_calls": [{"name": "get_order", "arguments": {"order_id": "O-1"}}]}]
    assert tool_call_accuracy([trajectory], [wrong_tool])["arguments"] == 0.0


@pytest.mark.parametrize("escalate", ["step", "task", "restart"])
def test_step_escalation_counts_every_step_the_student_did_not_answer_in_any_mode(escalate):
    # The unsure half of the tasks ends with both steps from the teacher in every mode: rejected
    # one by one (step), handed over after the first (task), or redone from the start (restart).
    # Only the first is a rejected proposal, yet both count as escalated steps.
    student, teacher, config = setup()
    config.escalate = escalate
    results = evaluate(TASKS, config, tools=ToolBox([get_stock]), models=[student, teacher], concurrency=2)
    cascade = next(row for row in results["rows"] if row["name"].startswith("cascade"))
    assert cascade["success"] == 1.0
    assert cascade["step_escalation_rate"] == 0.5 == cascade["teacher_call_fraction"]
    assert cascade["task_escalation_rate"] == 0.5
    # The student's proposals that were doubted: under `step` both of an unsure task's; under
    # `task` and `restart` only the first (rejected in place; the task then stays up).
    doubted = {"step": 12 / 24, "task": 6 / 18, "restart": 6 / 18}[escalate]
    assert cascade["escalation_rate_by_tier"] == [pytest.approx(doubted)]
    assert results["calibration"]["realised"]["first_tier_doubt_rate"] == pytest.approx(doubted)
    random_row = next(row for row in results["rows"] if row["name"].startswith("random router"))
    assert random_row["thresholds"] == [pytest.approx(doubted)]  # the random router doubts as often


def test_a_result_with_any_offline_world_part_is_labelled_offline_world():
    def run(student_uri, teacher_uri, tasks):
        student = ScriptedModel(student_uri, make_script({"SKU-1", "SKU-2"}))
        teacher = ScriptedModel(teacher_uri, make_script(set(STOCK)))
        config = CascadeConfig(tiers=[TierConfig(student_uri, threshold=0.5), TierConfig(teacher_uri)])
        results = evaluate(tasks, config, tools=ToolBox([get_stock]), models=[student, teacher], concurrency=2,
                           reference_labels=False, random_router=False)
        return results["meta"]["offline_world"]

    world_tasks = [task.model_copy(update={"id": f"world-test-0-{i:05d}"}) for i, task in enumerate(TASKS[:4])]
    assert run("hf:runs/xs", "world:teacher", TASKS[:4])  # a world-trained student saved to a folder
    assert run("hf:runs/xs", "openai:gpt-4o", world_tasks)  # the world's simulated tasks
    assert not run("hf:runs/xs", "openai:gpt-4o", TASKS[:4])


def test_restart_counts_the_doubts_that_ended_abandoned_attempts():
    # The student looks up the right SKU with confidence every time, then doubts its answer for
    # SKU-3 and SKU-4: those tasks start over at the teacher. The student was asked 24 times
    # (twice per task) and doubted 6 times, though no kept step shows a rejected proposal.
    def script(messages, call_index, n, temperature):
        sku = sku_of(messages)
        usage = Usage(input_tokens=500, output_tokens=20)
        if n_tool_messages(messages) == 0:
            tokens = tool_call_tokens("get_stock", f'{{"sku": "{sku}"}}', lp_name=-0.05, lp_args=-0.05)
        else:
            value = next(m.content for m in messages if m.role == "tool")
            tokens = answer_tokens(f"There are {value} units.", -0.05 if sku in ("SKU-1", "SKU-2") else -2.0)
        return [turn_from_tokens(tokens, usage=usage)] * n

    student, teacher, config = setup()
    student = ScriptedModel("world:student-xs", script)
    config.escalate = "restart"
    results = evaluate(TASKS, config, tools=ToolBox([get_stock]), models=[student, teacher], concurrency=2,
                       reference_labels=False, seed=1)  # seed 1: the random router's first draw is below 0.25
    cascade = next(row for row in results["rows"] if row["name"].startswith("cascade"))
    assert cascade["escalation_rate_by_tier"] == [pytest.approx(6 / 24)]
    assert cascade["step_escalation_rate"] == 0.5 and cascade["task_escalation_rate"] == 0.5
    assert results["calibration"]["step_escalation_gap"] == pytest.approx(6 / 24 - 0.4)
    random_row = next(row for row in results["rows"] if row["name"].startswith("random router"))
    assert random_row["thresholds"] == [pytest.approx(6 / 24)] and random_row["task_escalation_rate"] > 0
