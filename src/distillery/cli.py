"""The `distillery` command line: one sub-command per pipeline stage.

Each stage's commands live in `distillery/commands/<stage>.py` and register themselves on `app`
through `register(app)`, so this file stays a table of contents. Errors a user can fix
(`DistilleryError`) print as one line, without a traceback, and exit with status 1 (a failed run).
Usage errors (an unknown or missing option, a value out of range, a path that is a directory or not
UTF-8 text) print click's usage line, a "Try ... --help" hint and one `Error:` line, and exit with
status 2. `run(args)` returns the status instead of exiting, for tests and embedding.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from distillery.errors import DistilleryError

app = typer.Typer(
    name="distillery",
    help=(
        "Distil tool-using agents: collect teacher trajectories, build fine-tuning data, train a small "
        "student with knowledge distillation, and serve it with escalation to the teacher."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Stage modules, in pipeline order; then the commands worlds register (`distillery.registry`:
# `distillery world ...`, `distillery demo`). A module that is missing is skipped, so a partial
# install (or a stage still being written) never breaks the others.
COMMAND_MODULES = [
    "distillery.commands.collect",
    "distillery.commands.build",
    "distillery.commands.student",
    "distillery.commands.train",
    "distillery.commands.hosted",
    "distillery.commands.routing",
    "distillery.commands.report",
    "distillery.commands.serve",
]

err_console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        from distillery import __version__

        typer.echo(f"distillery {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Distil tool-using agents into small students that escalate what they cannot do."""


def _register_commands() -> None:
    from distillery import registry

    for name in [*COMMAND_MODULES, *registry.command_modules()]:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_commands()


# Exit statuses. Scripts tell a usage error (fix the command line) from a failed run (look at the message).
EXIT_OK = 0
EXIT_FAILED = 1  # a failed run: a DistilleryError (bad input file, missing key, model error), printed as one line
EXIT_USAGE = 2  # a usage error: unknown or missing option, a value out of range, a path that cannot be used
EXIT_INTERRUPTED = 130


def _click_exception_classes() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(ClickException, Exit, Abort) as this install spells them.

    typer >= 0.26 ships its own copy of click (`typer._click`) whose exceptions are not subclasses
    of click's; older typer raises click's own. Both are listed, so usage errors are caught whichever
    typer and click pip resolved.
    """
    shown: list[type] = []
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        shown += [getattr(module, "ClickException")] if hasattr(module, "ClickException") else []
        exits += [getattr(module, "Exit")] if hasattr(module, "Exit") else []
        aborts += [getattr(module, "Abort")] if hasattr(module, "Abort") else []
    return tuple(shown), tuple(exits), tuple(aborts)


def _is_shown_error(exc: BaseException, shown: tuple[type, ...]) -> bool:
    """A click-style error that prints itself: a known class, or anything with show() and an int exit_code."""
    return isinstance(exc, shown) or (callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int))


def _print_error(message: str) -> None:
    # The message is printed literally: `[[tiers]]` in a message must not be read as rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    err_console.print(str(code), highlight=False, markup=False, soft_wrap=True)
    return EXIT_FAILED


def run(args: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run the command line on `args` (default: sys.argv[1:]) and return the exit status; never raises.

    0: success. 1: a failed run; a `DistilleryError` is printed as one line (`error: ...`). 2: a usage
    error, printed by click as the usage line, a "Try ... --help" hint and one `Error: ...` line.
    3: `distillery eval` gate failed. 130: interrupted. A bug still shows its traceback.
    """
    shown, exits, aborts = _click_exception_classes()
    try:
        result = app(args=args, prog_name=prog_name, standalone_mode=False)
    except DistilleryError as exc:
        _print_error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        return _exit_code(exc.code)
    except Exception as exc:  # click's exceptions surface here outside standalone mode
        if isinstance(exc, exits):
            return _exit_code(getattr(exc, "exit_code", EXIT_FAILED))
        if _is_shown_error(exc, shown):
            exc.show()  # type: ignore[attr-defined]
            return exc.exit_code  # type: ignore[attr-defined]
        if isinstance(exc, aborts):
            if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
                err_console.print("interrupted")
                return EXIT_INTERRUPTED
            err_console.print("aborted")
            return EXIT_FAILED
        if isinstance(exc, OSError) and exc.filename is not None:
            # The environment, not the code: a full disk, a permission, a path that vanished mid-run.
            _print_error(f"{exc.filename}: {exc.strerror or exc}")
            return EXIT_FAILED
        raise
    # Outside standalone mode, click returns the code of a `typer.Exit` raised by a command (and the
    # command's own return value, which is None for every command here).
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
