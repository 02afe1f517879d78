"""Parse-time checks for command-line options: numbers in range, paths that can be used.

Each factory returns a typer `callback=`. A value that fails raises `typer.BadParameter`, which click
prints as the usage line, a "Try ... --help" hint and one `Error: Invalid value for '--port': ...`
line, with exit status 2 (a usage error), before the command starts. The checks are written here
rather than with typer's `min=`/`max=` because those differ between typer versions (some let NaN and
infinity through, some print no value) and cannot express open bounds such as (0, 1].

    port: int = typer.Option(8000, "--port", callback=number(1, 65535))
    near: float = typer.Option(0.9, "--near-threshold", callback=number(0, 1, low_open=True))
    queries: Path = typer.Option(..., "--queries", callback=input_file())
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Callable

import typer

from distillery.checks import MAX_SEED, not_a_choice, out_of_range
from distillery.errors import ConfigError

Callback = Callable[[Any, Any, Any], Any]

# How much of a text file is decoded at parse time. Anything past it is read (and checked) by the
# command's own reader; a file that is binary or in another encoding shows itself long before this.
TEXT_CHECK_BYTES = 16 * 1024 * 1024
SQLITE_HEADER = b"SQLite format 3\x00"
# The most tasks a command draws from the offline world (or takes from a file) in one run: far above
# any real use, low enough that a typo (--n 10000000000) is refused instead of filling the memory.
MAX_TASKS = 1_000_000


def _bad(message: str) -> typer.BadParameter:
    return typer.BadParameter(message)


def _tagged(callback: Callback, **what: Any) -> Callback:
    """Label a callback with what it checks (bounds, choices, path kind), for tests that break every option."""
    for name, value in what.items():
        setattr(callback, name, value)
    return callback


def check_number(value: float | int, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Raise `typer.BadParameter` unless `value` is a finite number within the bounds."""
    problem = out_of_range(value, low, high, low_open=low_open, high_open=high_open)
    if problem:
        raise _bad(problem)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callback:
    """A callback refusing NaN, infinities and values outside [low, high] (open ends where asked).

    None (an optional option left out) passes.
    """

    def callback(ctx, param, value):
        if value is None or getattr(ctx, "resilient_parsing", False):
            return value
        for item in value if isinstance(value, (list, tuple)) else [value]:
            check_number(item, low, high, low_open=low_open, high_open=high_open)
        return value

    return _tagged(callback, bounds=(low, high, low_open, high_open))


def seed() -> Callback:
    """Seeds: integers in [0, 2**32 - 1], the range every RNG the seed reaches accepts."""
    return number(0, MAX_SEED)


def choice(*choices: str) -> Callback:
    """A string option limited to `choices` (checked here, so the message lists them)."""

    def callback(ctx, param, value):
        if value is None or getattr(ctx, "resilient_parsing", False):
            return value
        problem = not_a_choice(value, choices)
        if problem:
            raise _bad(problem)
        return value

    return _tagged(callback, choices=choices)


def non_empty() -> Callback:
    """A string that is not empty or only whitespace."""

    def callback(ctx, param, value):
        if value is not None and not getattr(ctx, "resilient_parsing", False) and not str(value).strip():
            raise _bad("must not be empty")
        return value

    return callback


def _display(path: Path) -> str:
    return str(path)


def check_text_file(path: Path, limit: int = TEXT_CHECK_BYTES, *, require_content: bool = False) -> None:
    """Raise `typer.BadParameter` unless `path` is a readable file whose first `limit` bytes are UTF-8 text.

    With `require_content`, a file that holds nothing but whitespace is refused too.
    """
    where = _display(path)
    content = False
    if not path.exists():
        raise _bad(f"{where}: no such file")
    if path.is_dir():
        raise _bad(f"{where} is a directory, not a file")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with path.open("rb") as handle:
            while offset < limit:
                chunk = handle.read(min(1 << 20, limit - offset))
                if not chunk:
                    decoder.decode(b"", final=True)
                    break
                nul = chunk.find(b"\x00")
                if nul >= 0:
                    raise _bad(f"{where} is a binary file (a NUL byte at offset {offset + nul}), not UTF-8 text")
                try:
                    decoder.decode(chunk, final=False)
                except UnicodeDecodeError as exc:
                    raise _bad(f"{where} is not UTF-8 text ({exc.reason} at byte {offset + exc.start})") from None
                content = content or bool(chunk.strip())
                offset += len(chunk)
    except UnicodeDecodeError as exc:  # a multi-byte character cut off at the end of the file
        raise _bad(f"{where} is not UTF-8 text ({exc.reason} at the end of the file)") from None
    except OSError as exc:
        raise _bad(f"{where}: cannot read ({exc.strerror or exc})") from None
    if require_content and not content and offset < limit:  # the whole file was read
        raise _bad(f"{where} is empty")


def check_readable_file(path: Path) -> None:
    """Raise `typer.BadParameter` unless `path` is an existing file that can be opened."""
    where = _display(path)
    if not path.exists():
        raise _bad(f"{where}: no such file")
    if path.is_dir():
        raise _bad(f"{where} is a directory, not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _bad(f"{where}: cannot read ({exc.strerror or exc})") from None


def check_output_file(path: Path) -> None:
    """Raise `typer.BadParameter` when `path` cannot become a file: it is a directory, or a parent is a file."""
    where = _display(path)
    if path.is_dir():
        raise _bad(f"{where} is a directory; give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise _bad(f"{where}: {_display(parent)} is a file, not a directory")
            break


def check_output_dir(path: Path) -> None:
    """Raise `typer.BadParameter` when `path` cannot be a directory: it is a file, or a parent is a file."""
    where = _display(path)
    if path.exists():
        if not path.is_dir():
            raise _bad(f"{where} is a file; give a directory")
        return
    check_output_file(path)


def check_sqlite_file(path: Path, *, must_exist: bool) -> None:
    """Raise `typer.BadParameter` unless `path` is an SQLite database (or, when allowed, does not exist yet)."""
    where = _display(path)
    if not path.exists():
        if must_exist:
            raise _bad(f"{where}: no such store")
        check_output_file(path)
        return
    check_readable_file(path)
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise _bad(f"{where} is not an SQLite trajectory store")
    if not header and must_exist:
        raise _bad(f"{where} is an empty file, not an SQLite trajectory store")


def _path_callback(check: Callable[[Path], None], kind: str) -> Callback:
    def callback(ctx, param, value):
        if value is None or getattr(ctx, "resilient_parsing", False):
            return value
        for item in value if isinstance(value, (list, tuple)) else [value]:
            check(Path(item))
        return value

    return _tagged(callback, path_kind=kind)


def input_file(*, text: bool = True, require_content: bool = False) -> Callback:
    """An existing file; with `text`, UTF-8 text without NUL bytes (checked up to TEXT_CHECK_BYTES);
    with `require_content`, not empty or all whitespace."""
    if not text:
        return _path_callback(check_readable_file, "file")
    return _path_callback(lambda path: check_text_file(path, require_content=require_content),
                          "text file with content" if require_content else "text file")


def input_file_or_dir() -> Callback:
    """An existing path: a directory, or a file that can be opened."""

    def check(path: Path) -> None:
        if not path.is_dir():
            check_readable_file(path)

    return _path_callback(check, "file or directory")


def input_dir() -> Callback:
    """An existing directory (a saved model, a tokenizer)."""

    def check(path: Path) -> None:
        if not path.exists():
            raise _bad(f"{_display(path)}: no such directory")
        if not path.is_dir():
            raise _bad(f"{_display(path)} is a file; give a directory")

    return _path_callback(check, "directory")


def output_file() -> Callback:
    """A file to write: not an existing directory, and no parent that is a file."""
    return _path_callback(check_output_file, "output file")


def output_dir() -> Callback:
    """A directory to write into: not an existing file, and no parent that is a file."""
    return _path_callback(check_output_dir, "output directory")


def sqlite_store(*, must_exist: bool) -> Callback:
    """An SQLite trajectory store: an existing database, or (unless `must_exist`) a path one can be created at."""
    return _path_callback(lambda path: check_sqlite_file(path, must_exist=must_exist), "store" if must_exist else "new store")


def require(check: Callable[[Path], None], path: Path, option: str) -> None:
    """Run a path check inside a command (when it depends on other options); a failure names `option`."""
    try:
        check(Path(path))
    except typer.BadParameter as exc:
        exc.param_hint = f"'{option}'"
        raise


def parsed(parse: Callable[[Any], Any]) -> Callback:
    """Run a library parser at parse time; its `ConfigError` becomes a usage error naming the option."""

    def callback(ctx, param, value):
        if value is None or getattr(ctx, "resilient_parsing", False):
            return value
        try:
            parse(value)
        except (ConfigError, ValueError) as exc:
            message = str(exc)
            for name in getattr(param, "opts", []):  # "--split: ..." reads "Invalid value for '--split': ..."
                if message.startswith(f"{name}: ") or message.startswith(f"{name} "):
                    message = message[len(name):].lstrip(": ")
                    break
            raise _bad(message) from None
        return value

    return callback


# click's UsageError as this typer spells it (its own copy in typer >= 0.26, click's before).
_UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def usage_error(message: str) -> Exception:
    """A usage error found inside a command (options that conflict, one missing): exit 2, usage hint.

    click attaches the running command's context, so the usage line is printed above `Error: message`.
    """
    return _UsageError(message)
