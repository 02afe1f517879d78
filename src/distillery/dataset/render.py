"""Turn one `DistillationSample` into training messages: reasoning policy, loss weights, wire shapes.

Everything format-specific starts from `training_messages(sample, ...)`, which returns plain dicts
in OpenAI's chat shape with tool-call arguments still as Python objects, plus a 0/1 weight per
assistant message. `formats.openai.fine_tuning_record` and `hf_record` then serialise that one list
two ways, so the OpenAI, Hugging Face and Parquet files of a build always hold the same conversation.
The message shapes themselves are `distillery.formats`'.

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
from distillery.formats.hermes import arrow_message, to_hf_message, to_hf_tools
from distillery.trajectory import DistillationSample, Message

ReasoningPolicy = Literal["keep", "drop", "first", "last"] | Callable[[int, int], bool]
REASONING_CHOICES = ("keep", "drop", "first", "last")

THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>\n\n"


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
        item = to_hf_message(m)
        if m.role == "assistant":
            item["content"] = assistant_content(m, keeps_reasoning(reasoning, step_index, step_count))
            weights.append(0 if step_index in masked else 1)
            step_index += 1
        out.append(item)
    return out, weights


def tool_dicts(sample: DistillationSample) -> list[dict[str, Any]]:
    """Tools in the `{"type": "function", "function": {name, description, parameters}}` form."""
    return to_hf_tools(sample.tools) or []


def hf_record(messages: list[dict[str, Any]], tools: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One row of the Hugging Face chat format: `messages` plus `tools` as a JSON string.

    TRL's `SFTTrainer` decodes a string `tools` column with `json.loads` before calling
    `apply_chat_template(messages, tools=...)`; a string keeps each tool's schema intact, where an
    Arrow struct column would pad every schema with the other tools' property names.
    """
    return {"messages": [arrow_message(m) for m in messages], "tools": json.dumps(tools, ensure_ascii=False), **extra}
