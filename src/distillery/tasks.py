"""Tasks (queries with an optional checker) and the checkers that judge final answers.

A task file is plain text (one query per line; blank lines and `#` comments skipped) or JSONL
(`{"id": ..., "query": ..., "expected": ..., "checker": "numeric", ...}` per line). A malformed
line is reported as `file:line: problem`, and so is a number that cannot be used: a `tolerance` that is
NaN, infinite, negative or true/false, or a numeric checker's `expected` that is not a finite number.

Checkers live in a registry: `@register_checker("name")` adds one. Each takes the final answer
and the expected value and returns an `Outcome`.

Two families are registered:
- lenient, for task files that already use them: `exact` (the whole answer), `normalized` (the
  whole answer, case, accents and punctuation folded), `contains` (every expected string is a
  substring of the normalised answer) and `numeric` (the last number in the answer, identifiers
  such as `SKU-2083` skipped, within `tolerance`, relative);
- strict, in `distillery.checkers`: `money`, `count`, `quantity`, `date`, `status`, `mentions`,
  `refusal`, `not_found`. They fail an answer that states a conflicting value, hedges, offers
  several candidates or negates the value. The offline world's tasks use these.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from distillery.errors import ConfigError, parse_json_line
from distillery.trajectory import Outcome

Checker = Callable[[str | None, Any, "Task"], Outcome]
CHECKERS: dict[str, Checker] = {}


def register_checker(name: str) -> Callable[[Checker], Checker]:
    def wrap(fn: Checker) -> Checker:
        CHECKERS[name] = fn
        return fn

    return wrap


class Task(BaseModel):
    """One query for an agent, and how to judge its answer."""

    id: str
    query: str
    system: str | None = None
    expected: Any = None
    checker: str | None = None
    # Relative tolerance for the numeric checker: finite and >= 0 (NaN would fail every answer).
    tolerance: float = Field(0.01, ge=0.0, allow_inf_nan=False)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # pydantic would read true as 1.0
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value

    def check(self, answer: str | None) -> Outcome | None:
        """Judge a final answer; None when the task has no checker."""
        if self.checker is None:
            return None
        if self.checker not in CHECKERS:
            raise ConfigError(f"task {self.id}: unknown checker {self.checker!r}; known: {', '.join(sorted(CHECKERS))}")
        return CHECKERS[self.checker](answer, self.expected, self)


def normalize_text(text: str) -> str:
    """Lower case, accents folded, punctuation and extra whitespace removed."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s.-]", " ", text.lower())
    return re.sub(r"\s+", " ", text).strip(" .")


# A number not glued to a word: "SKU-2083" and "A12" hold no number (not -2083, not 12).
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?|(?<![\w.])-?\.\d+")
_IDENTIFIER = re.compile(r"\b[A-Za-z][A-Za-z0-9]*-\d[\w-]*")


def numbers_in(text: str) -> list[float]:
    """The numbers in `text`, in order; identifiers such as `SKU-2083` or `ORD-12345` are skipped."""
    text = _IDENTIFIER.sub(" ", text or "")
    return [float(m.replace(",", "").rstrip(",")) for m in _NUMBER.findall(text) if m.replace(",", "").strip("-.")]


@register_checker("exact")
def check_exact(answer: str | None, expected: Any, task: Task) -> Outcome:
    ok = answer is not None and answer.strip() == str(expected).strip()
    return Outcome(success=ok, score=float(ok), checker="exact", expected=expected)


@register_checker("normalized")
def check_normalized(answer: str | None, expected: Any, task: Task) -> Outcome:
    ok = answer is not None and normalize_text(answer) == normalize_text(str(expected))
    return Outcome(success=ok, score=float(ok), checker="normalized", expected=expected)


@register_checker("contains")
def check_contains(answer: str | None, expected: Any, task: Task) -> Outcome:
    """Every expected string (one, or a list) appears in the normalised answer."""
    wanted = expected if isinstance(expected, list) else [expected]
    text = normalize_text(answer or "")
    ok = answer is not None and all(normalize_text(str(w)) in text for w in wanted)
    return Outcome(success=ok, score=float(ok), checker="contains", expected=expected)


@register_checker("numeric")
def check_numeric(answer: str | None, expected: Any, task: Task) -> Outcome:
    """The last number in the answer is within `task.tolerance` (relative) of the expected value."""
    found = numbers_in(answer or "")
    if not found:
        return Outcome(success=False, score=0.0, checker="numeric", expected=expected, detail="no number in answer")
    value, target = found[-1], float(expected)
    ok = abs(value - target) <= max(task.tolerance * abs(target), 1e-9)
    return Outcome(success=ok, score=float(ok), checker="numeric", expected=expected, detail=f"read {value:g}")


def numeric_expected_problem(expected: Any) -> str | None:
    """Why `expected` cannot be a numeric checker's answer (None when it can): it must be a finite number."""
    if isinstance(expected, bool) or not isinstance(expected, (int, float, str)):
        return f"the numeric checker needs a number, got {json.dumps(expected)}"
    try:
        value = float(expected)
    except (ValueError, OverflowError):
        return f"the numeric checker needs a number, got {json.dumps(expected)}"
    if not math.isfinite(value):
        return f"the numeric checker needs a finite number, got {expected!r}"
    return None


def task_id_for(query: str) -> str:
    """A stable id for a bare query: the same text from a list or a file gets the same id."""
    return "q-" + hashlib.sha1(query.encode()).hexdigest()[:12]


def load_tasks(path: str | Path) -> list[Task]:
    """Read a task file (text or JSONL). Errors name the file and line; duplicate ids are refused."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such queries file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    is_jsonl = path.suffix in (".jsonl", ".ndjson") or any(l.lstrip().startswith("{") for l in lines[:5])
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if is_jsonl:
            record = parse_json_line(stripped, f"{path}:{number}")
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object with a 'query' field")
            if "query" not in record or not isinstance(record["query"], str) or not record["query"].strip():
                raise ConfigError(f"{path}:{number}: missing or empty 'query' field")
            record.setdefault("id", task_id_for(record["query"]))
            if record.get("checker") is not None and record["checker"] not in CHECKERS:
                raise ConfigError(
                    f"{path}:{number}: unknown checker {record['checker']!r}; known: {', '.join(sorted(CHECKERS))}"
                )
            try:
                task = Task.model_validate(record)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"])
                message = first["msg"].removeprefix("Value error, ")
                raise ConfigError(f"{path}:{number}: field {field!r}: {message}") from None
            if task.checker == "numeric" and (problem := numeric_expected_problem(task.expected)):
                raise ConfigError(f"{path}:{number}: field 'expected': {problem}")
        else:
            task = Task(id=task_id_for(stripped), query=stripped)
        if task.id in seen:
            raise ConfigError(f"{path}:{number}: duplicate task id {task.id!r} (first on line {seen[task.id]})")
        seen[task.id] = number
        tasks.append(task)
    if not tasks:
        raise ConfigError(f"{path}: no queries found")
    return tasks


def _register_strict_checkers() -> None:
    from distillery.checkers import STRICT_CHECKERS

    for name, fn in STRICT_CHECKERS.items():
        register_checker(name)(fn)


_register_strict_checkers()
