"""Small chat datasets and tiny teacher/student pairs for the trainer tests (nothing downloaded)."""

from __future__ import annotations

from distillery.formats.hermes import to_hf_messages, to_hf_tools
from distillery.trajectory import Message, ToolCall, ToolSpec
from tests.tiny_models import tiny_llama, tiny_tokenizer

ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
)
WEATHER = ToolSpec(
    name="get_weather",
    description="Weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def conversation(a: int, b: int) -> list[Message]:
    """system, user, assistant tool call, tool result, assistant answer."""
    return [
        Message(role="system", content="You are a helpful assistant."),
        Message(role="user", content=f"What is {a}+{b}?"),
        Message(role="assistant", content="", tool_calls=[ToolCall(id="c1", name="add", arguments={"a": a, "b": b})]),
        Message(role="tool", content=str(a + b), tool_call_id="c1", name="add"),
        Message(role="assistant", content=f"The answer is {a + b}."),
    ]


def weather_conversation(city: str) -> list[Message]:
    return [
        Message(role="user", content=f"What is the weather in {city}?"),
        Message(
            role="assistant", content="", tool_calls=[ToolCall(id="w1", name="get_weather", arguments={"city": city})]
        ),
        Message(role="tool", content='{"temperature": 21}', tool_call_id="w1", name="get_weather"),
        Message(role="assistant", content=f"It is 21 degrees in {city}."),
    ]


def chat_records(n: int = 8) -> list[dict]:
    """HF chat-format rows whose tool calls have differing argument keys (Arrow's struct pitfall)."""
    rows = []
    for i in range(n):
        messages = conversation(i, i + 1) if i % 2 == 0 else weather_conversation(["Paris", "Berlin", "Rome"][i % 3])
        rows.append({"messages": to_hf_messages(messages), "tools": to_hf_tools([ADD, WEATHER])})
    return rows


def tiny_pair(seed_teacher: int = 1, seed_student: int = 0):
    """(tokenizer, teacher, student): two tiny Llamas over one tokenizer."""
    tokenizer = tiny_tokenizer()
    return tokenizer, tiny_llama(tokenizer, seed=seed_teacher, hidden=48), tiny_llama(tokenizer, seed=seed_student)
