"""Errors a user can act on.

Every error raised for bad input or a broken environment is a `DistilleryError` whose message is
one line that names the problem (the file and line, the field, the environment variable). The CLI
prints that line as `error: ...`, without a traceback, and exits 1: a failed run.

A usage error is something else: the command line itself is wrong (an unknown or missing option, a
number out of range or NaN, a path that is a directory, binary or not UTF-8). The CLI finds those
while parsing, before the command runs (`distillery.commands.options`), and click prints the usage
line, a "Try ... --help" hint and one `Error: ...` line; the exit status is 2. So scripts can tell
"fix the command line" (2) from "the run failed" (1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class DistilleryError(Exception):
    """A problem the user can fix; its message is one actionable line."""


class ConfigError(DistilleryError):
    """Bad configuration: unknown model URI, bad threshold, invalid schema, unwritable path."""


class MissingAPIKeyError(ConfigError):
    """A hosted provider was chosen but its API key environment variable is empty."""

    def __init__(self, provider: str, env_var: str):
        super().__init__(f"{provider}: no API key; set the {env_var} environment variable")
        self.env_var = env_var


class ModelError(DistilleryError):
    """A model call failed for good (bad request, authentication, refusal to continue)."""


class TransientModelError(ModelError):
    """A model call failed in a way that is worth retrying: 429, 529, 5xx, timeouts, connection errors.

    `retry_after` is the server's hint in seconds, when it gave one.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class BudgetExceeded(DistilleryError):
    """The next call would spend past the configured budget."""


def read_json_file(path: str | Path, *, what: str, missing_hint: str = "") -> Any:
    """The JSON value in `path`. A missing file is `<path>: no such <what><missing_hint>`, bad JSON is
    `<path>:<line>: not valid JSON: <reason>`: one `ConfigError` line either way."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}{missing_hint}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def parse_json_line(line: str, where: str, *, error: type[ConfigError] = ConfigError) -> Any:
    """The JSON value on one line of a JSONL file; bad JSON is one `error` line,
    `<where>: not valid JSON: <reason> (column <n>)`, `where` being `<path>:<line number>`."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
