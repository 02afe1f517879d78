"""After training: can the student reproduce its own training data?

A training loss can look perfect while the student writes garbage at inference (a mismatch
between training and inference tokens, a chat template that renders differently, too few steps).
So `train` replays a sample of training turns greedily, from exactly the prompts inference would
give, and compares what the student writes with what the teacher wrote:

- valid format: every tool call parses, names a tool offered, and no tool-call markup is left in
  the text; a turn that should call a tool calls one;
- exact calls: the same tool names and arguments, in order (turns where the teacher called tools);
- exact answers: the same final text (turns where the teacher answered).

The figures go into the run record (`distillation.json`, key `self_check`), where `serve` and
`cascade check` read them to warn before a broken student is served.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from typing import Any

from distillery.formats.hermes import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from distillery.chat_tokens import template_message

# Below these a student has not learned its training data: serving it would answer with garbage
# at whatever confidence its logprobs happen to give.
MIN_VALID_FORMAT = 0.8
MIN_EXACT_CALLS = 0.5


@dataclass
class SelfCheck:
    examples: int
    valid_format: float
    exact_calls: float | None  # None when no sampled turn called a tool
    exact_answers: float | None  # None when no sampled turn was a final answer
    ok: bool
    warning: str | None
    failures: list[str]  # a few of the student's wrong outputs, to look at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"valid format {self.valid_format:.0%}"]
        if self.exact_calls is not None:
            parts.append(f"exact tool calls {self.exact_calls:.0%}")
        if self.exact_answers is not None:
            parts.append(f"exact final answers {self.exact_answers:.0%}")
        return f"self-check on {self.examples} training turns (greedy): " + ", ".join(parts)


def _expected(message: dict[str, Any]) -> tuple[list[tuple[str, Any]], str]:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call)
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        calls.append((function["name"], arguments))
    return calls, (message.get("content") or "").strip()


def _valid(turn: Any, tool_names: set[str], wants_call: bool) -> bool:
    if TOOL_CALL_OPEN in turn.text or TOOL_CALL_CLOSE in turn.text:
        return False
    if any(call.parse_error is not None or call.name not in tool_names for call in turn.tool_calls):
        return False
    return bool(turn.tool_calls) == wants_call


def run_self_check(model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, samples: int = 32, seed: int = 0,
                   batch_size: int = 8) -> SelfCheck:
    """Replay up to `samples` assistant turns of `rows` (HF chat rows) greedily and score them."""
    from distillery.models.hf import HFModel
    from distillery.formats.openai import messages_from_wire as parse_messages
    from distillery.trajectory import ToolSpec

    turns = [(r, i) for r, row in enumerate(rows) for i, m in enumerate(row["messages"]) if m["role"] == "assistant"]
    chosen = sorted(random.Random(seed).sample(turns, min(samples, len(turns))))
    student = HFModel("self-check", model=model, tokenizer=tokenizer)
    was_training = model.training
    model.eval()
    valid = calls_right = calls_total = answers_right = answers_total = 0
    failures: list[str] = []
    try:
        for start in range(0, len(chosen), batch_size):
            batch = chosen[start:start + batch_size]
            conversations, tool_lists, expected = [], [], []
            for r, i in batch:
                row = rows[r]
                raw_tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else row.get("tools") or []
                tools = [ToolSpec(**t.get("function", t)) for t in raw_tools]
                messages = [template_message(m) for m in row["messages"][:i]]
                conversations.append(parse_messages(messages))
                tool_lists.append(tools)
                expected.append((_expected(row["messages"][i]), {t.name for t in tools}, r))
            results = student.generate_many(conversations, tool_lists, temperature=0.0, max_tokens=256)
            for [turn], ((calls, answer), names, r) in zip(results, expected):
                ok_format = _valid(turn, names, wants_call=bool(calls))
                valid += ok_format
                if calls:
                    calls_total += 1
                    right = [(c.name, c.arguments) for c in turn.tool_calls] == calls
                else:
                    answers_total += 1
                    right = not turn.tool_calls and turn.text.strip() == answer
                calls_right += right and bool(calls)
                answers_right += right and not calls
                if not right and len(failures) < 5:
                    wrote = turn.text + "".join(f"<tool_call>{c.canonical()}</tool_call>" for c in turn.tool_calls)
                    failures.append(f"example {r}: wrote {wrote[:160]!r}")
    finally:
        model.train(was_training)
    n = len(chosen)
    valid_format = valid / n if n else 0.0
    exact_calls = calls_right / calls_total if calls_total else None
    exact_answers = answers_right / answers_total if answers_total else None
    problems = []
    if valid_format < MIN_VALID_FORMAT:
        problems.append(f"only {valid_format:.0%} of its actions are well-formed")
    if exact_calls is not None and exact_calls < MIN_EXACT_CALLS:
        problems.append(f"it repeats only {exact_calls:.0%} of its training tool calls exactly")
    warning = None
    if problems:
        warning = (
            f"the student cannot reproduce its own training data: {' and '.join(problems)} ({n} training turns, "
            "greedy). Do not serve it as it is: train longer or on more data, and check that the data and the chat "
            "template are what the student sees at inference."
        )
    return SelfCheck(n, valid_format, exact_calls, exact_answers, not problems, warning, failures)
