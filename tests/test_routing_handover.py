"""escalate="task" simulated exactly: the teacher's take-over replayed from each step a student could be doubted at."""

import asyncio

import pytest

from distillery.evaluation.calibrate import acalibrate_cascade, calibrate
from distillery.evaluation.evaluate import evaluate
from distillery.evaluation.runs import TierRun, handover_runs, run_tiers_alone
from distillery.evaluation.simulate import simulate
from distillery.models import register_provider
from distillery.routing.cascade import CascadeConfig, TierConfig
from distillery.tasks import Task
from distillery.tools import ToolBox, tool
from distillery.trajectory import Usage
from tests.routing_fakes import ScriptedModel, answer_tokens, n_tool_messages, tool_call_tokens, turn_from_tokens

STOCK = {"SKU-1": 12, "SKU-2": 30, "SKU-3": 7, "SKU-4": 55}
LOOKUPS: list[str] = []


@tool
def get_stock(sku: str) -> int:
    """Units in stock.

    Args:
        sku: The SKU.
    """
    LOOKUPS.append(sku)
    return STOCK.get(sku, 0)


TASKS = [Task(id=f"t{i}", query=f"How many units of {sku}?", expected=n, checker="numeric")
         for i, (sku, n) in enumerate(STOCK.items())]


def sku_of(messages):
    return next(m.content for m in messages if m.role == "user").split()[-1].rstrip("?")


def script(knows):
    """Looks the SKU up confidently; then answers right and sure for SKUs it knows, else wrong and unsure."""

    def run(messages, call_index, n, temperature):
        usage = Usage(input_tokens=500, output_tokens=20)
        if n_tool_messages(messages) == 0:
            tokens = tool_call_tokens("get_stock", f'{{"sku": "{sku_of(messages)}"}}', lp_name=-0.05, lp_args=-0.05)
        elif sku_of(messages) in knows:
            tokens = answer_tokens(f"There are {next(m.content for m in messages if m.role == 'tool')} units.", -0.05)
        else:
            tokens = answer_tokens("There are 999 units.", -3.0)
        return [turn_from_tokens(tokens, usage=usage)] * n

    return run


@pytest.fixture()
def models(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILLERY_PRICES", str(tmp_path / "prices.toml"))
    (tmp_path / "prices.toml").write_text(
        "[fake.student]\ninput = 0.05\noutput = 0.2\n[fake.teacher]\ninput = 5.0\noutput = 25.0\n"
    )
    LOOKUPS.clear()
    student, teacher = ScriptedModel("fake:student", script({"SKU-1", "SKU-2"})), ScriptedModel("fake:teacher", script(set(STOCK)))
    register_provider("fake", lambda name, **options: {"student": student, "teacher": teacher}[name])
    return student, teacher


def test_possible_first_doubts_are_new_running_minima():
    run = TierRun("t", True, 0.0, 0.0, [0.9, 0.95, 0.3, 0.5, None, 0.1])
    # Step 0 is a take-over from the query (the teacher's own run); later steps only where the
    # confidence drops below every earlier one (an unscored step counts as 0).
    assert run.possible_first_doubts() == [2, 4]
    assert TierRun("t", True, 0.0, 0.0, [0.5, 0.5]).possible_first_doubts() == []


def test_simulate_uses_the_take_over_instead_of_a_restart():
    student = [TierRun("a", False, 0.002, 0.2, [0.9, 0.1], [0.001, 0.001], [0.1, 0.1]),
               TierRun("b", False, 0.002, 0.2, [0.1, 0.9], [0.001, 0.001], [0.1, 0.1])]
    teacher = [TierRun("a", True, 0.05, 2.0), TierRun("b", True, 0.05, 2.0)]
    restart = simulate([student, teacher], [0.5])
    assert restart.success == 1.0 and restart.cost_per_task == pytest.approx((0.002 + 0.05 + 0.001 + 0.05) / 2)
    # Task a's take-over at step 1 continues from the student's first step: one cheaper teacher
    # step, and it fails. Task b is doubted at step 0, where a take-over is the teacher's own run.
    student[0].handovers = {1: TierRun("a", False, 0.02, 1.0, [None], [0.02], [1.0])}
    task = simulate([student, teacher], [0.5])
    assert task.success == 0.5 and task.task_success == [False, True]
    assert task.cost_per_task == pytest.approx((0.002 + 0.02 + 0.001 + 0.05) / 2)
    assert task.latencies == [pytest.approx(0.2 + 1.0), pytest.approx(0.1 + 2.0)]
    # A three-tier cascade only uses take-overs by the last tier.
    middle = [TierRun("a", True, 0.01, 0.5, [0.9, 0.9]), TierRun("b", True, 0.01, 0.5, [0.9, 0.9])]
    assert simulate([student, middle, teacher], [0.5, 0.5]).success == 1.0


def test_handover_runs_replay_the_prefix_without_re_running_its_tools(models):
    student, teacher = models
    tools = ToolBox([get_stock])
    [alone] = asyncio.run(run_tiers_alone([student], ["logprob-mean"], TASKS, tools=tools))
    # One lookup per student run (tools run on worker threads, so in no fixed order).
    assert sorted(LOOKUPS) == sorted(STOCK)
    teacher.calls.clear()
    taken = asyncio.run(handover_runs(alone, teacher, TASKS, tools=tools))
    # The student is unsure only of its answers to SKU-3 and SKU-4: the teacher takes over there, at step 1.
    assert [sorted(h) for h in taken] == [[], [], [1], [1]]
    assert sorted(LOOKUPS) == sorted(STOCK)  # the replayed lookups were not run again
    assert len(teacher.calls) == 2
    for call in teacher.calls:  # the teacher saw the student's call and its result
        assert n_tool_messages(call["messages"]) == 1
    run = taken[2][1]
    assert run.success and len(run.step_costs) == 1 and run.cost_usd == pytest.approx(run.step_costs[0])
    assert run.cost_usd == pytest.approx((500 * 5.0 + 20 * 25.0) / 1e6, rel=0.2)


def test_task_mode_calibration_predicts_the_real_cascade(models):
    student, teacher = models
    tools = ToolBox([get_stock])
    config = CascadeConfig(tiers=[TierConfig("fake:student", threshold=0.5, scorer="logprob-mean"),
                                  TierConfig("fake:teacher")], escalate="task")
    new_config, result, report = asyncio.run(acalibrate_cascade(config, TASKS, tools=tools, target=1.0,
                                                               models=[student, teacher]))
    assert report["handover_runs"] == 2 and "take-over" in new_config.calibration["simulation"]
    assert result.met and result.chosen.success == 1.0 and result.chosen.teacher_fraction == 0.5
    results = evaluate(TASKS, new_config, tools=tools, models=[student, teacher])
    cascade = next(row for row in results["rows"] if row["name"].startswith("cascade"))
    assert cascade["success"] == 1.0
    assert cascade["cost_per_1k_usd"] == pytest.approx(result.chosen.cost_per_task * 1000)
    # The restart simulation would have charged the teacher's whole run for the escalated tasks.
    restart = calibrate([[TierRun.from_trajectory(t) for t in run] for run in asyncio.run(
        run_tiers_alone([student, teacher], ["logprob-mean", None], TASKS, tools=tools))], target=1.0)
    assert restart.chosen.cost_per_task > result.chosen.cost_per_task
