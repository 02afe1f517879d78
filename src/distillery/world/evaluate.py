"""Run a model through the shared agent loop on world tasks and score it by tier and family.

Figures from here are "offline world" figures: the tasks, tools and expert are this package's.

- success: the task's checker accepts the final answer.
- tool-call accuracy: of the expert's tool calls, the share the model reproduced exactly (same
  name and arguments), counted along each trajectory up to the first call that differs, against
  the valid plan it follows furthest (`expert.reference_plans`: the expert's alternative call
  orders and operand orders all count).
- exact plan: the model's whole call sequence equals one of the expert's valid plans (no calls,
  for the `none` tier).
- tool errors: the share of the model's calls that came back as error results.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from distillery.agent import Agent
from distillery.models.base import ChatModel
from distillery.tasks import Task
from distillery.trajectory import ToolCall, Trajectory
from distillery.world import SYSTEM_PROMPT
from distillery.world.expert import reference_plans
from distillery.world.tasks import TIERS
from distillery.world.tools import toolbox

LABEL = "offline world"


def matched_prefix(model_trajectory: Trajectory, gold: Trajectory | Sequence[ToolCall]) -> int:
    """How many of the expert's calls (a gold trajectory's, or one plan's) the model made identically,
    in order, before diverging."""
    theirs_calls = gold.tool_calls if isinstance(gold, Trajectory) else gold
    matched = 0
    for mine, theirs in zip(model_trajectory.tool_calls, theirs_calls):
        if mine.canonical() != theirs.canonical():
            break
        matched += 1
    return matched


def score(trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> dict[str, Any]:
    """Success by tier and family, tool-call accuracy, exact plans and tool errors."""
    groups: dict[str, dict[str, list[float]]] = {"tier": defaultdict(list), "family": defaultdict(list)}
    matched = expected_calls = exact = calls = errors = 0
    for trajectory, task in zip(trajectories, tasks):
        ok = float(bool(trajectory.outcome and trajectory.outcome.success))
        groups["tier"][task.metadata["tier"]].append(ok)
        groups["family"][task.metadata["family"]].append(ok)
        plans = reference_plans(task)
        matched += max(matched_prefix(trajectory, plan) for plan in plans)
        expected_calls += len(plans[0])
        mine = [c.canonical() for c in trajectory.tool_calls]
        exact += any(mine == [c.canonical() for c in plan] for plan in plans)
        results = [r for step in trajectory.steps for r in step.tool_results]
        calls += len(results)
        errors += sum(r.is_error for r in results)
    n = len(trajectories)
    successes = sum(sum(v) for v in groups["tier"].values())

    def table(group: dict[str, list[float]], order: Sequence[str]) -> dict[str, dict[str, float]]:
        return {k: {"n": len(group[k]), "success": sum(group[k]) / len(group[k])} for k in order if group.get(k)}

    return {
        "n": n,
        "success": successes / n if n else 0.0,
        "tool_call_accuracy": matched / expected_calls if expected_calls else 0.0,
        "exact_plan": exact / n if n else 0.0,
        "tool_error_rate": errors / calls if calls else 0.0,
        "by_tier": table(groups["tier"], TIERS),
        "by_family": table(groups["family"], sorted(groups["family"])),
    }


def evaluate_model(
    model: ChatModel,
    tasks: Sequence[Task],
    *,
    max_steps: int = 8,
    on_task: Callable[[Task, Trajectory], None] | None = None,
    concurrency: int = 1,
) -> tuple[dict[str, Any], list[Trajectory]]:
    """Run `model` on each task through `Agent` (greedy) and score the trajectories.

    A task whose run raises is recorded as a failed trajectory, so one bad task never ends the batch.
    Each task's tools are sealed to its split (`metadata["split"]`, when it names one), so a model
    cannot reach another split's rows. With `concurrency` > 1, that many tasks run at once and a
    local model answers them in shared batches (`BatchingModel`: the same greedy turns as one at a
    time, several times the throughput). Returns the report (see `score`, plus timing) and the
    trajectories, in the order of `tasks`.
    """
    from distillery.models.blocking import run_blocking
    from distillery.models.batching import batched

    if concurrency > 1:
        model = batched(model, max_batch=concurrency)
    agents: dict[str | None, Agent] = {}
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def run_one(task: Task) -> Trajectory:
        split = task.metadata.get("split") if task.metadata.get("split") in ("train", "validation", "test") else None
        if split not in agents:
            agents[split] = Agent(model, toolbox(split), system=SYSTEM_PROMPT, max_steps=max_steps)
        agent = agents[split]
        async with semaphore:
            try:
                trajectory = await agent.arun(task)
            except Exception as exc:  # noqa: BLE001 - recorded, not raised: the batch goes on
                trajectory = Trajectory(task_id=task.id, query=task.query, model=agent.name, status="error",
                                        error=f"{type(exc).__name__}: {exc}", tags=list(task.tags),
                                        metadata=dict(task.metadata))
                trajectory.outcome = task.check(None)
        if on_task is not None:
            on_task(task, trajectory)
        return trajectory

    async def run_all() -> list[Trajectory]:
        return list(await asyncio.gather(*(run_one(task) for task in tasks)))

    started = time.perf_counter()
    trajectories = run_blocking(run_all)
    elapsed = time.perf_counter() - started
    report = score(trajectories, tasks)
    report.update(
        model=getattr(model, "uri", type(model).__name__),
        label=LABEL,
        seconds_total=round(elapsed, 2),
        seconds_per_task=round(elapsed / len(tasks), 3) if tasks else 0.0,
        steps_per_task=sum(len(t.steps) for t in trajectories) / len(trajectories) if trajectories else 0.0,
    )
    return report, trajectories
