"""Turn one `DistillationSample` into training messages: reasoning policy, loss weights, wire shapes.

Everything format-specific starts from `training_messages(sample, ...)`, which returns plain dicts
in OpenAI's chat shape with tool-call arguments still as Python objects, plus a 0/1 weight per
assistant message. `openai_record` and `hf_record` then serialise that one list two ways, so the
OpenAI, Hugging Face and Parquet files of a build always hold the same conversation.

Reasoning. A step's *reasoning* is its thinking blocks, plus its visible text when the step calls
tools (the text of a final answer is the answer, never reasoning). `reasoning` chooses which steps
keep it: "keep" (all, the default), "drop" (none), "first" (only the first assistant step), "last"
(only the last), or a callable `(step_index, step_count) -> bool`. Kept thinking is written as
assistant text before the visible text, between `<think>` tags, so a parser can strip it at
inference. Redacted thinking is opaque ciphertext and is never written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from distillery.errors import ConfigError
from distillery.trajectory import DistillationSample, Message, ToolCall

ReasoningPolicy = Literal["keep", "drop", "first", "last"] | Callable[[int, int], bool]
REASONING_CHOICES = ("keep", "drop", "first", "last")

THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>\n\n"


def arguments_json(arguments: dict[str, Any]) -> str:
    """Arguments as the JSON string a chat template's `tojson` would write for the same object.

    transformers' `tojson` is `json.dumps(x, ensure_ascii=False)` with default separators and key
    order, so a template that renders a string verbatim produces exactly the text it would have
    produced from the object. OpenAI's own fine-tuning examples use the same spacing.
    """
    return json.dumps(arguments, ensure_ascii=False)


def keeps_reasoning(policy: ReasoningPolicy, step_index: int, step_count: int) -> bool:
    if callable(policy):
        return bool(policy(step_index, step_count))
    if policy == "keep":
        return True
    if policy == "drop":
        return False
    if policy == "first":
        return step_index == 0
    if policy == "last":
        return step_index == step_count - 1
    raise ConfigError(f"unknown reasoning policy {policy!r}; choose one of {', '.join(REASONING_CHOICES)}")


def assistant_content(message: Message, keep_reasoning: bool) -> str:
    """The text an assistant message trains on, under the reasoning policy."""
    thinking = "\n\n".join(b.thinking for b in message.thinking if b.type == "thinking" and b.thinking.strip())
    if not keep_reasoning:
        # Without reasoning, a tool-calling step is just its calls; a final answer stays.
        return "" if message.tool_calls else message.content
    text = message.content
    if thinking:
        text = f"{THINK_OPEN}{thinking.strip()}{THINK_CLOSE}{text}"
    return text


def failed_steps(sample: DistillationSample) -> set[int]:
    """Indices (among assistant messages) of steps where at least one tool call returned an error."""
    errors = {m.tool_call_id for m in sample.messages if m.role == "tool" and m.is_error}
    failed, index = set(), 0
    for m in sample.messages:
        if m.role == "assistant":
            if any(call.id in errors for call in m.tool_calls):
                failed.add(index)
            index += 1
    return failed


def training_messages(
    sample: DistillationSample,
    *,
    reasoning: ReasoningPolicy = "keep",
    mask_failed_steps: bool = False,
) -> tuple[list[dict[str, Any]], list[int]]:
    """The sample's conversation as OpenAI-shaped dicts (arguments still objects) and per-assistant weights.

    With `mask_failed_steps`, a step whose tool call returned an error gets weight 0: it stays in
    the conversation as context, so the student learns to recover from the error without learning
    to make it.
    """
    step_count = sum(1 for m in sample.messages if m.role == "assistant")
    masked = failed_steps(sample) if mask_failed_steps else set()
    out: list[dict[str, Any]] = []
    weights: list[int] = []
    step_index = 0
    for m in sample.messages:
        if m.role == "assistant":
            item: dict[str, Any] = {
                "role": "assistant",
                "content": assistant_content(m, keeps_reasoning(reasoning, step_index, step_count)),
            }
            if m.tool_calls:
                item["tool_calls"] = [_call_dict(call) for call in m.tool_calls]
            weights.append(0 if step_index in masked else 1)
            step_index += 1
        elif m.role == "tool":
            item = {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
            if m.name:
                item["name"] = m.name
        else:
            item = {"role": m.role, "content": m.content}
        out.append(item)
    return out, weights


def _call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def tool_dicts(sample: DistillationSample) -> list[dict[str, Any]]:
    """Tools in the `{"type": "function", "function": {name, description, parameters}}` form."""
    return [{"type": "function", "function": spec.model_dump()} for spec in sample.tools]


# The keys OpenAI documents for a function definition; others are left out of openai-format tools.
OPENAI_FUNCTION_KEYS = ("name", "description", "parameters", "strict")


def openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools with only the function keys OpenAI's format documents."""
    return [{**tool, "function": {k: v for k, v in tool["function"].items() if k in OPENAI_FUNCTION_KEYS}}
            for tool in tools]


def openai_record(
    messages: list[dict[str, Any]],
    weights: list[int],
    tools: list[dict[str, Any]],
    *,
    parallel_tool_calls: bool = True,
) -> dict[str, Any]:
    """One line of OpenAI chat fine-tuning JSONL.

    Arguments become JSON strings; an assistant message that only calls tools has no `content`
    (as in OpenAI's function-calling fine-tuning examples); tool messages carry only role,
    tool_call_id and content; every assistant message gets its `weight`.
    """
    out: list[dict[str, Any]] = []
    weight_iter = iter(weights)
    for m in messages:
        if m["role"] == "assistant":
            item: dict[str, Any] = {"role": "assistant"}
            if m["content"] or not m.get("tool_calls"):
                item["content"] = m["content"]
            if m.get("tool_calls"):
                item["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["function"]["name"], "arguments": arguments_json(c["function"]["arguments"])},
                    }
                    for c in m["tool_calls"]
                ]
            item["weight"] = next(weight_iter)
        elif m["role"] == "tool":
            item = {"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]}
        else:
            item = {"role": m["role"], "content": m["content"]}
        out.append(item)
    record: dict[str, Any] = {"messages": out}
    if tools:
        record["tools"] = openai_tools(tools)
        record["parallel_tool_calls"] = parallel_tool_calls
    return record


# Every message in the Hugging Face format has exactly these keys, so Arrow infers one struct type
# whatever rows come first, and a missing value is an explicit None that chat templates read as
# "absent" (`{% if message.tool_calls %}` is false for None).
HF_MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def hf_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for the Hugging Face chat format, in a shape that survives Arrow's struct unification.

    Arrow merges the keys of every struct in a column, so `arguments` objects with different keys
    would come back padded with `None` and a chat template would render `"city": null` into the
    training text. Arguments are therefore JSON strings, which Hermes/Qwen-style templates write
    verbatim (`{% if arguments is string %}`), giving the same text as the original object.
    """
    out = []
    for m in messages:
        calls = None
        if m.get("tool_calls"):
            calls = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["function"]["name"], "arguments": arguments_json(c["function"]["arguments"])},
                }
                for c in m["tool_calls"]
            ]
        out.append(
            {
                "role": m["role"],
                "content": m["content"],
                "tool_calls": calls,
                "tool_call_id": m.get("tool_call_id"),
                "name": m.get("name"),
            }
        )
    return out


def hf_record(messages: list[dict[str, Any]], tools: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One row of the Hugging Face chat format: `messages` plus `tools` as a JSON string.

    TRL's `SFTTrainer` decodes a string `tools` column with `json.loads` before calling
    `apply_chat_template(messages, tools=...)`; a string keeps each tool's schema intact, where an
    Arrow struct column would pad every schema with the other tools' property names.
    """
    return {"messages": hf_messages(messages), "tools": json.dumps(tools, ensure_ascii=False), **extra}
