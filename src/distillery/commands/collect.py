"""`distillery collect`: run a teacher over a query file into the trajectory store.

Also `distillery store stats` and `distillery store export`, to look at what was collected.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from distillery.commands.options import choice, input_file, number, output_file, sqlite_store
from distillery.errors import ConfigError, DistilleryError
from distillery.store import DEFAULT_STORE_PATH, SQLiteStore
from distillery.tools import default_system, default_tools, load_tools

console = Console(stderr=True)

# --log-level: the logging module's names, in either case (DISTILLERY_LOG_LEVEL=debug works too).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error")


def setup_logging(level: str, log_file: Path | None) -> None:
    """Log to a file (or stderr) at `level`, with API keys redacted from every record."""
    from distillery.redaction import RedactingFilter

    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"--log-level {level!r}: expected DEBUG, INFO, WARNING or ERROR")
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--log-file {log_file}: cannot open for writing ({exc.strerror})") from None
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler.set_name("distillery-collect")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "distillery-collect"]:
        root.removeHandler(old)  # a second run in the same process (tests, notebooks) replaces, not doubles
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)


def collect_command(
    teacher: str = typer.Option(
        ..., "--teacher", "-t", metavar="URI",
        help="The teacher model, as provider:name. Examples: anthropic:claude-opus-4-6, openai:gpt-4o, "
        "world:teacher (offline), openai:Qwen/Qwen2.5-72B-Instruct with --base-url for vLLM.",
    ),
    queries: Path = typer.Option(
        ..., "--queries", "-q", metavar="FILE", callback=input_file(),
        help="Tasks to run: plain text (one query per line, # comments) or JSONL with "
        '{"id", "query", "expected", "checker"} per line. Try examples/queries.jsonl.',
    ),
    tools: Optional[str] = typer.Option(
        None, "--tools", metavar="MODULE:ATTR",
        help="Import path of the tools to offer: a ToolBox or list of @tool functions, e.g. mypkg.tools:TOOLS, "
        "or the name of a world's tools. Default: the offline world's tools (world).",
    ),
    tool_schemas: Optional[Path] = typer.Option(
        None, "--tool-schemas", metavar="FILE", callback=input_file(),
        help="A JSON file of tool schemas (OpenAI or Anthropic spelling) that replace what the model sees for "
        "the same-named tools in --tools. Each schema must name a tool there: a schema alone cannot answer calls.",
    ),
    system: Optional[str] = typer.Option(
        None, "--system", help="System prompt for every task (a task's own 'system' field wins). "
        "Default with the world's tools: the world's shop-assistant prompt.",
    ),
    store_path: Path = typer.Option(
        Path(DEFAULT_STORE_PATH), "--store", metavar="PATH", callback=sqlite_store(must_exist=False),
        help="SQLite trajectory store. Re-running with the same store resumes: finished runs are skipped, failed ones retried.",
    ),
    n: int = typer.Option(1, "--n", callback=number(1, 1000), help="Samples per task (sample_index 0..n-1), for action distributions. n>1 defaults to temperature 1.0."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", callback=number(1, 10_000), help="Runs in flight at once (in total). Raise it until the provider starts rate-limiting (429s are retried)."),
    processes: int = typer.Option(
        1, "--processes", "-p", callback=number(1, 256),
        help="Split the runs over this many processes, each with its own event loop and SDK client. One process "
        "tops out at a few hundred requests/s (SDK CPU); use more for fast local servers (vLLM) on a multi-core machine. "
        "The budget is split evenly between them.",
    ),
    budget: Optional[float] = typer.Option(
        None, "--budget", metavar="USD", callback=number(0),
        help="Stop starting new runs before spending more than this many dollars (prices from prices.toml). In-flight runs finish.",
    ),
    max_steps: int = typer.Option(10, "--max-steps", callback=number(1, 1000), help="Model calls per task before giving up (status max_steps)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", callback=number(0, 2), help="Sampling temperature in [0, 2]. Default 0.0 for --n 1, 1.0 for --n > 1."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", callback=number(1), help="Output token limit per model call (provider default if unset)."),
    logprobs: bool = typer.Option(False, "--logprobs/--no-logprobs", help="Record token logprobs (OpenAI-compatible servers; needed for sparse KD and confidence)."),
    top_logprobs: int = typer.Option(0, "--top-logprobs", metavar="K", callback=number(0, 20), help="Also record the top-K alternatives per token, K in [0, 20] (implies --logprobs)."),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", metavar="URL",
        help="Send requests to this server instead of the provider's API, e.g. http://localhost:8000/v1 for vLLM.",
    ),
    max_retries: int = typer.Option(6, "--max-retries", callback=number(0, 100), help="Retries per model call for 429/5xx/timeouts (exponential backoff with jitter, or the server's retry-after)."),
    timeout: float = typer.Option(
        # = distillery.collect.DEFAULT_TIMEOUT_S (a test checks), not imported: the CLI starts without the collector
        120.0, "--timeout", metavar="SECONDS", callback=number(0, low_open=True),
        help="Give up on one request to a hosted teacher (anthropic:, openai:) after this many seconds without "
        "an answer, and retry it like a 5xx. The default suits agent steps of up to a few thousand output "
        "tokens; raise it with a large --max-tokens or extended thinking.",
    ),
    tags: list[str] = typer.Option([], "--tag", help="Tag every trajectory (repeatable), e.g. --tag run-2026-03 --tag teacher."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a live progress bar with counts and running cost."),
    log_level: str = typer.Option(
        "WARNING", "--log-level", envvar="DISTILLERY_LOG_LEVEL", callback=choice(*LOG_LEVELS),
        help="DEBUG, INFO (retries), WARNING (failed tasks) or ERROR.",
    ),
    log_file: Optional[Path] = typer.Option(None, "--log-file", metavar="PATH", callback=output_file(), help="Write logs to this file instead of stderr. API keys are redacted."),
) -> None:
    """Run the teacher agent over every query and store its trajectories (resumable)."""
    from distillery.collect import TeacherCollector, override_tool_specs
    from distillery.tasks import load_tasks
    from distillery.tools import load_tool_specs

    setup_logging(log_level, log_file)
    task_list = load_tasks(queries)
    tools_path = tools or default_tools()
    # Check tools and schemas here, so errors name the option and file, before anything starts.
    toolbox = load_tools(tools_path, option="--tools")
    schemas = load_tool_specs(tool_schemas) if tool_schemas is not None else None
    if schemas:
        override_tool_specs(toolbox, schemas, source=str(tool_schemas))
    system = default_system(system, tools)
    store = SQLiteStore(store_path)
    model_options: dict[str, Any] = {}
    if base_url:
        model_options["base_url"] = base_url
    collector = TeacherCollector(
        teacher,
        tools_path,
        tool_schemas=schemas,
        processes=processes,
        store=store,
        system=system,
        n=n,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout_s=timeout,
        budget_usd=budget,
        max_steps=max_steps,
        temperature=temperature,
        max_tokens=max_tokens,
        logprobs=logprobs or top_logprobs > 0,
        top_logprobs=top_logprobs,
        progress=progress,
        tags=tags,
        keep_trajectories=False,
        model_options=model_options,
    )
    result = collector.collect(task_list)
    print_summary(result, store, collector.model_name, total=len(task_list) * n)
    if result.failed and not (result.ok or result.incomplete or result.resumed):
        raise DistilleryError(f"every run failed; first error: {result.first_error}")


def print_summary(result, store: SQLiteStore, model: str, *, total: int) -> None:
    table = Table(title=f"collect {model}", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("runs", justify="right")
    table.add_row("ok (final answer)", str(result.ok))
    table.add_row("failed (retried on re-run)", str(result.failed), style="red" if result.failed else None)
    table.add_row("incomplete (max steps/tokens, refused)", str(result.incomplete))
    table.add_row("resumed (already stored)", str(result.resumed))
    table.add_row("not started (budget)", str(result.skipped_budget), style="yellow" if result.skipped_budget else None)
    table.add_row("total requested", str(total))
    if result.checked:
        table.add_row("correct by checker", f"{result.succeeded}/{result.checked}")
    table.add_row("retries", str(result.retries))
    table.add_row("cost", f"${result.cost_usd:.4f}")
    table.add_row("wall time", f"{result.wall_s:.1f} s")
    if result.total and result.wall_s > 0:
        table.add_row("throughput", f"{result.total / result.wall_s:.1f} runs/s")
    table.add_row("store", f"{store.path} ({store.count(model=model)} rows for this model)")
    Console().print(table)
    if result.stopped_by_budget:
        console.print(f"[yellow]{result.budget_line()}[/]")
    if result.failed:
        console.print(f"[red]{result.failed} runs failed[/]; first error: {result.first_error}", highlight=False)


store_app = typer.Typer(help="Look at the trajectory store: counts, costs, export to JSONL.", no_args_is_help=True)


def _filters(model, status, success, tags_any, tags_all, limit) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if model:
        filters["model"] = model
    if status:
        filters["status"] = status
    if success is not None:
        filters["success"] = success
    if tags_any:
        filters["tags_any"] = tags_any
    if tags_all:
        filters["tags_all"] = tags_all
    if limit is not None:
        filters["limit"] = limit
    return filters


_STORE_OPTION = typer.Option(Path(DEFAULT_STORE_PATH), "--store", metavar="PATH", callback=sqlite_store(must_exist=True),
                             help="SQLite trajectory store to read.")
_MODEL_OPTION = typer.Option([], "--model", help="Only this model URI (repeatable).")
_STATUS_OPTION = typer.Option([], "--status", help="Only this status: ok, error, max_steps, max_tokens, refused (repeatable).")
_SUCCESS_OPTION = typer.Option(None, "--success/--failed-check", help="Only trajectories the checker judged correct (or wrong).")
_TAG_OPTION = typer.Option([], "--tag", help="Only trajectories with at least one of these tags (repeatable).")
_ALL_TAGS_OPTION = typer.Option([], "--all-tags", help="Only trajectories with every one of these tags (repeatable).")


@store_app.command("stats")
def store_stats(
    store_path: Path = _STORE_OPTION,
    model: list[str] = _MODEL_OPTION,
    tag: list[str] = _TAG_OPTION,
) -> None:
    """Count stored trajectories by model and status, with cost and checker success."""
    store = SQLiteStore(store_path, readonly=True)
    stats = store.stats(**_filters(model, None, None, tag, None, None))
    table = Table(title=str(store_path))
    for column in ("model", "status", "count", "correct/checked", "cost"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for row in stats["rows"]:
        table.add_row(row["model"], row["status"], str(row["count"]), f"{row['succeeded']}/{row['checked']}", f"${row['cost_usd']:.4f}")
    table.add_row("total", "", str(stats["count"]), "", f"${stats['cost_usd']:.4f}", style="bold")
    Console().print(table)


@store_app.command("export")
def store_export(
    out: Path = typer.Argument(..., metavar="OUT.jsonl", callback=output_file(), help="Where to write one Trajectory JSON per line."),
    store_path: Path = _STORE_OPTION,
    model: list[str] = _MODEL_OPTION,
    status: list[str] = _STATUS_OPTION,
    success: Optional[bool] = _SUCCESS_OPTION,
    tag: list[str] = _TAG_OPTION,
    all_tags: list[str] = _ALL_TAGS_OPTION,
    limit: Optional[int] = typer.Option(None, "--limit", callback=number(0), help="At most this many trajectories."),
) -> None:
    """Export matching trajectories to JSONL (written to a temp file, then renamed)."""
    store = SQLiteStore(store_path, readonly=True)
    written = store.export_jsonl(out, **_filters(model, status, success, tag, all_tags, limit))
    console.print(f"wrote {written} trajectories to {out}")


def register(app: typer.Typer) -> None:
    app.command("collect")(collect_command)
    app.add_typer(store_app, name="store")
