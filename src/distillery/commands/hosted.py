"""`distillery finetune`: train a student on a hosted fine-tuning service (OpenAI's jobs API or a compatible one).

    distillery finetune --data data/train.jsonl --validation data/validation.jsonl --suffix support --epochs 3
    distillery finetune --data data/train.jsonl --dry-run                 # validate and estimate the cost only
    distillery finetune --resume ftjob-abc123                             # wait on a job already started
    distillery finetune --cancel ftjob-abc123

The student URI (`openai:ft:...`) is the one line printed on stdout, so scripts can capture it;
progress, events and estimates go to stderr. `hosted_command(...)` is the same thing as a
function, for `distillery train --hosted ...` to call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from distillery.commands.options import input_file, non_empty, number, parsed, usage_error
from distillery.errors import ConfigError

console = Console(stderr=True)


def hosted_command(
    hosted: str,
    data: Optional[Path],
    *,
    validation: Optional[Path] = None,
    suffix: Optional[str] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    lr_multiplier: Optional[float] = None,
    seed: Optional[int] = None,
    base_url: Optional[str] = None,
    poll_interval: float = 15.0,
    timeout: float = 6 * 3600.0,
    max_cost: Optional[float] = None,
    validate: bool = True,
    dry_run: bool = False,
    wait: bool = True,
    resume: Optional[str] = None,
    cancel: Optional[str] = None,
    progress: bool = True,
) -> Optional[str]:
    """Run one hosted fine-tuning action; returns the student URI when a job succeeded."""
    from distillery.distill import hosted as ft

    if sum(x is not None for x in (data, resume, cancel)) != 1:
        raise ConfigError("give exactly one of --data FILE (start a job), --resume JOB_ID (wait on one) or --cancel JOB_ID")
    _, base_model = ft.split_hosted(hosted)
    if dry_run:
        if data is None:
            raise ConfigError("--dry-run needs --data FILE")
        ft.check_hyperparameters(suffix=suffix, epochs=epochs, batch_size=batch_size, learning_rate_multiplier=lr_multiplier)
        plan = ft.preflight(data, base_model, validation_jsonl=validation, epochs=epochs, validate=validate)
        console.print(f"{data}: {plan.describe(base_model)}", highlight=False, soft_wrap=True, markup=False)
        console.print("dry run: nothing was uploaded", highlight=False, soft_wrap=True, markup=False)
        return None

    provider, _ = ft.provider_for(hosted, base_url=base_url, poll_interval_s=poll_interval, timeout_s=timeout)
    try:
        if cancel is not None:
            job = provider.cancel(cancel)
            console.print(f"job {job.id}: {job.status}", highlight=False, soft_wrap=True, markup=False)
            return None
        if resume is not None:
            job = ft.wait_for_job(provider, resume, progress=progress, console=console)
            ft.report_finished(job, job.model, console, scheme=provider.scheme)
            return provider.student_uri(job)
        settings = dict(
            validation_jsonl=validation,
            suffix=suffix,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate_multiplier=lr_multiplier,
            seed=seed,
            validate=validate,
            max_cost_usd=max_cost,
            console=console,
        )
        if not wait:
            ft.start_job(provider, data, base_model, **settings)
            return None
        return ft.finetune(data, hosted, progress=progress, provider=provider, **settings)
    finally:
        provider.close()


MAX_JOB_SEED = 2**31 - 1  # the fine-tuning API's seed is a 32-bit signed integer


def _check_hosted(value: str) -> None:
    from distillery.distill.hosted import split_hosted

    split_hosted(value)


def _check_suffix(value: str) -> None:
    from distillery.distill.hosted import check_hyperparameters

    check_hyperparameters(suffix=value)


def finetune_command(
    data: Optional[Path] = typer.Option(None, "--data", callback=input_file(), help="Training file: OpenAI chat fine-tuning JSONL (from `distillery build --format openai`). Checked with the builder's validator before upload."),
    hosted: str = typer.Option("openai:gpt-4o-mini-2024-07-18", "--hosted", callback=parsed(_check_hosted), help="Base model to fine-tune, as PROVIDER:MODEL. Use a dated snapshot the service lists as fine-tunable."),
    validation: Optional[Path] = typer.Option(None, "--validation", callback=input_file(), help="Validation file (same format); the service reports validation loss on it. Must not overlap the training data."),
    suffix: Optional[str] = typer.Option(None, "--suffix", callback=parsed(_check_suffix), help="Up to 64 characters added to the model name: ft:BASE:ORG:SUFFIX:ID. Name the task or dataset version."),
    epochs: Optional[int] = typer.Option(None, "--epochs", callback=number(1), help="Passes over the training file. Default: the service's 'auto' (about 3; more for small files)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", callback=number(1), help="Examples per optimizer step. Default: the service's 'auto'."),
    lr_multiplier: Optional[float] = typer.Option(None, "--lr-multiplier", callback=number(0, low_open=True), help="Scales the service's base learning rate; lower it (e.g. 0.5) if the student overfits. Default: 'auto'."),
    seed: Optional[int] = typer.Option(None, "--seed", callback=number(0, MAX_JOB_SEED), help="Seed for the job, so a rerun with the same data and settings gives (mostly) the same model."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="An OpenAI-compatible fine-tuning service (default $OPENAI_BASE_URL, then api.openai.com). The key is $OPENAI_API_KEY."),
    poll_interval: float = typer.Option(15.0, "--poll-interval", callback=number(0, low_open=True), help="Seconds between status polls."),
    timeout: float = typer.Option(6 * 3600.0, "--timeout", callback=number(0, low_open=True), help="Seconds to wait before giving up waiting (the job keeps running; resume with --resume JOB_ID)."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", callback=number(0), help="Refuse to upload when the estimated training cost (US dollars, list price) is above this."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the format checks (for services whose format differs from OpenAI's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and estimate the cost, upload nothing."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Start the job and exit; wait later with --resume JOB_ID."),
    resume: Optional[str] = typer.Option(None, "--resume", callback=non_empty(), help="Wait on a job already started (after a timeout or Ctrl-C) and print its student URI."),
    cancel: Optional[str] = typer.Option(None, "--cancel", callback=non_empty(), help="Cancel a running job."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No live status line (for CI logs); events are still printed, one line each."),
) -> None:
    """Fine-tune a hosted model on your JSONL and print the student URI (openai:ft:...) on stdout."""
    if sum(x is not None for x in (data, resume, cancel)) != 1:
        raise usage_error("give exactly one of --data FILE (start a job), --resume JOB_ID (wait on one) or --cancel JOB_ID")
    if dry_run and data is None:
        raise usage_error("--dry-run needs --data FILE")
    uri = hosted_command(
        hosted,
        data,
        validation=validation,
        suffix=suffix,
        epochs=epochs,
        batch_size=batch_size,
        lr_multiplier=lr_multiplier,
        seed=seed,
        base_url=base_url,
        poll_interval=poll_interval,
        timeout=timeout,
        max_cost=max_cost,
        validate=not no_validate,
        dry_run=dry_run,
        wait=not no_wait,
        resume=resume,
        cancel=cancel,
        progress=not no_progress,
    )
    if uri:
        typer.echo(uri)


FINETUNE_HELP = (
    "Fine-tune a hosted model on your JSONL and print the student URI (openai:ft:...) on stdout.\n\n"
    "An alternative to local training (`distillery train`), which stays the default: OpenAI's self-serve "
    "fine-tuning is closing to new users, and any OpenAI-compatible fine-tuning service works through --base-url. "
    "The file is validated and the cost estimated before anything is uploaded (--dry-run stops there)."
)


def register(app: typer.Typer) -> None:
    app.command("finetune", help=FINETUNE_HELP)(finetune_command)
