"""The tool-use loop every role shares: model -> tool calls -> tool results -> ... -> final answer.

The teacher, each student and the cascade all run this loop. What differs is the model behind
`Agent.next_step` (a cascade overrides it to route between tiers) and nothing else, so every
trajectory has the same shape whoever produced it.

    agent = Agent(load_model("world:teacher"), tools)
    trajectory = agent.run("How many units of SKU-1042 are in Berlin?", task_id="t1")
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from distillery.errors import ModelError
from distillery.models.base import ChatModel
from distillery.tasks import Task
from distillery.tools import Tool, ToolBox
from distillery.trajectory import Message, Step, Trajectory, step_messages

DEFAULT_MAX_STEPS = 10


class Agent:
    """Runs one model with a set of tools until it answers, refuses, or reaches `max_steps`."""

    def __init__(
        self,
        model: ChatModel,
        tools: ToolBox | Iterable[Tool] = (),
        *,
        system: str | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        tool_timeout_s: float | None = None,
        generate_options: dict[str, Any] | None = None,
    ):
        self.model = model
        self.tools = tools if isinstance(tools, ToolBox) else ToolBox(tools)
        self.system = system
        self.max_steps = max_steps
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.tool_timeout_s = tool_timeout_s
        self.generate_options = generate_options or {}

    @property
    def name(self) -> str:
        return getattr(self.model, "uri", type(self.model).__name__)

    async def next_step(self, messages: Sequence[Message], trajectory: Trajectory) -> Step:
        """Ask the model for the next step. Subclasses override this to route between models."""
        turns = await self.model.agenerate(
            list(messages),
            self.tools.specs or None,
            n=1,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            **self.generate_options,
        )
        return Step.from_turn(turns[0], producer=self.name)

    async def run_tools(self, step: Step) -> None:
        """Run the step's tool calls concurrently (parallel tool calls) and attach the results in order."""
        results = await asyncio.gather(
            *(asyncio.to_thread(self.tools.run, call, timeout_s=self.tool_timeout_s) for call in step.tool_calls)
        )
        step.tool_results = list(results)

    async def arun(
        self,
        query: str | Task,
        *,
        task_id: str | None = None,
        sample_index: int = 0,
        tags: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> Trajectory:
        """Run one task to the end. Model failures are recorded in the trajectory, not raised."""
        task = query if isinstance(query, Task) else Task(id=task_id or "task", query=query)
        system = task.system if task.system is not None else self.system
        trajectory = Trajectory(
            task_id=task_id or task.id,
            query=task.query,
            system=system,
            tools=self.tools.specs,
            model=self.name,
            sample_index=sample_index,
            tags=[*task.tags, *tags],
            metadata={**task.metadata, **(metadata or {})},
        )
        messages = trajectory.messages()
        try:
            for _ in range(self.max_steps):
                step = await self.next_step(messages, trajectory)
                trajectory.steps.append(step)
                if step.stop_reason == "refusal":
                    trajectory.status = "refused"
                    break
                if step.stop_reason == "pause_turn":
                    # Anthropic paused a long turn; sending the paused content back resumes it.
                    messages.extend(step_messages(step))
                    continue
                if step.tool_calls:
                    await self.run_tools(step)
                    messages.extend(step_messages(step))
                    continue
                if step.stop_reason == "max_tokens":
                    trajectory.status = "max_tokens"
                break
            else:
                trajectory.status = "max_steps"
        except ModelError as exc:
            trajectory.status = "error"
            trajectory.error = str(exc)
        trajectory.outcome = task.check(trajectory.final_answer)
        return trajectory

    def run(self, query: str | Task, **kwargs: Any) -> Trajectory:
        """Blocking `arun`, for scripts; inside a running loop (a notebook) it runs on a worker thread."""
        from distillery.models.blocking import run_blocking

        return run_blocking(lambda: self.arun(query, **kwargs))
