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
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from distillery.errors import ConfigError, DistilleryError, MissingAPIKeyError, ModelError, TransientModelError

log = logging.getLogger("distillery.hosted")

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_BASE_MODEL = "openai:gpt-4o-mini-2024-07-18"
MAX_SUFFIX_CHARS = 64  # OpenAI's documented limit for `suffix`


# --- errors ----------------------------------------------------------------------------------


class FineTuneFailed(ModelError):
    """The provider reported the job as failed; `code`, `error_message` and `param` say why."""

    def __init__(self, job_id: str, code: str | None, message: str | None, param: str | None = None):
        where = f" (param {param})" if param else ""
        super().__init__(f"fine-tuning job {job_id} failed: {code or 'unknown_error'}: {message or 'no message'}{where}")
        self.job_id, self.code, self.error_message, self.param = job_id, code, message, param


class FineTuneCancelled(ModelError):
    def __init__(self, job_id: str):
        super().__init__(f"fine-tuning job {job_id} was cancelled; it produced no model (start a new job to train again)")
        self.job_id = job_id


class FineTuneTimeout(DistilleryError):
    """We stopped waiting; the job itself goes on at the provider."""

    def __init__(self, job_id: str, status: str | None, waited_s: float):
        state = f"is still {status}" if status else "could not be polled (see the warnings above)"
        super().__init__(
            f"fine-tuning job {job_id} {state} after waiting {waited_s:.0f} s; it keeps running at the "
            f"provider: resume waiting with `distillery finetune --resume {job_id}` (or cancel it with --cancel {job_id})"
        )
        self.job_id, self.status = job_id, status


# --- provider-neutral job and event ----------------------------------------------------------


@dataclass
class JobError:
    code: str | None
    message: str | None
    param: str | None = None


@dataclass
class FineTuneJob:
    """A fine-tuning job as any provider reports it; `raw` keeps the provider's own object."""

    id: str
    status: str  # validating_files | queued | running | succeeded | failed | cancelled
    model: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: JobError | None = None
    estimated_finish: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    raw: Any = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass
class FineTuneEvent:
    id: str
    created_at: int
    level: str  # info | warn | error
    message: str
    type: str = "message"  # "metrics" events carry step / total_steps / train_loss in `data`
    data: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class FineTuneProvider(Protocol):
    """What a hosted fine-tuning service must offer; `wait_for_job` and `finetune` need only this."""

    scheme: str  # the model URI scheme its fine-tuned models load under, e.g. "openai"
    poll_interval_s: float
    timeout_s: float

    def upload(self, path: str | Path) -> str: ...

    def create_job(
        self,
        training_file: str,
        model: str,
        *,
        validation_file: str | None = None,
        suffix: str | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate_multiplier: float | None = None,
        seed: int | None = None,
    ) -> FineTuneJob: ...

    def retrieve(self, job_id: str) -> FineTuneJob: ...

    def events(self, job_id: str, *, since: str | None = None) -> list[FineTuneEvent]:
        """Events newer than the event id `since` (all recent ones when None), oldest first."""
        ...

    def cancel(self, job_id: str) -> FineTuneJob: ...

    def student_uri(self, job: FineTuneJob) -> str: ...


# --- waiting -----------------------------------------------------------------------------------


def wait_for_job(
    provider: FineTuneProvider,
    job_id: str,
    *,
    progress: bool = True,
    console: Console | None = None,
    poll_interval_s: float | None = None,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FineTuneJob:
    """Poll a job until it succeeds; print its new events as they come.

    `progress` adds a live status line with a step bar (from `metrics` events) below the events;
    without it the events are still printed, one line each (pass `Console(quiet=True)` for
    silence; they are also logged to `distillery.hosted` at INFO). Returns the succeeded job. Raises `FineTuneFailed` / `FineTuneCancelled` when it ends
    otherwise, and `FineTuneTimeout` (naming the job, which keeps running) after `timeout_s`.
    A poll that fails transiently (5xx, 429, connection) is logged and retried at the next
    interval: a job runs for hours and one bad poll must not lose it. Ctrl-C stops waiting, not
    the job, and says how to resume.
    """
    interval = provider.poll_interval_s if poll_interval_s is None else poll_interval_s
    limit = provider.timeout_s if timeout_s is None else timeout_s
    console = console or Console(stderr=True)
    started = clock()
    last_event: str | None = None
    status: str | None = None
    display = _JobDisplay(job_id, console, live=progress)
    try:
        display.start()
        while True:
            try:
                job = provider.retrieve(job_id)
                new_events = provider.events(job_id, since=last_event)
            except TransientModelError as exc:
                log.warning("polling %s: %s; trying again in %.0f s", job_id, exc, interval)
            else:
                status = job.status
                if new_events:
                    last_event = new_events[-1].id
                for event in new_events:
                    log.info("%s: %s", job_id, event.message)
                    display.event(event)
                display.update(job)
                if job.done:
                    return _outcome(job)
            waited = clock() - started
            if waited >= limit:
                raise FineTuneTimeout(job_id, status, waited)
            sleep(min(interval, max(0.0, limit - waited)))
    except KeyboardInterrupt:
        console.print(
            f"stopped waiting; job {job_id} keeps running. Resume with `distillery finetune --resume {job_id}`, "
            f"cancel with `distillery finetune --cancel {job_id}`",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        raise
    finally:
        display.stop()


def _outcome(job: FineTuneJob) -> FineTuneJob:
    if job.status == "succeeded":
        if not job.fine_tuned_model:
            raise ModelError(f"fine-tuning job {job.id} succeeded but names no fine_tuned_model")
        return job
    if job.status == "cancelled":
        raise FineTuneCancelled(job.id)
    error = job.error or JobError(None, None)
    raise FineTuneFailed(job.id, error.code, error.message, error.param)


class _JobDisplay:
    """Event lines for one job, and (when `live`) a rich status line: status, training steps, elapsed."""

    def __init__(self, job_id: str, console: Console, *, live: bool = True):
        self.live = live
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[steps]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task(f"{job_id} starting", total=None, steps="")
        self.job_id = job_id

    def start(self) -> None:
        if self.live:
            self.progress.start()

    def stop(self) -> None:
        if self.live:
            self.progress.stop()

    def update(self, job: FineTuneJob) -> None:
        self.progress.update(self.task, description=f"{self.job_id} {job.status}")

    def event(self, event: FineTuneEvent) -> None:
        when = datetime.fromtimestamp(event.created_at).strftime("%H:%M:%S") if event.created_at else "--:--:--"
        style = {"error": "red", "warn": "yellow"}.get(event.level, "")
        # A Text, not a markup string: event messages are the service's text and may hold "[...]".
        # While the live line runs, rich prints this above it.
        self.console.print(Text(f"{when} {event.message}", style=style), highlight=False, soft_wrap=True)
        step, total = event.data.get("step"), event.data.get("total_steps")
        if event.type == "metrics" and isinstance(step, int) and isinstance(total, int) and total > 0:
            self.progress.update(self.task, completed=step, total=total, steps=f"step {step}/{total}")


# --- OpenAI ------------------------------------------------------------------------------------


class OpenAIFineTuning:
    """OpenAI's Files + Fine-tuning Jobs API through the official SDK, or any service speaking it.

    Args:
        api_key: Defaults to $OPENAI_API_KEY; required for api.openai.com. A custom `base_url`
            without a key gets a placeholder, as `OpenAIModel` does.
        base_url: Defaults to $OPENAI_BASE_URL, then https://api.openai.com/v1.
        poll_interval_s: Seconds between status polls in `wait`. Jobs take minutes to hours.
        timeout_s: How long `wait` waits before raising `FineTuneTimeout` (the job goes on).
        request_timeout_s: Per HTTP request (an upload of a large file needs the most).
        max_retries: The SDK's own retries per request (429 / 5xx / connection errors).
        hyperparameters_style: "method" sends `method: {type: supervised, supervised:
            {hyperparameters}}` (the current API); "legacy" sends top-level `hyperparameters`,
            for compatible services that predate `method`.
    """

    scheme = "openai"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        poll_interval_s: float = 15.0,
        timeout_s: float = 6 * 3600.0,
        request_timeout_s: float = 600.0,
        max_retries: int = 2,
        hyperparameters_style: str = "method",
    ):
        from distillery.models.openai import OFFICIAL_HOST, PLACEHOLDER_KEY

        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.official = self.base_url is None or urlparse(self.base_url).hostname == OFFICIAL_HOST
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self._api_key:
            if self.official:
                raise MissingAPIKeyError("openai fine-tuning", "OPENAI_API_KEY")
            self._api_key = PLACEHOLDER_KEY
        if hyperparameters_style not in ("method", "legacy"):
            raise ConfigError(f"hyperparameters_style must be 'method' or 'legacy', got {hyperparameters_style!r}")
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self.max_retries = max_retries
        self.hyperparameters_style = hyperparameters_style
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.request_timeout_s,
                max_retries=self.max_retries,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> OpenAIFineTuning:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:  # never the key
        return f"OpenAIFineTuning(base_url={self.base_url or 'https://api.openai.com/v1'!r})"

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One SDK call, its failures turned into our one-line errors (without the key)."""
        import openai

        from distillery.models._hosted import to_model_error

        try:
            return fn(*args, **kwargs)
        except openai.OpenAIError as exc:
            raise to_model_error(exc, openai, f"openai fine-tuning: {what}", secrets=[self._api_key]) from None

    # --- the API ---

    def upload(self, path: str | Path) -> str:
        """Upload a JSONL file with purpose `fine-tune`; returns the file id."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        with path.open("rb") as f:
            uploaded = self._call(f"upload {path.name}", self.client.files.create, file=f, purpose="fine-tune")
        log.info("uploaded %s (%d bytes) as %s", path, path.stat().st_size, uploaded.id)
        return uploaded.id

    def create_job(
        self,
        training_file: str,
        model: str,
        *,
        validation_file: str | None = None,
        suffix: str | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate_multiplier: float | None = None,
        seed: int | None = None,
    ) -> FineTuneJob:
        """Start a supervised fine-tuning job. Hyperparameters left None are the service's "auto"."""
        check_hyperparameters(suffix=suffix, epochs=epochs, batch_size=batch_size, learning_rate_multiplier=learning_rate_multiplier)
        hyperparameters = {
            key: value
            for key, value in (
                ("n_epochs", epochs),
                ("batch_size", batch_size),
                ("learning_rate_multiplier", learning_rate_multiplier),
            )
            if value is not None
        }
        request: dict[str, Any] = {"model": model, "training_file": training_file}
        if self.hyperparameters_style == "method":
            request["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
        elif hyperparameters:
            request["hyperparameters"] = hyperparameters
        for key, value in (("validation_file", validation_file), ("suffix", suffix), ("seed", seed)):
            if value is not None:
                request[key] = value
        job = self._call(f"create job on {model}", self.client.fine_tuning.jobs.create, **request)
        log.info("created fine-tuning job %s on %s", job.id, model)
        return to_job(job)

    def retrieve(self, job_id: str) -> FineTuneJob:
        return to_job(self._call(f"job {job_id}", self.client.fine_tuning.jobs.retrieve, job_id))

    def events(self, job_id: str, *, since: str | None = None, page_size: int = 100) -> list[FineTuneEvent]:
        """Events newer than `since`, oldest first.

        The API lists events newest first and pages backwards in time (`after` = the oldest event
        of the previous page), so we page until we meet `since`. Without `since`, one page.
        """
        newest_first: list[Any] = []
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size}
            if after:
                kwargs["after"] = after
            page = self._call(f"events of {job_id}", self.client.fine_tuning.jobs.list_events, job_id, **kwargs)
            ids = [e.id for e in page.data]
            if since in ids:
                newest_first.extend(page.data[: ids.index(since)])
                break
            newest_first.extend(page.data)
            if since is None or not page.has_more or not page.data:
                break
            after = page.data[-1].id
        return [to_event(e) for e in reversed(newest_first)]

    def cancel(self, job_id: str) -> FineTuneJob:
        return to_job(self._call(f"cancel {job_id}", self.client.fine_tuning.jobs.cancel, job_id))

    def wait(self, job_id: str, progress: bool = True, **options: Any) -> FineTuneJob:
        """`wait_for_job(self, job_id, ...)`: poll until the job ends; see there."""
        return wait_for_job(self, job_id, progress=progress, **options)

    def student_uri(self, job: FineTuneJob) -> str:
        """The model URI of a succeeded job: `openai:ft:...`, loadable with `load_model`."""
        return f"{self.scheme}:{job.fine_tuned_model}"

    def load_student(self, uri: str, **options: Any) -> Any:
        """The fine-tuned model as a `ChatModel`, on the same endpoint and key as this client."""
        from distillery.models import load_model

        return load_model(uri, api_key=self._api_key, base_url=self.base_url, **options)


def to_job(job: Any) -> FineTuneJob:
    """An OpenAI `FineTuningJob` (SDK object) as a provider-neutral `FineTuneJob`."""
    error = getattr(job, "error", None)
    hyper = getattr(job, "hyperparameters", None)
    return FineTuneJob(
        id=job.id,
        status=job.status,
        model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        trained_tokens=job.trained_tokens,
        # An unfailed job may carry an empty error object; only a code or message counts.
        error=JobError(error.code, error.message, error.param) if error and (error.code or error.message) else None,
        estimated_finish=getattr(job, "estimated_finish", None),
        hyperparameters=hyper.model_dump(exclude_none=True) if hyper is not None else {},
        raw=job,
    )


def to_event(event: Any) -> FineTuneEvent:
    data = event.data if isinstance(event.data, dict) else {}
    return FineTuneEvent(
        id=event.id,
        created_at=event.created_at or 0,
        level=event.level or "info",
        message=event.message or "",
        type=event.type or "message",
        data=data,
    )


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


def check_hyperparameters(
    *,
    suffix: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate_multiplier: float | None = None,
) -> None:
    """Refuse values the API would reject, before anything is uploaded or billed."""
    if suffix is not None and not (0 < len(suffix) <= MAX_SUFFIX_CHARS):
        raise ConfigError(f"--suffix: must be 1 to {MAX_SUFFIX_CHARS} characters, got {len(suffix)}")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs: must be at least 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1, got {batch_size}")
    if learning_rate_multiplier is not None and not learning_rate_multiplier > 0:
        raise ConfigError(f"--lr-multiplier: must be positive, got {learning_rate_multiplier}")


# --- before uploading: validation and cost -------------------------------------------------------

# OpenAI's cookbook heuristic for `n_epochs: "auto"` (its "Data preparation and analysis for chat
# model fine-tuning" notebook): 3 epochs, raised so that small files see ~100 examples in total and
# lowered so that large ones see ~25,000. The service's real choice is reported on the job.
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MAX_AUTO_EPOCHS = 3, 100, 25_000, 25


def auto_epochs(examples: int) -> int:
    """The epochs "auto" is expected to pick for this many training examples (an estimate)."""
    if examples <= 0:
        return TARGET_EPOCHS
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / examples))
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


@dataclass
class Preflight:
    """What we know before uploading: the files are valid, and what training will roughly cost."""

    examples: int
    training_tokens: int  # per epoch, estimated
    epochs: int
    epochs_estimated: bool  # True when epochs is our guess at "auto"
    price_per_mtok: float | None
    token_method: str
    validated: bool

    @property
    def cost_usd(self) -> float | None:
        if self.price_per_mtok is None:
            return None
        return self.training_tokens * self.epochs * self.price_per_mtok / 1_000_000

    def describe(self, model: str) -> str:
        epochs = f"{self.epochs} epochs" + (" (our guess at 'auto')" if self.epochs_estimated else "")
        if self.cost_usd is None:
            cost = f"no training price for {model} in prices.toml [training.*]"
        else:
            cost = f"about ${self.cost_usd:,.2f} at ${self.price_per_mtok:g}/M training tokens (prices.toml list price)"
        return (
            f"{self.examples:,} examples, ~{self.training_tokens:,} tokens per epoch x {epochs}: {cost}; "
            f"tokens {self.token_method}"
        )


def preflight(
    train_jsonl: str | Path,
    model: str,
    *,
    validation_jsonl: str | Path | None = None,
    epochs: int | None = None,
    validate: bool = True,
) -> Preflight:
    """Check the files with the dataset builder's validator and estimate the training cost.

    Tokens are estimated by the builder's `TokenCounter` without a tokenizer: characters / 4 of
    each example's JSON (messages and tools). OpenAI counts with its own tokenizer and bills
    `trained_tokens` (tokens per epoch x epochs), which the job reports when it finishes. Only the
    training file is priced. With `validate=False` the validator is skipped and tokens are still
    estimated the same way.
    """
    from distillery.dataset.stats import CHARS_PER_TOKEN, TokenCounter
    from distillery.dataset.validate import validate_openai_jsonl
    from distillery.pricing import training_price_per_mtok

    counter = TokenCounter()
    paths = [Path(train_jsonl)] + ([Path(validation_jsonl)] if validation_jsonl else [])
    reports = []
    for position, path in enumerate(paths):
        # OpenAI asks for at least 10 training examples; a validation file may be smaller.
        report = validate_openai_jsonl(path, counter=counter, min_examples=10 if position == 0 else 1)
        if validate and not report.ok:
            lines = report.lines()
            more = f" (and {len(lines) - 1} more; see `distillery build validate {path}`)" if len(lines) > 1 else ""
            raise ConfigError(lines[0] + more)
        reports.append(report)
    train = reports[0]
    chosen = epochs or auto_epochs(train.examples)
    return Preflight(
        examples=train.examples,
        training_tokens=sum(train.token_counts),
        epochs=chosen,
        epochs_estimated=epochs is None,
        price_per_mtok=training_price_per_mtok(model),
        # Not counter.method: that one points at a --tokenizer option this path does not have.
        token_method=f"estimated as characters / {CHARS_PER_TOKEN} of each example's JSON",
        validated=validate,
    )


# --- one call ------------------------------------------------------------------------------------


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
