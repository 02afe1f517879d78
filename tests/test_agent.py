import time

from distillery.agent import Agent
from distillery.errors import ModelError
from distillery.models.base import SyncChatModel
from distillery.tasks import Task
from distillery.tools import tool
from distillery.trajectory import ToolCall, Turn, Usage


class ScriptedModel(SyncChatModel):
    """A ChatModel that replays turns and records what it was sent."""

    uri = "scripted:model"

    def __init__(self, turns):
        self.turns = list(turns)
        self.seen = []

    def generate(self, messages, tools=None, **kwargs):
        self.seen.append((list(messages), tools))
        turn = self.turns.pop(0)
        if isinstance(turn, Exception):
            raise turn
        return [turn]


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
def nap(seconds: float) -> str:
    """Sleep, then say so."""
    time.sleep(seconds)
    return "rested"


def call(name, **arguments):
    return ToolCall(name=name, arguments=arguments)


def test_tool_loop_to_final_answer_with_checker():
    model = ScriptedModel(
        [
            Turn(text="Adding.", tool_calls=[call("add", a=2, b=3)], stop_reason="tool_use", usage=Usage(input_tokens=10), cost_usd=0.5),
            Turn(text="The sum is 5.", usage=Usage(input_tokens=20), cost_usd=0.25),
        ]
    )
    agent = Agent(model, [add], system="Be exact.")
    trajectory = agent.run(Task(id="t1", query="2+3?", expected=5, checker="numeric", tags=["tier:easy"]))
    assert trajectory.status == "ok"
    assert trajectory.final_answer == "The sum is 5."
    assert trajectory.outcome.success
    assert trajectory.steps[0].tool_results[0].content == "5"
    assert trajectory.steps[0].producer == "scripted:model"
    assert trajectory.cost_usd == 0.75 and trajectory.usage.input_tokens == 30
    assert trajectory.tags == ["tier:easy"] and trajectory.task_id == "t1"
    # The second model call saw the tool result.
    second_messages, tools = model.seen[1]
    assert [m.role for m in second_messages] == ["system", "user", "assistant", "tool"]
    assert tools[0].name == "add"


def test_parallel_tool_calls_run_concurrently_and_keep_order():
    calls = [call("nap", seconds=0.3) for _ in range(4)]
    model = ScriptedModel([Turn(tool_calls=calls, stop_reason="tool_use"), Turn(text="done")])
    start = time.perf_counter()
    trajectory = Agent(model, [nap]).run("rest")
    assert time.perf_counter() - start < 1.0  # four 0.3 s naps overlapped
    assert [r.tool_call_id for r in trajectory.steps[0].tool_results] == [c.id for c in calls]


def test_tool_errors_are_seen_by_the_model_not_raised():
    model = ScriptedModel([Turn(tool_calls=[call("add", a="x", b=1)], stop_reason="tool_use"), Turn(text="Sorry.")])
    trajectory = Agent(model, [add]).run("q")
    assert trajectory.steps[0].tool_results[0].is_error
    assert trajectory.status == "ok"


def test_max_steps_refusal_pause_and_model_errors():
    looping = ScriptedModel([Turn(tool_calls=[call("add", a=1, b=1)], stop_reason="tool_use")] * 3)
    assert Agent(looping, [add], max_steps=3).run("q").status == "max_steps"

    refused = Agent(ScriptedModel([Turn(text="I can't help.", stop_reason="refusal")])).run("q")
    assert refused.status == "refused" and refused.final_answer is None

    paused = ScriptedModel(
        [Turn(text="partial", stop_reason="pause_turn", provider_content=[{"type": "text", "text": "partial"}]), Turn(text="final")]
    )
    trajectory = Agent(paused).run("q")
    assert trajectory.final_answer == "final" and len(trajectory.steps) == 2
    assert paused.seen[1][0][-1].provider_content == [{"type": "text", "text": "partial"}]

    truncated = Agent(ScriptedModel([Turn(text="cut", stop_reason="max_tokens")])).run("q")
    assert truncated.status == "max_tokens"

    failed = Agent(ScriptedModel([ModelError("400 bad request")])).run(Task(id="t", query="q", expected=1, checker="numeric"))
    assert failed.status == "error" and failed.error == "400 bad request"
    assert failed.outcome.success is False


def test_run_works_inside_a_running_event_loop():
    import asyncio

    model = ScriptedModel([Turn(text="Adding.", tool_calls=[call("add", a=1, b=1)], stop_reason="tool_use"),
                           Turn(text="2")])
    agent = Agent(model, [add])

    async def notebook_cell():
        return agent.run("1+1?")  # blocking call made while a loop runs, as in Jupyter

    trajectory = asyncio.run(notebook_cell())
    assert trajectory.status == "ok" and trajectory.final_answer == "2"


def test_the_seed_names_are_importable_from_the_package():
    import subprocess
    import sys

    code = ("import sys, distillery; assert 'torch' not in sys.modules; "
            "from distillery import collect_teacher_trajectories, build_finetune_jsonl, run_student, StudentAgent, "
            "Cascade, TeacherCollector, DatasetBuilder, train_student, DistillationSample; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-1000:]
