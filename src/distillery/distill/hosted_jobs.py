"""Hosted fine-tuning jobs, provider-neutral: the job and event types, the provider protocol, waiting.

A `FineTuneProvider` (see `hosted_openai.py`) reports jobs and events in these types; `wait_for_job`
polls any provider until its job ends and prints the events as they come.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from distillery.errors import DistilleryError, ModelError, TransientModelError

# One logger for every hosted fine-tuning module, so its name stays the one users filter on.
log = logging.getLogger("distillery.hosted")

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


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
