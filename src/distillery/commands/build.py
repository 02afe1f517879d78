"""`distillery build`: turn stored trajectories into fine-tuning files, and `distillery build validate`.

    distillery build --from-store .distillery/store.db --format openai --out data/ --success-only \
        --dedup near --split 0.8,0.1,0.1 --stratify tier --tokenizer ./student
    distillery build validate data/train.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from distillery.commands.options import (choice, input_dir, input_file, number, output_dir, parsed, seed as seed_range,
                                         sqlite_store, usage_error)
from distillery.errors import ConfigError
from distillery.store import DEFAULT_STORE_PATH

console = Console(stderr=True)

build_app = typer.Typer(
    help=(
        "Build fine-tuning data from teacher trajectories (OpenAI JSONL, HF chat JSONL, Parquet), with "
        "filters, splits and KD sidecars. `distillery build validate FILE` checks an OpenAI JSONL file."
    ),
    no_args_is_help=False,
)


# Values checked when the command line is parsed (exit 2), by the library's own rules, imported late
# so that `distillery --help` does not load the dataset package.
def _check_format(value: str) -> None:
    from distillery.dataset.formats import check_format

    check_format(value)


def _check_status(value: str) -> None:
    from distillery.dataset.filters import STATUSES

    if value not in STATUSES:
        raise ConfigError(f"{value!r}: choose one of {', '.join(STATUSES)}")


def _check_split(value: str) -> None:
    from distillery.dataset.splits import parse_fractions

    parse_fractions(value)


def _iso_time(value: str) -> None:
    from datetime import datetime

    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not an ISO 8601 date or date-time, e.g. 2026-03-01 or 2026-03-01T12:00") from None


def _print_problems(problems: list[str]) -> None:
    for line in problems:
        console.print(line, highlight=False, soft_wrap=True, markup=False)


@build_app.callback(invoke_without_command=True)
def build_command(
    ctx: typer.Context,
    from_store: Optional[Path] = typer.Option(None, "--from-store", callback=sqlite_store(must_exist=True), help="Read trajectories from this SQLite store (written by `distillery collect`). Default: .distillery/store.db when it exists and no --from-jsonl is given."),
    from_jsonl: Optional[Path] = typer.Option(None, "--from-jsonl", callback=input_file(require_content=True), help="Read trajectories from a JSONL export instead (one Trajectory per line, e.g. `distillery store export`)."),
    format: str = typer.Option("openai", "--format", "-f", callback=parsed(_check_format), help="openai: chat fine-tuning JSONL for OpenAI's API; hf: messages+tools JSONL for TRL's SFTTrainer; parquet: the hf columns as Parquet, for large sets."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", callback=output_dir(), help="Output directory. Gets train/validation/test files, sidecars and build.json (the stats)."),
    status: str = typer.Option("ok", "--status", callback=parsed(_check_status), help="Which runs to use. ok (default): completed runs that end on a final answer. error: only failed, cut-off (max steps/tokens) or unfinished runs, to inspect them. all: both; examples may then end on a tool call or an error. Left-out runs are counted in the output."),
    success_only: bool = typer.Option(False, "--success-only", help="Keep only trajectories the task's checker judged correct (rejection sampling, as in FireAct/AgentTuning)."),
    tag: Optional[list[str]] = typer.Option(None, "--tag", help="Keep trajectories with this tag; repeat for any of several."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="Keep trajectories from this model URI (e.g. anthropic:claude-opus-4-6); repeatable."),
    since: Optional[str] = typer.Option(None, "--since", callback=parsed(_iso_time), help="Keep trajectories created at or after this ISO date/time (UTC when no offset)."),
    until: Optional[str] = typer.Option(None, "--until", callback=parsed(_iso_time), help="Keep trajectories created before this ISO date/time."),
    dedup: str = typer.Option("exact", "--dedup", callback=choice("exact", "near", "none"), help="exact: drop identical conversations; near: also drop ones with word 5-gram Jaccard >= --near-threshold (MinHash); none."),
    near_threshold: float = typer.Option(0.9, "--near-threshold", callback=number(0, 1, low_open=True), help="Jaccard similarity in (0, 1] at which --dedup near treats two conversations as copies."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", callback=number(1), help="Drop examples longer than this many tokens (counted with --tokenizer, else estimated)."),
    decontaminate: Optional[Path] = typer.Option(None, "--decontaminate", callback=input_file(), help="Evaluation task file or trajectory JSONL: drop examples whose query or task id overlaps it (exact or shared 13-gram)."),
    reasoning: str = typer.Option("keep", "--reasoning", callback=choice("keep", "drop", "first", "last"), help="Teacher reasoning/thinking as assistant text before the tool call: keep (all steps), drop, first (first step only), last (last step only)."),
    mask_failed_steps: bool = typer.Option(False, "--mask-failed-steps", help="openai format: weight 0 on steps whose tool call returned an error, so the student learns the recovery, not the mistake."),
    split: Optional[str] = typer.Option(None, "--split", callback=parsed(_check_split), help="Train/validation/test fractions, e.g. 0.8,0.1,0.1. A task's samples always stay in one split."),
    stratify: Optional[str] = typer.Option(None, "--stratify", help="Stratify the split by the tag starting with this prefix (e.g. tier), or by metadata:KEY (e.g. metadata:difficulty)."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help="Seed for the split and for near-dedup hashing; the same seed gives the same files."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", callback=input_dir(), help="The student's tokenizer directory: exact token counts, and the alignment for --sidecar topk."),
    teacher_tokenizer: Optional[Path] = typer.Option(None, "--teacher-tokenizer", callback=input_dir(), help="The teacher's tokenizer directory, to prove teacher and student share a vocabulary (--sidecar topk)."),
    sidecar: Optional[str] = typer.Option(None, "--sidecar", callback=choice("topk"), help="topk: write the teacher's sparse top-k logprobs aligned to the student tokens (<split>.topk.parquet)."),
    top_k: int = typer.Option(20, "--top-k", callback=number(1), help="How many teacher alternatives per token to keep in the topk sidecar."),
    topk_alignment: str = typer.Option("exact", "--topk-alignment", callback=choice("exact", "matched"), help="exact: targets only where the context is exactly what the teacher generated; matched: on every token the teacher also produced (approximate after a difference)."),
    action_dist: bool = typer.Option(False, "--action-dist", help="From n teacher samples per task, write the empirical distribution over canonical tool calls at each state (<split>.actions.jsonl)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Drop malformed trajectories (unanswered calls, arguments that are not JSON, store rows that do not parse) and list them, instead of failing."),
    keep_invalid_calls: bool = typer.Option(False, "--keep-invalid-calls", help="Keep examples whose calls violate the tool schema (they are dropped by default so the student does not learn them)."),
    epochs: int = typer.Option(3, "--epochs", callback=number(1), help="Epochs for the fine-tuning cost estimate (hosted fine-tuning bills every token once per epoch)."),
    price_model: str = typer.Option("openai:gpt-4o-mini", "--price-model", help="Whose training price to estimate with, from prices.toml [training.*]."),
    token_limit: int = typer.Option(65_536, "--token-limit", callback=number(1), help="Per-example token limit of the fine-tuning service (65,536 for gpt-4o-mini)."),
) -> None:
    """Build fine-tuning data from trajectories and print its statistics."""
    if ctx.invoked_subcommand is not None:
        return
    from distillery.dataset import DatasetBuilder, ProblemsError, read_store, read_trajectory_jsonl
    from distillery.dataset.splits import parse_fractions
    from distillery.dataset.stats import load_tokenizer

    if from_store is None and from_jsonl is None and Path(DEFAULT_STORE_PATH).is_file():
        from_store = Path(DEFAULT_STORE_PATH)  # where `distillery collect` writes by default
        console.print(f"reading {from_store} (the store `distillery collect` writes by default)", highlight=False)
    if (from_store is None) == (from_jsonl is None):
        raise usage_error(f"give exactly one input: --from-store PATH or --from-jsonl FILE (no store at the default "
                          f"{DEFAULT_STORE_PATH} here)")
    if out is None:
        raise usage_error("--out DIR is required (the directory the dataset files are written to)")
    if sidecar == "topk" and tokenizer is None:
        raise usage_error("--sidecar topk needs the student tokenizer (--tokenizer DIR) to align targets")
    student = load_tokenizer(tokenizer) if tokenizer else None
    builder = DatasetBuilder(
        format=format,
        reasoning=reasoning,
        mask_failed_steps=mask_failed_steps,
        success_only=success_only,
        status=status,
        # A store filters in SQL; a JSONL export is filtered by the builder.
        tags=tag if from_jsonl else None,
        models=model if from_jsonl else None,
        since=since if from_jsonl else None,
        until=until if from_jsonl else None,
        drop_invalid_calls=not keep_invalid_calls,
        skip_invalid=skip_invalid,
        dedup=dedup,
        near_threshold=near_threshold,
        max_tokens=max_tokens,
        decontaminate=decontaminate,
        split=parse_fractions(split) if split else None,
        stratify=stratify,
        seed=seed,
        tokenizer=student,
        teacher_tokenizer=load_tokenizer(teacher_tokenizer) if teacher_tokenizer else None,
        topk=top_k if sidecar == "topk" else None,
        topk_alignment=topk_alignment,
        action_distributions=action_dist,
        epochs=epochs,
        price_model=price_model,
        token_limit=token_limit,
    )
    if from_store is not None:
        filters = {"tags_any": tag or None, "model": model or None, "since": since, "until": until}
        source = read_store(from_store, **{k: v for k, v in filters.items() if v is not None})
    else:
        source = read_trajectory_jsonl(from_jsonl)
    try:
        with console.status("building dataset..."):
            report = builder.build(source, out)
    except ProblemsError as exc:
        _print_problems(exc.problems)
        raise
    print_report(report)


def print_report(report) -> None:
    table = Table(title=f"dataset ({report.format})", show_lines=False)
    for column in ("split", "examples", "tokens", "p50", "p95", "max"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, stats in report.splits.items():
        table.add_row(name, f"{stats.examples:,}", f"{stats.total:,}", f"{stats.p50:,}", f"{stats.p95:,}", f"{stats.max:,}")
    console.print(table)
    method = next(iter(report.splits.values())).method if report.splits else ""
    console.print(f"tokens: {method}", highlight=False)
    removed = ", ".join(f"{name}: {count}" for name, count in report.removed.items() if count)
    console.print(f"read {report.inputs:,} trajectories; removed {removed or 'none'}", highlight=False)
    if report.cost is not None:
        console.print(f"estimated fine-tuning cost (train split): {report.cost.describe()}", highlight=False)
    for name, topk in report.topk.items():
        console.print(
            f"topk sidecar ({name}): k={topk.k}, coverage {topk.coverage:.1%} of {topk.assistant_tokens:,} assistant "
            f"tokens, {topk.bytes:,} bytes = {topk.bytes_per_token:.1f} bytes/token",
            highlight=False,
        )
    for name, rows in report.action_rows.items():
        console.print(f"action distributions ({name}): {rows:,} states", highlight=False)
    for name, (conversations, sequences) in report.sequences.items():
        split = f"; {sequences - conversations:,} extra where a turn's history re-tokenizes differently" if sequences > conversations else ""
        console.print(
            f"prefix check ({name}): every assistant turn of {conversations:,} conversations is trained after exactly "
            f"its inference prompt's tokens ({sequences:,} training sequences{split})",
            highlight=False,
        )
    for line in report.skipped[:20]:
        console.print(f"[yellow]skipped[/] {line}", highlight=False, soft_wrap=True)
    if len(report.skipped) > 20:
        console.print(f"[yellow]... and {len(report.skipped) - 20} more skipped (see build.json)[/]")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for path in report.files:
        console.print(f"wrote {path}", highlight=False)


@build_app.command("validate")
def validate_command(
    file: Path = typer.Argument(..., callback=input_file(), metavar="FILE", help="An OpenAI chat fine-tuning JSONL file."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", callback=input_dir(), help="Count tokens with this tokenizer's chat template (else estimated as characters / 4)."),
    token_limit: int = typer.Option(65_536, "--token-limit", callback=number(1), help="Per-example token limit (65,536 for gpt-4o-mini and gpt-4o fine-tuning)."),
    epochs: int = typer.Option(3, "--epochs", callback=number(1), help="Epochs for the cost estimate."),
    price_model: str = typer.Option("openai:gpt-4o-mini", "--price-model", help="Whose training price to estimate with (prices.toml [training.*])."),
) -> None:
    """Check an OpenAI fine-tuning JSONL file; list every problem as FILE:LINE: field: problem; exit 1 if any."""
    from distillery.dataset import validate_openai_jsonl
    from distillery.dataset.stats import TokenCounter, TokenStats, estimate_cost, load_tokenizer

    counter = TokenCounter(load_tokenizer(tokenizer) if tokenizer else None)
    report = validate_openai_jsonl(file, token_limit=token_limit, counter=counter)
    stats = TokenStats.of(report.token_counts, counter.method)
    console.print(
        f"{report.examples:,} examples; tokens per example p50 {stats.p50:,}, p95 {stats.p95:,}, max {stats.max:,} "
        f"({stats.method})",
        highlight=False,
    )
    console.print(f"estimated fine-tuning cost: {estimate_cost(stats.total, epochs=epochs, model=price_model).describe()}", highlight=False)
    if not report.ok:
        _print_problems(report.lines())
        raise ConfigError(f"{file}: {len(report.problems)} problem(s); the file would be rejected")
    console.print(f"[green]ok[/]: {file} passes the format checks", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(build_app, name="build")
