"""OpenAI's Files + Fine-tuning Jobs API as a `FineTuneProvider`, for OpenAI or any service speaking it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery.distill.hosted_jobs import FineTuneEvent, FineTuneJob, JobError, log, wait_for_job
from distillery.distill.hosted_preflight import check_hyperparameters
from distillery.errors import ConfigError


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
        from distillery.models.openai import resolve_endpoint

        self.base_url, self.official, self._api_key = resolve_endpoint(base_url, api_key, service="openai fine-tuning")
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
