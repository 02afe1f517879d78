"""Hosted fine-tuning: upload a chat JSONL file, start a job, wait for it, get a student URI back.

    from distillery.distill.hosted import finetune

    student = finetune("train.jsonl", "openai:gpt-4o-mini-2024-07-18", suffix="support-agent", epochs=3)
    # "openai:ft:gpt-4o-mini-2024-07-18:my-org:support-agent:AbC123" -> load_model(student)

The flow is OpenAI's Files + Fine-tuning Jobs API: upload each file with purpose `fine-tune`,
create the job (supervised method, hyperparameters, suffix), poll its status and events until it
succeeds, fails or is cancelled, and return the `fine_tuned_model` it names. Step by step:

    ft = OpenAIFineTuning()                        # $OPENAI_API_KEY; base_url= for compatible services
    file_id = ft.upload("train.jsonl")
    job = ft.create_job(file_id, "gpt-4o-mini-2024-07-18", suffix="support-agent", epochs=3)
    job = ft.wait(job.id)                          # rich progress; raises on failed / cancelled / timeout
    student = ft.student_uri(job)

OpenAI's self-serve fine-tuning is closing to new users, so nothing here is OpenAI-only beyond the
`OpenAIFineTuning` class: the rest speaks the `FineTuneProvider` protocol, and any service that
implements the same endpoints fits through `base_url` (or as another provider class registered in
`PROVIDERS`). Local training (`distillery train`) stays the default path.

Before anything is uploaded the file is checked with the dataset builder's validator (OpenAI's
documented format rules) and the cost is estimated from the `prices.toml` training price; see
`preflight`.

The parts live beside this module: `hosted_jobs.py` (job and event types, the provider protocol,
waiting), `hosted_openai.py` (the OpenAI provider) and `hosted_preflight.py` (checks and cost
estimate before uploading). Their public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from distillery.distill.hosted_jobs import (  # noqa: F401  (re-exported: the public import path)
    TERMINAL_STATUSES,
    FineTuneCancelled,
    FineTuneEvent,
    FineTuneFailed,
    FineTuneJob,
    FineTuneProvider,
    FineTuneTimeout,
    JobError,
    log,
    wait_for_job,
)
from distillery.distill.hosted_openai import OpenAIFineTuning, to_event, to_job  # noqa: F401
from distillery.distill.hosted_preflight import (  # noqa: F401
    MAX_AUTO_EPOCHS,
    MAX_SUFFIX_CHARS,
    MAX_TARGET_EXAMPLES,
    MIN_TARGET_EXAMPLES,
    TARGET_EPOCHS,
    Preflight,
    auto_epochs,
    check_hyperparameters,
    preflight,
)
from distillery.errors import ConfigError

DEFAULT_BASE_MODEL = "openai:gpt-4o-mini-2024-07-18"

# Hosted fine-tuning providers by URI scheme: `--hosted openai:gpt-4o-mini-2024-07-18`.
PROVIDERS: dict[str, Callable[..., FineTuneProvider]] = {"openai": OpenAIFineTuning}


def split_hosted(uri: str) -> tuple[str, str]:
    """`("openai", "gpt-4o-mini-2024-07-18")` for `openai:gpt-4o-mini-2024-07-18`; a bare name means openai."""
    scheme, sep, name = uri.partition(":")
    if not sep:
        scheme, name = "openai", uri
    if scheme not in PROVIDERS or not name:
        known = ", ".join(f"{s}:MODEL" for s in sorted(PROVIDERS))
        raise ConfigError(f"--hosted {uri!r}: expected {known}")
    return scheme, name


def provider_for(uri: str, **options: Any) -> tuple[FineTuneProvider, str]:
    """`(provider, base model name)` for a `--hosted` URI; `options` go to the provider class."""
    scheme, name = split_hosted(uri)
    return PROVIDERS[scheme](**options), name





def start_job(
    provider: FineTuneProvider,
    train_jsonl: str | Path,
    base_model: str,
    *,
    validation_jsonl: str | Path | None = None,
    suffix: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate_multiplier: float | None = None,
    seed: int | None = None,
    validate: bool = True,
    max_cost_usd: float | None = None,
    console: Console | None = None,
) -> FineTuneJob:
    """Check, estimate, upload and create the job; returns it without waiting.

    Refuses (before uploading anything) values the API would reject, files the validator
    rejects, and an estimated cost over `max_cost_usd`.
    """
    console = console or Console(stderr=True)
    check_hyperparameters(suffix=suffix, epochs=epochs, batch_size=batch_size, learning_rate_multiplier=learning_rate_multiplier)
    plan = preflight(train_jsonl, base_model, validation_jsonl=validation_jsonl, epochs=epochs, validate=validate)
    console.print(f"{train_jsonl}: {plan.describe(base_model)}", highlight=False, soft_wrap=True, markup=False)
    if max_cost_usd is not None and plan.cost_usd is not None and plan.cost_usd > max_cost_usd:
        raise ConfigError(
            f"--max-cost: estimated ${plan.cost_usd:,.2f} is over the ${max_cost_usd:,.2f} limit; nothing was uploaded"
        )
    training_file = provider.upload(train_jsonl)
    validation_file = provider.upload(validation_jsonl) if validation_jsonl else None
    job = provider.create_job(
        training_file,
        base_model,
        validation_file=validation_file,
        suffix=suffix,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate_multiplier=learning_rate_multiplier,
        seed=seed,
    )
    console.print(
        f"started fine-tuning job {job.id} on {base_model} (if waiting stops: `distillery finetune --resume {job.id}`)",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    return job


def finetune(
    train_jsonl: str | Path,
    model: str = DEFAULT_BASE_MODEL,
    *,
    validation_jsonl: str | Path | None = None,
    suffix: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate_multiplier: float | None = None,
    seed: int | None = None,
    validate: bool = True,
    max_cost_usd: float | None = None,
    progress: bool = True,
    provider: FineTuneProvider | None = None,
    console: Console | None = None,
    **provider_options: Any,
) -> str:
    """Validate, estimate, upload, train and wait; returns the student URI (`openai:ft:...`).

    `model` is `openai:BASE_MODEL` (or a bare OpenAI model name). `provider_options` (api_key,
    base_url, poll_interval_s, timeout_s, ...) build the provider unless one is passed; a
    provider built here is closed on return. See `start_job` for what is refused up front.
    """
    console = console or Console(stderr=True)
    _, base_model = split_hosted(model)
    own_provider = provider is None
    if provider is None:
        provider, _ = provider_for(model, **provider_options)
    try:
        job = start_job(
            provider,
            train_jsonl,
            base_model,
            validation_jsonl=validation_jsonl,
            suffix=suffix,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate_multiplier=learning_rate_multiplier,
            seed=seed,
            validate=validate,
            max_cost_usd=max_cost_usd,
            console=console,
        )
        job = wait_for_job(provider, job.id, progress=progress, console=console)
        report_finished(job, base_model, console, scheme=provider.scheme)
        return provider.student_uri(job)
    finally:
        if own_provider and hasattr(provider, "close"):
            provider.close()


def report_finished(job: FineTuneJob, base_model: str, console: Console, *, scheme: str = "openai") -> None:
    """What the job trained and what that cost at list price; a note when the student has no price."""
    from distillery.pricing import price_for, training_price_per_mtok

    line = f"job {job.id} succeeded: {job.fine_tuned_model}"
    if job.trained_tokens:
        price = training_price_per_mtok(base_model)
        billed = f" (${job.trained_tokens * price / 1_000_000:,.2f} at ${price:g}/M list price)" if price else ""
        line += f"; {job.trained_tokens:,} trained tokens reported by the service{billed}"
    console.print(line, highlight=False, soft_wrap=True, markup=False)
    if price_for(f"{scheme}:{job.fine_tuned_model}") is None:
        # Without a price, every cost figure for this student (routing, evaluation) reads $0.
        family = ":".join((job.fine_tuned_model or "").split(":")[:2])
        note = (
            f"note: prices.toml has no inference price for {job.fine_tuned_model}, so its calls cost $0 in reports; "
            f'add [{scheme}."{family}"] with input/output prices (fine-tuned models are billed above their base model)'
        )
        console.print(Text(note), highlight=False, soft_wrap=True)
