"""The `distillery` command line: one sub-command per pipeline stage.

Each stage's commands live in `distillery/commands/<stage>.py` and register themselves on `app`
through `register(app)`, so this file stays a table of contents. Errors a user can fix
(`DistilleryError`) print as one line, without a traceback, and exit with status 1.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

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

# Stage modules, in pipeline order. A module that is missing is skipped, so a partial install
# (or a stage still being written) never breaks the others.
COMMAND_MODULES = [
    "distillery.commands.collect",
    "distillery.commands.world",
    "distillery.commands.build",
    "distillery.commands.train",
    "distillery.commands.hosted",
    "distillery.commands.routing",
    "distillery.commands.serve",
    "distillery.commands.demo",
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
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_commands()


def main() -> None:
    try:
        app(standalone_mode=False)
    except DistilleryError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
