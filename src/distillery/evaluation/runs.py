"""Each tier run alone over tasks, and the per-task results that offline routing works from.

    alone = await run_tiers_alone(models, config.scorer_names(), tasks, tools=toolbox())
    runs = [[TierRun.from_trajectory(t) for t in tier_runs] for tier_runs in alone]

Calibration, certification, evaluation and cascade training all start here: each tier answers
every task once, alone, its per-step confidences recorded, and routing is then simulated over
those cached `TierRun`s without further model calls. `reference_actions` asks the teacher for its
action at every state a student visited, which labels student steps right or wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distillery.models.base import ChatModel
from distillery.routing.cascade import Cascade
from distillery.routing.confidence import action_key
from distillery.routing.decision import should_escalate
from distillery.tasks import Task
from distillery.tools import ToolBox
from distillery.trajectory import Message, Step, Trajectory, step_messages

Progress = Callable[[str, int, int], None]


@dataclass
class TierRun:
    """One tier's run of one task, alone: the figures routing simulations need."""

    task_id: str
    success: bool
    cost_usd: float
    latency_s: float
    step_confidences: list[float | None] = field(default_factory=list)
    step_costs: list[float] = field(default_factory=list)
    step_latencies: list[float] = field(default_factory=list)
    # escalate="task": the next tier's run when it takes over this task at step k (after this
    # tier's steps 0..k-1), by k; `handover_runs` fills it, `simulate` reads it.
    handovers: dict[int, TierRun] = field(default_factory=dict)

    @classmethod
    def from_trajectory(cls, trajectory: Trajectory, first_step: int = 0) -> TierRun:
        """The run's figures; from `first_step` on, for a run that took over after replayed steps.
        Its cost and latency are its steps' (as `Trajectory.cost_usd` and `latency_s` add them up)."""
        steps = trajectory.steps[first_step:]
        step_costs = [s.cost_usd for s in steps]
        step_latencies = [s.latency_s + sum(r.latency_s for r in s.tool_results) for s in steps]
        return cls(
            task_id=trajectory.task_id,
            success=bool(trajectory.outcome and trajectory.outcome.success),
            cost_usd=sum(step_costs),
            latency_s=sum(step_latencies),
            step_confidences=[s.confidence for s in steps],
            step_costs=step_costs,
            step_latencies=step_latencies,
        )

    def possible_first_doubts(self) -> list[int]:
        """Steps after the first that some threshold makes the first doubted one: each is less
        confident than every step before it (an unscored step counts as 0, as `min_confidence`)."""
        out, lowest = [], None
        for index, confidence in enumerate(self.step_confidences):
            value = confidence if confidence is not None else 0.0
            if lowest is not None and value < lowest:
                out.append(index)
            lowest = value if lowest is None else min(lowest, value)
        return out

    def first_doubt(self, threshold: float) -> int | None:
        """Index of the first step the cascade would escalate at `threshold` (`should_escalate`), or None."""
        for index, confidence in enumerate(self.step_confidences):
            if should_escalate(confidence, threshold):
                return index
        return None

    @property
    def min_confidence(self) -> float:
        """The task's confidence for ranking (AUROC, candidate thresholds): its lowest step's, unscored as 0."""
        values = [c if c is not None else 0.0 for c in self.step_confidences]
        return min(values) if values else 0.0


async def run_tasks(agent: Cascade, tasks: Sequence[Task], *, concurrency: int = 4, label: str = "",
                    progress: Progress | None = None) -> list[Trajectory]:
    """Run every task with bounded concurrency; a failing task is an error trajectory, never a crash."""
    semaphore = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(task: Task) -> Trajectory:
        nonlocal done
        async with semaphore:
            trajectory = await agent.arun(task)
        done += 1
        if progress:
            progress(label, done, len(tasks))
        return trajectory

    return list(await asyncio.gather(*(one(task) for task in tasks)))


async def run_tiers_alone(models: Sequence[ChatModel], scorers: Sequence[Any], tasks: Sequence[Task], *,
                          tools: ToolBox, concurrency: int = 4, progress: Progress | None = None,
                          **agent_options: Any) -> list[list[Trajectory]]:
    """Each model alone on every task, its steps scored by its scorer (None: not scored)."""
    alone = []
    for model, scorer in zip(models, scorers):
        agent = Cascade([model], [], tools, scorer=[scorer], **agent_options)
        alone.append(await run_tasks(agent, tasks, concurrency=concurrency, label=f"{model.uri} alone", progress=progress))
    return alone


class _TakeOver(Cascade):
    """A tier taking over a task after a lower tier's first steps (`prefix`), as `escalate="task"`
    does. The prefix is replayed as recorded, tool results included: its tools are not run again."""

    def __init__(self, model: ChatModel, prefix: Sequence[Step], tools: ToolBox, **options: Any):
        super().__init__([model], [], tools, scorer=[None], **options)
        self.prefix = list(prefix)
        self._replayed: set[int] = set()

    async def next_step(self, messages, trajectory, overrides=None):
        if len(trajectory.steps) < len(self.prefix):
            step = self.prefix[len(trajectory.steps)].model_copy(deep=True)
            self._replayed.add(id(step))
            return step
        return await super().next_step(messages, trajectory, overrides)

    async def run_tools(self, step: Step) -> None:
        if id(step) not in self._replayed:
            await super().run_tools(step)


async def handover_runs(lower: Sequence[Trajectory], model: ChatModel, tasks: Sequence[Task], *, tools: ToolBox,
                        concurrency: int = 4, progress: Progress | None = None,
                        **agent_options: Any) -> list[dict[int, TierRun]]:
    """For `escalate="task"`: `model` taking over each task at every step a threshold could first
    doubt (`TierRun.possible_first_doubts`), after the lower tier's recorded steps before it.

    Returns, per task, {k: the take-over's `TierRun`, its own steps only}. With these, `simulate`
    routes "task" escalation exactly instead of approximating it by a restart. A take-over at step 0
    is the model's own run and is not repeated here.
    """
    by_id = {task.id: task for task in tasks}
    jobs = [(t_index, k) for t_index, trajectory in enumerate(lower)
            for k in TierRun.from_trajectory(trajectory).possible_first_doubts()]
    out: list[dict[int, TierRun]] = [{} for _ in lower]
    semaphore = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(t_index: int, k: int) -> None:
        nonlocal done
        trajectory = lower[t_index]
        async with semaphore:
            agent = _TakeOver(model, trajectory.steps[:k], tools, **agent_options)
            taken = await agent.arun(by_id[trajectory.task_id])  # a model failure is an error run, not a raise
        out[t_index][k] = TierRun.from_trajectory(taken, first_step=k)
        done += 1
        if progress:
            progress(f"{model.uri} taking over", done, len(jobs))

    await asyncio.gather(*(one(t, k) for t, k in jobs))
    return out


def attach_handovers(lower: Sequence[TierRun], taken: Sequence[dict[int, TierRun]]) -> int:
    """Give each lower-tier run its take-overs (`handover_runs`' result, same order); returns how many."""
    for run, handovers in zip(lower, taken, strict=True):
        run.handovers = handovers
    return sum(len(h) for h in taken)


def state_before(trajectory: Trajectory, index: int) -> list[Message]:
    """The conversation the model saw when it produced step `index`."""
    messages = [Message(role="system", content=trajectory.system)] if trajectory.system else []
    messages.append(Message(role="user", content=trajectory.query))
    for step in trajectory.steps[:index]:
        messages.extend(step_messages(step))
    return messages


async def reference_actions(trajectories: Sequence[Trajectory], teacher: ChatModel, tools: ToolBox, *,
                            concurrency: int = 4, progress: Progress | None = None) -> list[list[dict[str, Any]]]:
    """The teacher's action at every state each trajectory visited: `{"key", "tool_calls", "text"}` per step."""
    semaphore = asyncio.Semaphore(max(1, concurrency))
    jobs = [(t_index, s_index) for t_index, t in enumerate(trajectories) for s_index in range(len(t.steps))]
    out: list[list[dict[str, Any]]] = [[{} for _ in t.steps] for t in trajectories]
    done = 0

    async def one(t_index: int, s_index: int) -> None:
        nonlocal done
        async with semaphore:
            try:
                turns = await teacher.agenerate(state_before(trajectories[t_index], s_index), tools.specs or None,
                                                n=1, temperature=0.0)
                turn = turns[0]
                out[t_index][s_index] = {"key": action_key(turn), "tool_calls": [c.model_dump() for c in turn.tool_calls],
                                         "text": turn.text}
            except Exception as exc:  # a reference that fails leaves the step unlabelled, not the run dead
                out[t_index][s_index] = {"error": f"{type(exc).__name__}: {exc}"}
        done += 1
        if progress:
            progress("teacher reference labels", done, len(jobs))

    await asyncio.gather(*(one(t, s) for t, s in jobs))
    return out


def step_wrong(trajectory: Trajectory, index: int, reference: dict[str, Any]) -> bool | None:
    """Was the student's step wrong? Final answers by the checker when there is one, else by the teacher."""
    step = trajectory.steps[index]
    if not step.tool_calls and trajectory.outcome is not None and trajectory.outcome.success is not None:
        return not trajectory.outcome.success
    if "key" not in reference:
        return None
    return action_key(step) != reference["key"]


def scored_step_labels(trajectories: Sequence[Trajectory],
                       references: Sequence[Sequence[dict[str, Any]]] | None) -> tuple[list[float], list[bool]]:
    """Each scored step's confidence and whether it was wrong: by `step_wrong` against the teacher's
    reference actions, or, without references, whether the step's task failed. Steps without a
    confidence or a label are left out."""
    confidences, wrong = [], []
    for k, trajectory in enumerate(trajectories):
        for index, step in enumerate(trajectory.steps):
            if references is not None:
                label = step_wrong(trajectory, index, references[k][index])
            else:
                label = not (trajectory.outcome and trajectory.outcome.success)
            if label is not None and step.confidence is not None:
                confidences.append(step.confidence)
                wrong.append(label)
    return confidences, wrong
