"""Trajectories shared by the dataset tests (this module holds helpers only, no tests).

`golden_trajectory()` is the example every format's golden file is built from: a system prompt,
extended thinking, two parallel tool calls whose arguments have different keys, a second step
with one call to a tool with a different schema, and a final answer. `teacher_logprobs()` gives
its steps the token logprobs a teacher sharing the student's tokenizer would have produced.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone

from distillery.trajectory import (
    Outcome,
    Step,
    ThinkingBlock,
    TokenLogprob,
    ToolCall,
    ToolResult,
    ToolSpec,
    TopLogprob,
    Trajectory,
)

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name."},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
)
LOCAL_TIME = ToolSpec(
    name="get_local_time",
    description="Local time in an IANA time zone.",
    parameters={
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
        "additionalProperties": False,
    },
)
TOOLS = [WEATHER, LOCAL_TIME]


def golden_trajectory(
    *,
    task_id: str = "task-golden",
    query: str = "Is it warmer in Paris or Tokyo right now, and what time is it in Tokyo?",
    trajectory_id: str = "traj-golden",
    success: bool | None = True,
    tags: tuple[str, ...] = ("tier:1", "weather"),
    model: str = "world:teacher",
    sample_index: int = 0,
) -> Trajectory:
    return Trajectory(
        id=trajectory_id,
        task_id=task_id,
        query=query,
        system="You are a concise travel assistant.",
        tools=list(TOOLS),
        model=model,
        sample_index=sample_index,
        tags=list(tags),
        created_at=WHEN,
        outcome=None if success is None else Outcome(success=success, score=float(success), checker="contains"),
        steps=[
            Step(
                thinking=[ThinkingBlock(thinking="Both cities are needed; I can ask for them at once.", signature="sig-1")],
                text="I'll check both cities.",
                stop_reason="tool_use",
                model=model,
                tool_calls=[
                    ToolCall(id="call_paris", name="get_weather", arguments={"city": "Paris"}),
                    ToolCall(id="call_tokyo", name="get_weather", arguments={"city": "Tokyo", "unit": "celsius"}),
                ],
                tool_results=[
                    ToolResult(tool_call_id="call_paris", name="get_weather", content='{"temp_c": 14, "sky": "rain"}'),
                    ToolResult(tool_call_id="call_tokyo", name="get_weather", content='{"temp_c": 19, "sky": "clear"}'),
                ],
            ),
            Step(
                text="",
                stop_reason="tool_use",
                model=model,
                tool_calls=[ToolCall(id="call_time", name="get_local_time", arguments={"timezone": "Asia/Tokyo"})],
                tool_results=[ToolResult(tool_call_id="call_time", name="get_local_time", content="21:04")],
            ),
            Step(
                thinking=[ThinkingBlock(thinking="19 > 14, so Tokyo is warmer.")],
                text="Tokyo is warmer (19 °C vs 14 °C in Paris); it is 21:04 in Tokyo.",
                stop_reason="end_turn",
                model=model,
            ),
        ],
    )


def varied_trajectories(count: int, *, start: int = 0, **overrides) -> list[Trajectory]:
    """`count` distinct successful trajectories (different cities and queries) of the golden shape."""
    cities = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Seoul", "Dakar", "Hanoi", "Reno", "Bern"]
    out = []
    for i in range(start, start + count):
        a, b = cities[i % len(cities)], cities[(i * 7 + 3) % len(cities)]
        t = golden_trajectory(
            task_id=f"task-{i}",
            trajectory_id=f"traj-{i}",
            query=f"Request {i}: compare the weather in {a} and {b} and give the time in {b}.",
            **overrides,
        )
        t.steps[0].tool_calls[0].arguments = {"city": a}
        t.steps[0].tool_calls[1].arguments = {"city": b, "unit": "celsius"}
        out.append(t)
    return out


def teacher_logprobs(trajectory: Trajectory, tokenizer, *, k: int = 4, seed: int = 0) -> Trajectory:
    """Give each step the logprobs a teacher with `tokenizer` would have returned for its text.

    The generated ids are the step's completion as a server generates it after its prompt
    (`chat_tokens.completion_text`, encoded on its own); each token gets k alternatives (the token
    itself first) with made-up but normalised-looking logprobs.
    """
    from distillery.chat_tokens import completion_text, encode
    from distillery.dataset.render import training_messages
    from distillery.dataset.stats import template_messages
    from distillery.trajectory import DistillationSample

    messages, _ = training_messages(DistillationSample.from_trajectory(trajectory))
    messages = template_messages(messages)
    tools = [{"type": "function", "function": s.model_dump()} for s in trajectory.tools]
    rng = random.Random(seed)
    vocab = len(tokenizer)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for turn, step in zip(turns, trajectory.steps):
        _, completion = completion_text(tokenizer, messages, turn, tools)
        entries = []
        for token_id in encode(tokenizer, completion):
            alternatives = [token_id] + rng.sample([t for t in range(vocab) if t != token_id], k - 1)
            raw = sorted((rng.uniform(-6.0, -0.01) for _ in range(k)), reverse=True)
            norm = math.log(sum(math.exp(x) for x in raw))
            top = [TopLogprob(token=tokenizer.decode([t]), token_id=t, logprob=x - norm) for t, x in zip(alternatives, raw)]
            entries.append(TokenLogprob(token=top[0].token, token_id=token_id, logprob=top[0].logprob, top=top))
        step.logprobs = entries
    return trajectory
