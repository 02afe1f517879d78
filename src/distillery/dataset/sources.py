"""Where examples come from (a trajectory JSONL export, the store, Python objects) and the checks
that every example passes before anything is written.

An `Example` is one training example in the making: the `DistillationSample`, the `Trajectory`
it came from when there is one (sidecars need its steps' logprobs and sample index), and `origin`,
a short "file:line" or "store trajectory <id>" label that every error message starts with.

`read_store` and `read_trajectory_jsonl` return a `Source`: iterate it for the examples; its `name`
says where they come from, so an empty selection names the store or file. A store row whose record
does not parse comes out of `read_store` as an `Unreadable` (the builder stops on it, or leaves it
out under `skip_invalid`); the store itself is opened read-only and never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distillery.errors import ConfigError, parse_json_line
from distillery.store import SQLiteStore, validation_problem
from distillery.trajectory import DistillationSample, Trajectory


class DatasetInputError(ConfigError):
    """An input trajectory or sample cannot become a training example (malformed, unanswered call, ...)."""


@dataclass
class Example:
    sample: DistillationSample
    origin: str
    trajectory: Trajectory | None = None
    # Filled in while building: the rendered messages, their per-assistant weights, token count.
    messages: list[dict[str, Any]] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    tokens: int = 0
    # Per step: how many teacher samples reached the same state (set with action distributions).
    action_samples: list[int] | None = None


@dataclass
class Unreadable:
    """An input that could not be read as a trajectory: a store row whose record does not parse."""

    origin: str
    problem: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.problem}"


class Source:
    """Examples (and `Unreadable` inputs) from one named input; iterating it reads the input afresh."""

    def __init__(self, name: str, read: Callable[[], Iterator[Example | Unreadable]]):
        self.name = name
        self._read = read

    def __iter__(self) -> Iterator[Example | Unreadable]:
        return self._read()

    def __repr__(self) -> str:
        return f"Source({self.name!r})"


def read_trajectory_jsonl(path: str | Path) -> Source:
    """Trajectories from a JSONL export, one per line. A malformed line raises `file:line: field: problem`."""
    path = Path(path)
    return Source(str(path), lambda: _read_jsonl(path))


def _read_jsonl(path: Path) -> Iterator[Example]:
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such trajectory file") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = f"{path}:{number}"
            record = parse_json_line(line, origin, error=DatasetInputError)
            if not isinstance(record, dict):
                raise DatasetInputError(f"{origin}: expected a Trajectory JSON object, got {type(record).__name__}")
            try:
                trajectory = Trajectory.model_validate(record)
            except ValidationError as exc:
                raise DatasetInputError(f"{origin}: malformed trajectory: {validation_problem(exc)}") from None
            yield example_from_trajectory(trajectory, origin)


def read_store(path: str | Path, **filters: Any) -> Source:
    """Trajectories from a SQLite store, read-only, filtered in SQL (tags_any, model, since, ...).

    Rows whose record does not parse come first, each as an `Unreadable` naming the store, the row
    and the trajectory id; the other rows are read all the same.
    """
    shown = ", ".join(f"{key}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
                      for key, value in filters.items() if value is not None)
    return Source(f"{path}" + (f" ({shown})" if shown else ""), lambda: _read_store(path, filters))


def _read_store(path: str | Path, filters: dict[str, Any]) -> Iterator[Example | Unreadable]:
    unreadable: list[Unreadable] = []
    store = SQLiteStore(path, readonly=True)
    try:
        trajectories = list(store.iter_trajectories(on_invalid=lambda exc: unreadable.append(
            Unreadable(exc.origin, f"the stored record does not parse: {exc.problem}")), **filters))
    finally:
        store.close()
    yield from unreadable
    # A store holds runs in the order they finished, which concurrency makes random: sort, so the
    # same store always gives the same files (and the same student).
    trajectories.sort(key=lambda t: (t.task_id, t.sample_index, t.id))
    for trajectory in trajectories:
        yield example_from_trajectory(trajectory, f"{path} trajectory {trajectory.id}")


def example_from_trajectory(trajectory: Trajectory, origin: str) -> Example:
    return Example(sample=DistillationSample.from_trajectory(trajectory), origin=origin, trajectory=trajectory)


def as_examples(items: Iterable[DistillationSample | Trajectory | Example | Unreadable | dict], *,
                unreadable: list[Unreadable] | None = None) -> list[Example]:
    """Accept samples, trajectories, or their JSON dicts; label each by its index for error messages.

    An `Unreadable` input (from `read_store`) is appended to `unreadable`; without that list it raises.
    """
    out = []
    for index, item in enumerate(items):
        origin = f"samples[{index}]"
        if isinstance(item, Example):
            out.append(item)
        elif isinstance(item, Unreadable):
            if unreadable is None:
                raise DatasetInputError(str(item))
            unreadable.append(item)
        elif isinstance(item, Trajectory):
            out.append(example_from_trajectory(item, origin))
        elif isinstance(item, DistillationSample):
            out.append(Example(sample=item, origin=origin))
        elif isinstance(item, dict):
            kind = Trajectory if "steps" in item else DistillationSample
            try:
                parsed = kind.model_validate(item)
            except ValidationError as exc:
                raise DatasetInputError(f"{origin}: malformed {kind.__name__}: {validation_problem(exc)}") from None
            out.append(example_from_trajectory(parsed, origin) if kind is Trajectory else Example(parsed, origin))
        else:
            raise DatasetInputError(
                f"{origin}: expected a DistillationSample or Trajectory, got {type(item).__name__}"
            )
    return out


def structural_problems(sample: DistillationSample) -> list[str]:
    """Why a sample cannot be a training example, as `field: problem` strings (empty when it can).

    These are the faults that would silently corrupt training data: a tool call nobody answered,
    a tool result for a call that was never made, arguments that never parsed as JSON.
    """
    problems: list[str] = []
    messages = sample.messages
    if not any(m.role == "assistant" for m in messages):
        problems.append("messages: no assistant message to train on")
    first_turn = next((i for i, m in enumerate(messages) if m.role != "system"), None)
    if first_turn is None or messages[first_turn].role != "user":
        problems.append("messages: the conversation must start with a user message (after any system message)")
    open_calls: dict[str, int] = {}  # call id -> index of the assistant message that made it
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.role == "assistant":
            for call_id, at in open_calls.items():
                problems.append(f"messages[{at}].tool_calls[id={call_id}]: tool call has no result")
            open_calls = {}
            for j, call in enumerate(m.tool_calls):
                field_name = f"{where}.tool_calls[{j}]"
                if not call.name:
                    problems.append(f"{field_name}.function.name: empty tool name")
                if call.parse_error is not None:
                    raw = (call.raw_arguments or "")[:60]
                    problems.append(f"{field_name}.function.arguments: not valid JSON ({call.parse_error}): {raw!r}")
                if call.id in open_calls:
                    problems.append(f"{field_name}.id: duplicate tool call id {call.id!r}")
                open_calls[call.id] = i
        elif m.role == "tool":
            if m.tool_call_id not in open_calls:
                problems.append(f"{where}.tool_call_id: {m.tool_call_id!r} answers no tool call of the preceding assistant message")
            else:
                del open_calls[m.tool_call_id]
    for call_id, at in open_calls.items():
        if at != len(messages) - 1:  # the last message may end on its calls (a captured gateway step)
            problems.append(f"messages[{at}].tool_calls[id={call_id}]: tool call has no result")
    return problems
