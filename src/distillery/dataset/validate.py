"""Check an OpenAI chat fine-tuning JSONL file the way OpenAI's documented format checks do.

Every problem is reported with its line and field (`FILE:LINE: field: problem`), never just the
first one, so a user fixes a file in one pass. Checks, per example:

* the line is a JSON object with a non-empty `messages` list and only known top-level keys
  (`messages`, `tools`, `parallel_tool_calls`);
* each message has a known `role` and only the keys that role allows; `content` is a string
  (an assistant message that calls tools may omit it);
* `weight`, only on assistant messages, is 0 or 1; at least one assistant message is trained on;
* `tool_calls` entries have `id`, `type: "function"`, `function.name` and `function.arguments`
  as a JSON *string* that parses to an object matching the named tool's `parameters` schema;
* every tool call is answered by a `tool` message with its `tool_call_id` before the next
  assistant message, and every tool message answers a call;
* with `parallel_tool_calls: false`, no assistant message makes more than one call;
* `tools` entries are `{"type": "function", "function": {name, parameters}}` with valid schemas;
* the example fits the per-example token limit.

And per file: at least 10 examples (OpenAI's minimum for a fine-tuning job).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from distillery.dataset.stats import TokenCounter
from distillery.errors import ConfigError

MIN_EXAMPLES = 10
# OpenAI's per-example limit for gpt-4o-mini and gpt-4o fine-tuning (65,536 tokens); older models
# have smaller limits, so the limit is an option.
DEFAULT_TOKEN_LIMIT = 65_536
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for function (tool) names

TOP_LEVEL_KEYS = {"messages", "tools", "parallel_tool_calls"}
MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "weight", "refusal"},
    "tool": {"role", "content", "tool_call_id"},
}


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based line in the file; 0 for problems with the file as a whole
    field: str
    message: str

    def format(self, source: str) -> str:
        return f"{source}:{self.line}: {self.field}: {self.message}"


@dataclass
class ValidationReport:
    source: str
    examples: int
    problems: list[Problem]
    token_counts: list[int]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [p.format(self.source) for p in self.problems]


def validate_records(
    records: Iterable[tuple[int, Any]],
    *,
    source: str = "<records>",
    token_limit: int = DEFAULT_TOKEN_LIMIT,
    counter: TokenCounter | None = None,
    min_examples: int = MIN_EXAMPLES,
    check_arguments: bool = True,
    check_names: bool = True,
) -> ValidationReport:
    """Validate `(line_number, parsed_json)` pairs; see the module doc for the rules.

    `check_arguments=False` skips matching call arguments against the tool schemas (for a build
    that keeps schema-violating calls on purpose); `check_names=False` skips OpenAI's function-name
    rule (for formats that carry any name); everything else is still enforced.
    """
    counter = counter or TokenCounter()
    problems: list[Problem] = []
    counts: list[int] = []
    examples = 0
    for line, record in records:
        examples += 1
        found = example_problems(record, check_arguments=check_arguments, check_names=check_names)
        problems.extend(Problem(line, field, message) for field, message in found)
        if not found:
            tokens = counter.count(record["messages"], record.get("tools"))
            counts.append(tokens)
            if tokens > token_limit:
                problems.append(Problem(line, "messages", f"example has {tokens:,} tokens, over the {token_limit:,} token limit"))
    if examples < min_examples:
        problems.append(Problem(0, "(file)", f"{examples} examples; fine-tuning needs at least {min_examples}"))
    return ValidationReport(source, examples, problems, counts)


def validate_openai_jsonl(
    path: str | Path,
    *,
    token_limit: int = DEFAULT_TOKEN_LIMIT,
    counter: TokenCounter | None = None,
    min_examples: int = MIN_EXAMPLES,
) -> ValidationReport:
    """Validate an OpenAI chat fine-tuning JSONL file; the report lists every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    bad_lines: list[Problem] = []

    def records():
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                bad_lines.append(Problem(number, "(line)", f"not valid JSON: {exc.msg} (column {exc.colno})"))

    report = validate_records(
        records(), source=str(path), token_limit=token_limit, counter=counter, min_examples=0
    )
    report.examples += len(bad_lines)
    report.problems = sorted(bad_lines + report.problems, key=lambda p: p.line)
    if report.examples < min_examples:
        report.problems.append(Problem(0, "(file)", f"{report.examples} examples; fine-tuning needs at least {min_examples}"))
    return report


def example_problems(record: Any, *, check_arguments: bool = True, check_names: bool = True) -> list[tuple[str, str]]:
    """`(field, problem)` pairs for one example; empty when it is valid."""
    if not isinstance(record, dict):
        return [("(line)", f"expected a JSON object, got {type(record).__name__}")]
    problems: list[tuple[str, str]] = []
    for key in sorted(set(record) - TOP_LEVEL_KEYS):
        problems.append((key, "unknown top-level key; allowed: messages, tools, parallel_tool_calls"))
    tools, tool_problems = _check_tools(record.get("tools"), check_names=check_names)
    problems.extend(tool_problems)
    parallel = record.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        problems.append(("parallel_tool_calls", "must be true or false"))
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(("messages", "missing or empty messages list"))
        return problems

    trained_assistant = False
    open_calls: dict[str, str] = {}  # call id -> field of the call still waiting for its result
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            problems.append((where, "message must be a JSON object"))
            continue
        role = m.get("role")
        if role not in MESSAGE_KEYS:
            problems.append((f"{where}.role", f"unknown role {role!r}; expected system, user, assistant or tool"))
            continue
        for key in sorted(set(m) - MESSAGE_KEYS[role]):
            problems.append((f"{where}.{key}", f"key not allowed on a {role} message"))
        content = m.get("content")
        if role == "assistant" and m.get("tool_calls"):
            if content is not None and not isinstance(content, str):
                problems.append((f"{where}.content", "must be a string or null"))
        elif not isinstance(content, str):
            problems.append((f"{where}.content", "missing content" if content is None else "must be a string"))

        if role == "assistant":
            for call_id, field in open_calls.items():
                problems.append((field, f"tool call {call_id!r} has no tool message answering it"))
            open_calls = {}
            weight = m.get("weight", 1)
            if weight not in (0, 1) or isinstance(weight, bool):
                problems.append((f"{where}.weight", f"must be 0 or 1, got {weight!r}"))
            elif weight == 1:
                trained_assistant = True
            calls = m.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list) or not calls:
                    problems.append((f"{where}.tool_calls", "must be a non-empty list"))
                    continue
                if parallel is False and len(calls) > 1:
                    problems.append((f"{where}.tool_calls", f"{len(calls)} calls but parallel_tool_calls is false"))
                for j, call in enumerate(calls):
                    field = f"{where}.tool_calls[{j}]"
                    call_id, call_problems = _check_call(call, field, tools, check_arguments=check_arguments)
                    problems.extend(call_problems)
                    if call_id is not None:
                        if call_id in open_calls:
                            problems.append((f"{field}.id", f"duplicate tool call id {call_id!r}"))
                        open_calls[call_id] = field
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                problems.append((f"{where}.tool_call_id", "missing tool_call_id"))
            elif call_id not in open_calls:
                problems.append((f"{where}.tool_call_id", f"{call_id!r} answers no tool call of the preceding assistant message"))
            else:
                del open_calls[call_id]
    # The last message may call tools whose results are not there: the example teaches the call
    # itself (OpenAI's function-calling fine-tuning examples end so, and so do gateway captures).
    last_calls = messages[-1].get("tool_calls") if isinstance(messages[-1], dict) else None
    if not (last_calls and messages[-1].get("role") == "assistant"):
        for call_id, field in open_calls.items():
            problems.append((field, f"tool call {call_id!r} has no tool message answering it"))
    if not trained_assistant:
        problems.append(("messages", "no assistant message with weight 1 to train on"))
    return problems


def _check_tools(tools: Any, *, check_names: bool = True) -> tuple[dict[str, jsonschema.Validator], list[tuple[str, str]]]:
    validators: dict[str, jsonschema.Validator] = {}
    problems: list[tuple[str, str]] = []
    if tools is None:
        return validators, problems
    if not isinstance(tools, list):
        return validators, [("tools", "must be a list")]
    for k, item in enumerate(tools):
        where = f"tools[{k}]"
        if not isinstance(item, dict) or item.get("type") != "function" or not isinstance(item.get("function"), dict):
            problems.append((where, 'must be {"type": "function", "function": {...}}'))
            continue
        function = item["function"]
        name = function.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"{where}.function.name", "missing tool name"))
            continue
        if check_names and function_name_problem(name):
            problems.append((f"{where}.function.name", function_name_problem(name)))
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        try:
            jsonschema.Draft202012Validator.check_schema(parameters)
        except jsonschema.SchemaError as exc:
            problems.append((f"{where}.function.parameters", f"not a valid JSON Schema: {exc.message}"))
            continue
        if name in validators:
            problems.append((f"{where}.function.name", f"duplicate tool name {name!r}"))
        validators[name] = jsonschema.Draft202012Validator(parameters)
    return validators, problems


def _check_call(call: Any, field: str, tools: dict[str, jsonschema.Validator], *,
                check_arguments: bool = True) -> tuple[str | None, list[tuple[str, str]]]:
    if not isinstance(call, dict):
        return None, [(field, "must be a JSON object")]
    problems: list[tuple[str, str]] = []
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        problems.append((f"{field}.id", "missing id"))
        call_id = None
    if call.get("type") != "function":
        problems.append((f"{field}.type", f'must be "function", got {call.get("type")!r}'))
    function = call.get("function")
    if not isinstance(function, dict):
        return call_id, problems + [(f"{field}.function", "missing function object")]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        problems.append((f"{field}.function.name", "missing name"))
    elif name not in tools:
        problems.append((f"{field}.function.name", f"{name!r} is not one of the example's tools"))
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        kind = "an object" if isinstance(arguments, dict) else type(arguments).__name__
        problems.append((f"{field}.function.arguments", f"must be a JSON string, got {kind}"))
        return call_id, problems
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return call_id, problems + [(f"{field}.function.arguments", f"not valid JSON: {exc.msg}")]
    if not isinstance(parsed, dict):
        return call_id, problems + [(f"{field}.function.arguments", "must encode a JSON object")]
    if check_arguments and isinstance(name, str) and name in tools:
        error = jsonschema.exceptions.best_match(tools[name].iter_errors(parsed))
        if error is not None:
            problems.append((f"{field}.function.arguments", f"does not match {name}'s schema: {schema_error_detail(error)}"))
    return call_id, problems


def schema_error_detail(error: jsonschema.ValidationError) -> str:
    """A schema violation with the path of the argument it is about (`start_date: None is not ...`)."""
    path = "/".join(str(p) for p in error.absolute_path)
    return f"{path}: {error.message}" if path else error.message


def function_name_problem(name: str) -> str | None:
    """Why OpenAI would reject this function name, or None."""
    if FUNCTION_NAME.fullmatch(name):
        return None
    return f"{name!r} is not a valid OpenAI function name (letters, digits, _ and -, at most 64: ^[a-zA-Z0-9_-]{{1,64}}$)"
