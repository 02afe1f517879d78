"""`distillery report`: an eval result as one self-contained HTML page (docs/report.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from distillery.commands.options import input_file, number, output_file

console = Console()


def report(
    results: Path = typer.Argument(..., callback=input_file(), metavar="EVAL_JSON",
                                   help="An eval result: the JSON `distillery eval --out` wrote (e.g. runs/eval.json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", callback=output_file(),
                                       help="Where to write the HTML. Default: beside the result, with .html (runs/eval.html)."),
    trajectories: Optional[Path] = typer.Option(
        None, "--trajectories", callback=input_file(),
        help="The cascade's trajectories as JSONL (one Trajectory per line), when not the file the result names "
        "(runs/eval.trajectories.jsonl, written by `distillery eval`)."),
    cascade: Optional[Path] = typer.Option(
        None, "--cascade", "-c", callback=input_file(),
        help="The cascade config the report is for; `distillery serve --cascade CONFIG` then serves it at GET /report. "
        "Default: the config the result names, when that file exists."),
    page_size: int = typer.Option(20, "--page-size", callback=number(1, 1000), help="Trajectories per page in the viewer."),
    title: Optional[str] = typer.Option(None, "--title", help="The page title. Default: the cascade, the task count, and "
                                        "'offline world' where the result is one."),
) -> None:
    """Write an eval result as one self-contained HTML file: summary, curves, reliability, trajectory viewer.

    Everything is inline (no network, no CDN), so it opens from disk and can be attached to a PR.
    """
    from distillery.report import write_report

    written = write_report(results, out, trajectories=trajectories, cascade=cascade, page_size=page_size, title=title)
    size = written.bytes / 1e6
    console.print(f"wrote {written.path} ({size:.2f} MB, {written.trajectories} trajectories); open it in a browser",
                  highlight=False, soft_wrap=True)
    if written.registered_for is not None:
        console.print(f"the latest report for {written.registered_for}: `distillery serve --cascade "
                      f"{written.registered_for}` serves it at GET /report", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
