"""Every command, broken on its command line: one error line, the usage hint, exit 2, no traceback.

The commands and their options are enumerated from the typer app, so a command or option added
later is covered without editing this file. In-process runs go through `cli.run`, which is the
console script's `main()` without the `sys.exit`; a few runs go through `python -m distillery.cli`
to show that the real entry point behaves the same.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import io
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import typer

from distillery import cli
from distillery.errors import DistilleryError


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith(("Error:", "error:"))]


def invoke(*args: Any, cwd: Path | None = None) -> Outcome:
    """`distillery ARGS` as a user runs it, in this process: cli.run is main() without sys.exit.

    A bug that would print a traceback raises here and fails the test.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        code = cli.run([str(a) for a in args], prog_name="distillery")
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_usage_error(outcome: Outcome, *names: str) -> str:
    """Exit 2, the usage line and hint, exactly one error line naming `names`, no traceback."""
    assert "Traceback" not in outcome.output, outcome.output
    assert outcome.code == 2, outcome.output
    assert outcome.output.startswith("Usage: distillery") and "--help' for help." in outcome.output, outcome.output
    (line,) = outcome.error_lines
    for name in names:
        assert name in line, outcome.output
    return line


def assert_failed_run(outcome: Outcome, *names: str) -> str:
    """Exit 1 and exactly one `error:` line naming `names`, no traceback."""
    assert "Traceback" not in outcome.output, outcome.output
    assert outcome.code == 1, outcome.output
    (line,) = outcome.error_lines
    for name in names:
        assert name in line, outcome.output
    return line


# -- the commands and their options, from the typer app ------------------------------------------


@dataclass
class Param:
    command: tuple[str, ...]
    name: str  # --port, or the metavar of an argument
    is_argument: bool
    annotation: Any
    info: Any  # typer's OptionInfo / ArgumentInfo

    @property
    def check(self) -> Any:
        return self.info.callback

    @property
    def required(self) -> bool:
        return self.info.default is ...

    def __repr__(self) -> str:
        return f"{' '.join(self.command)} {self.name}"


def _commands(app: typer.Typer, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for command in app.registered_commands:
        yield (*path, command.name or command.callback.__name__.replace("_", "-")), command.callback
    for group in app.registered_groups:
        sub = group.typer_instance
        name = group.name or sub.info.name
        if sub.registered_callback is not None:
            yield (*path, name), sub.registered_callback.callback
        yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(cli.app))
GROUPS = sorted({path[:-1] for path in COMMANDS if len(path) > 1})


def _params() -> list[Param]:
    params = []
    for path, function in COMMANDS.items():
        hints = typing.get_type_hints(function)
        for name, parameter in inspect.signature(function).parameters.items():
            info = parameter.default
            if isinstance(info, typer.models.OptionInfo):
                decl = next((d for d in info.param_decls or () if d.startswith("--")), f"--{name.replace('_', '-')}")
                params.append(Param(path, decl.split("/")[0], False, hints.get(name), info))
            elif isinstance(info, typer.models.ArgumentInfo):
                params.append(Param(path, info.metavar or name.upper(), True, hints.get(name), info))
    return params


PARAMS = _params()


def _click_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, sub in getattr(command, "commands", {}).items():
        yield (*path, name)
        yield from _click_paths(sub, (*path, name))


def test_the_enumeration_sees_every_command():
    """What the typer registry lists is what click dispatches to: no command escapes the checks below."""
    clicked = set(_click_paths(typer.main.get_command(cli.app)))
    assert clicked == set(COMMANDS) | set(GROUPS), clicked ^ (set(COMMANDS) | set(GROUPS))
    for expected in [("collect",), ("build",), ("build", "validate"), ("cascade", "check"), ("world", "eval"),
                     ("store", "export"), ("serve",), ("train",), ("calibrate",), ("eval",), ("finetune",), ("demo",)]:
        assert expected in COMMANDS


def _base(param: Param) -> Any:
    """int for Optional[int], and so on."""
    args = [a for a in typing.get_args(param.annotation) if a is not type(None)]
    return args[0] if typing.get_origin(param.annotation) is typing.Union and len(args) == 1 else param.annotation


def _tag(param: Param, name: str) -> Any:
    return getattr(param.check, name, None)


def _arg(param: Param, value: Any) -> list[str]:
    return [str(value)] if param.is_argument else [param.name, str(value)]


def _hint(param: Param) -> str:
    return f"'{param.name}'"


# -- every command ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(COMMANDS) + GROUPS, ids=" ".join)
def test_an_unknown_flag(path):
    assert_usage_error(invoke(*path, "--no-such-flag"), "No such option", "--no-such-flag")


@pytest.mark.parametrize("path", [()] + GROUPS, ids=lambda p: " ".join(p) or "distillery")
def test_an_unknown_command(path):
    if path == ("build",):  # build is a command with one sub-command: a stray word is an unexpected argument
        line = assert_usage_error(invoke(*path, "no-such-command"))
        assert "no-such-command" in line
        return
    assert_usage_error(invoke(*path, "no-such-command"), "No such command", "no-such-command")


@pytest.mark.parametrize("path", sorted({p.command for p in PARAMS if p.required}), ids=" ".join)
def test_a_missing_required_option(path):
    line = assert_usage_error(invoke(*path), "Missing")
    assert any(p.name in line for p in PARAMS if p.command == path and p.required), line


@pytest.mark.parametrize("param", [p for p in PARAMS if not p.is_argument and _base(p) in (int, float)], ids=repr)
def test_a_number_that_does_not_parse(param):
    assert_usage_error(invoke(*param.command, param.name, "abc"), _hint(param))


@pytest.mark.parametrize("param", [p for p in PARAMS if not p.is_argument and _base(p) in (int, float)], ids=repr)
def test_every_number_is_range_checked(param):
    assert _tag(param, "bounds") is not None or param.info.min is not None or param.info.max is not None, (
        f"{param} has no range check: give it callback=options.number(...)")


def _out_of_range(param: Param) -> list[str]:
    low, high, low_open, high_open = _tag(param, "bounds")
    floating = _base(param) is float
    step = 0.5 if floating else 1
    values = []
    if low is not None:
        values.append(low if low_open else low - step)
    if high is not None:
        values.append(high if high_open else high + step)
    if floating:
        values += ["nan", "inf", "-inf"]
    return [str(v) for v in values]


RANGED = [(p, v) for p in PARAMS if _tag(p, "bounds") for v in _out_of_range(p)]


@pytest.mark.parametrize("param, value", RANGED, ids=[f"{p!r}={v}" for p, v in RANGED])
def test_a_number_out_of_range(param, value):
    assert_usage_error(invoke(*param.command, *_arg(param, value)), _hint(param))


@pytest.mark.parametrize("param", [p for p in PARAMS if _tag(p, "choices")], ids=repr)
def test_a_value_that_is_not_a_choice(param):
    line = assert_usage_error(invoke(*param.command, *_arg(param, "not-a-choice")), "not-a-choice")
    assert any(choice in line for choice in _tag(param, "choices"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    (root / "a-dir").mkdir()
    (root / "latin1.jsonl").write_bytes('{"query": "caf\xe9"}\n'.encode("latin-1"))
    (root / "binary.jsonl").write_bytes(b'{"query": "x"}\n\x00\x01\x02')
    (root / "text.txt").write_text("just text\n")
    (root / "empty.jsonl").write_text(" \n\n")
    return {"dir": root / "a-dir", "latin1": root / "latin1.jsonl", "binary": root / "binary.jsonl",
            "missing": root / "missing.jsonl", "text": root / "text.txt", "empty": root / "empty.jsonl",
            "under-a-file": root / "text.txt" / "x"}


# What each kind of path refuses, and the words the error line must carry besides the file name.
PATH_CASES = {
    "text file": [("dir", "is a directory"), ("latin1", "not UTF-8"), ("binary", "binary"), ("missing", "no such file")],
    "text file with content": [("dir", "is a directory"), ("latin1", "not UTF-8"), ("binary", "binary"),
                               ("missing", "no such file"), ("empty", "is empty")],
    "file": [("dir", "is a directory"), ("missing", "no such file")],
    "file or directory": [("missing", "no such file")],
    "directory": [("text", "is a file"), ("missing", "no such directory")],
    "output file": [("dir", "is a directory"), ("under-a-file", "is a file")],
    "output directory": [("text", "is a file"), ("under-a-file", "is a file")],
    "store": [("dir", "is a directory"), ("text", "not an SQLite"), ("missing", "no such store")],
    "new store": [("dir", "is a directory"), ("text", "not an SQLite")],
}
PATHS = [(p, f, words) for p in PARAMS if _tag(p, "path_kind") for f, words in PATH_CASES[_tag(p, "path_kind")]]


@pytest.mark.parametrize("param, which, words", PATHS, ids=[f"{p!r}={f}" for p, f, _ in PATHS])
def test_a_path_that_cannot_be_used(param, which, words, files):
    path = files[which]
    line = assert_usage_error(invoke(*param.command, *_arg(param, path)), words)
    assert str(path) in line or str(files["text"]) in line


def test_conflicting_or_missing_inputs_are_usage_errors(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[[tiers]]\nmodel = "openai:gpt-4o"\n')
    assert_usage_error(invoke("calibrate", "--config", config, "--target", "0.9", "--budget", "1"), "not both")
    assert_usage_error(invoke("build"), "--from-store", "--from-jsonl")
    from distillery.store import SQLiteStore

    SQLiteStore(tmp_path / "s.db").close()
    assert_usage_error(invoke("build", "--from-jsonl", config, "--from-store", tmp_path / "s.db"), "exactly one")
    assert_usage_error(invoke("build", "--from-jsonl", config), "--out")
    assert_usage_error(invoke("finetune"), "--data", "--resume", "--cancel")
    assert_usage_error(invoke("finetune", "--dry-run", "--resume", "ftjob-1"), "--dry-run needs --data")
    assert_usage_error(invoke("eval", cwd=tmp_path), "'--config'", "cascade.toml")  # no cascade.toml here
    assert_usage_error(invoke("cascade", "run", " ", "--config", config), "QUERY", "empty")
    assert_usage_error(invoke("calibrate", "--config", config, "--n", "0", "--delta", "1"), "'--delta'")


def test_values_parsed_by_the_library_are_usage_errors(tmp_path):
    assert_usage_error(invoke("build", "--split", "nan,0.5,0.5"), "'--split'", "summing to 1")
    assert_usage_error(invoke("build", "--split", "a,b"), "'--split'")
    assert_usage_error(invoke("build", "--since", "yesterday"), "'--since'", "ISO 8601")
    assert_usage_error(invoke("build", "--format", "xml"), "'--format'", "xml")
    assert_usage_error(invoke("build", "--status", "done"), "'--status'", "ok, error, all")
    assert_usage_error(invoke("serve", "--map", "teacher"), "'--map'", "NAME=cascade")
    assert_usage_error(invoke("serve", "--map", "teacher=first"), "'--map'", "tier index")
    assert_usage_error(invoke("demo", "--scorer", "vibes"), "'--scorer'", "unknown confidence scorer")
    assert_usage_error(invoke("finetune", "--suffix", "x" * 65), "'--suffix'", "64")
    assert_usage_error(invoke("serve", "--port", "70000"), "'--port'", "[1, 65535]", "70000")


def test_a_failed_run_is_one_line_and_exit_1(tmp_path):
    config = tmp_path / "cascade.toml"
    config.write_text('escalate = "step"\n')
    line = assert_failed_run(invoke("cascade", "check", config), str(config))
    assert "[[tiers]]" in line  # printed literally, not eaten as rich markup


def test_train_choices_match_the_library():
    """distill/config.py spells out the divergences and sparse tails so a usage error does not import torch."""
    from distillery.distill.config import DIVERGENCE_NAMES, TAIL_MODE_NAMES

    def assigned(module: str, name: str) -> Any:
        tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        for node in ast.walk(tree):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return node.value
        raise AssertionError(f"{module}.{name} not found")

    divergences = assigned("distillery.distill.divergences", "DIVERGENCES")
    assert set(DIVERGENCE_NAMES) == {ast.literal_eval(key) for key in divergences.keys}
    assert set(TAIL_MODE_NAMES) == set(ast.literal_eval(assigned("distillery.distill.sparse_losses", "TAIL_MODES")))


# -- whichever click the installed typer raises -----------------------------------------------------


def _one_command_app(function) -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command("boom")(function)
    app.command("other")(lambda: None)  # two commands, so `boom` is a sub-command as in distillery
    return app


def _raising(exc: BaseException):
    def command() -> None:  # no parameters: a default would become a CLI option
        raise exc

    return command


def _exception_modules() -> list[Any]:
    modules = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            pass
    return modules


@pytest.mark.parametrize("module", _exception_modules(), ids=lambda m: m.__name__)
def test_both_clicks_exceptions_are_handled(module, monkeypatch):
    """typer >= 0.26 raises its vendored copy of click's exceptions, older typer raises click's own."""

    cases = [
        (module.UsageError("two inputs given"), 2, "Error: two inputs given"),
        (module.BadParameter("must be positive", param_hint="'--n'"), 2, "Error: Invalid value for '--n': must be positive"),
        (module.ClickException("plain"), 1, "Error: plain"),
        (getattr(module, "Exit", typer.Exit)(4), 4, None),  # typer >= 0.26 keeps Exit and Abort in typer.exceptions
        (getattr(module, "Abort", typer.Abort)(), 1, "aborted"),
    ]
    for exc, code, text in cases:
        monkeypatch.setattr(cli, "app", _one_command_app(_raising(exc)))
        outcome = invoke("boom")
        assert outcome.code == code and "Traceback" not in outcome.output, (exc, outcome)
        if text:
            assert text in outcome.output, outcome.output


def test_a_user_error_and_a_duck_typed_click_error(monkeypatch):
    class Shown(Exception):
        exit_code = 5

        def show(self) -> None:
            print("shown", file=sys.stderr)

    for exc, code, text in [(DistilleryError("no [[tiers]] entries"), 1, "error: no [[tiers]] entries"),
                            (Shown(), 5, "shown"), (IsADirectoryError(21, "Is a directory", "data/"), 1,
                                                     "error: data/: Is a directory")]:
        monkeypatch.setattr(cli, "app", _one_command_app(_raising(exc)))
        outcome = invoke("boom")
        assert outcome.code == code and text in outcome.output, outcome


def test_no_arguments_prints_the_help():
    outcome = invoke()
    # click >= 8.2 exits 2 here (no command is a usage error), older click 0: either is fine.
    assert outcome.code in (0, 2) and "Usage:" in outcome.output and "collect" in outcome.output
    assert "Traceback" not in outcome.output


# -- the real entry point ---------------------------------------------------------------------------


def test_the_console_script_behaves_the_same(tmp_path):
    """`python -m distillery.cli` (what the `distillery` script runs): exit codes and one error line."""
    config = tmp_path / "latin1.toml"
    config.write_bytes('[[tiers]]\nmodel = "caf\xe9"\n'.encode("latin-1"))
    bad = tmp_path / "bad.toml"
    bad.write_text('escalate = "step"\n')
    (tmp_path / "q.txt").write_text("What is 2+2?\n")  # a good --queries file, so the error is the one named
    cases = [
        (["collect", "--no-such-flag"], 2, "--no-such-flag"),
        (["collect", "--queries", "q.txt"], 2, "Missing option '--teacher'"),
        (["collect", "--teacher", "world:teacher", "--queries", "q.txt", "--concurrency", "0"], 2, "--concurrency"),
        (["serve", "--cascade", str(bad), "--port", "70000"], 2, "'--port'"),
        (["build", "--split", "nan,0.5,0.5"], 2, "'--split'"),
        (["cascade", "check", str(config)], 2, "not UTF-8"),
        (["cascade", "check", str(tmp_path)], 2, "is a directory"),
        (["cascade", "check", str(bad)], 1, "no [[tiers]] entries"),
    ]
    procs = [subprocess.Popen([sys.executable, "-m", "distillery.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for args, _, _ in cases]
    for (args, code, text), proc in zip(cases, procs):
        stdout, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stdout + stderr, (args, stderr)
        assert proc.returncode == code, (args, stderr)
        (line,) = [l for l in (stdout + stderr).splitlines() if l.startswith(("Error:", "error:"))]
        assert text in line, (args, stderr)
        if code == 2:
            assert "--help' for help." in stderr, (args, stderr)
