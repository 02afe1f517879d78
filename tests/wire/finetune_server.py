"""A local server speaking the OpenAI Files and Fine-tuning Jobs wire format, for tests of real SDK clients.

    with ScriptedFineTuningServer() as server:
        server.script_next_job(JobScript(statuses=["validating_files", "queued", "running", "succeeded"]))
        client = openai.OpenAI(api_key="test", base_url=server.base_url)
        file = client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file.id)
        client.fine_tuning.jobs.retrieve(job.id).status   # one step along the script per poll
        server.uploads[0].content, server.jobs[job.id].request

Endpoints, with bodies shaped as https://platform.openai.com/docs/api-reference/fine-tuning and
/files document them (`file`, `fine_tuning.job`, `fine_tuning.job.event`, `list` pages, the
`{"error": {message, type, param, code}}` envelope):

    POST /v1/files                          multipart: `file`, `purpose`
    GET  /v1/files/{id}
    POST /v1/fine_tuning/jobs               checks the files exist and have purpose fine-tune
    GET  /v1/fine_tuning/jobs/{id}          each call moves the job one step along its script
    GET  /v1/fine_tuning/jobs/{id}/events   newest first, `after` and `limit` paginate
    POST /v1/fine_tuning/jobs/{id}/cancel
    POST /v1/chat/completions               answers for a model a succeeded job produced, 404 otherwise

A job's life is a `JobScript`: the statuses successive polls report (an entry may instead be an
HTTP error reply, to test that a poller rides out a 500), then the final state it stays in. Events
are emitted as the real API words them when the job enters each status, and `metrics` events with
`step`/`total_steps`/`train_loss` while it runs. Anything queued with `enqueue` (the base class's
queue) is served first, whatever the endpoint, so a test can still inject one-off replies.

Uploads are parsed from the multipart body with the standard library's MIME parser (no
python-multipart dependency); their exact bytes are in `server.uploads`, and the recorded request's
`json` is a summary `{"purpose", "filename", "bytes"}`.
"""

from __future__ import annotations

import contextvars
import email.parser
import email.policy
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from tests.wire.openai_server import chat_completion, choice, error_body
from tests.wire.scripted_server import RecordedRequest, Reply, ScriptedServer

ORGANIZATION = "org-scripted"
ORG_SLUG = "scripted-org"
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Upload:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def file_object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass
class JobScript:
    """What a job does over successive `GET /v1/fine_tuning/jobs/{id}` calls.

    `statuses[i]` is what poll i reports (creation itself reports `validating_files`); after the
    last entry the job stays where it ended. An entry may be an error reply `(status, body,
    headers)` (see `openai_server.error_body`), answered instead of the job for that one poll.
    A script ending in `failed` sets `error`; one ending in `succeeded` names the model.
    """

    statuses: list[Any] = field(default_factory=lambda: ["validating_files", "queued", "running", "running", "succeeded"])
    error: dict[str, Any] | None = None  # {"code", "message", "param"} for a failed job
    total_steps: int = 30
    trained_tokens: int = 12_345
    model_id: str | None = None  # the last part of `ft:...:<id>`; random when None


@dataclass
class Job:
    body: dict[str, Any]
    request: dict[str, Any]
    script: JobScript
    events: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0


# The parsed upload of the request being handled, from `handle` to the responder (same task).
_current_upload: contextvars.ContextVar[Upload | None] = contextvars.ContextVar("upload", default=None)


class ScriptedFineTuningServer(ScriptedServer):
    def __init__(self, *, expected_api_key: str | None = None):
        self.expected_api_key = expected_api_key  # when set, other keys get 401 as the real API gives
        self.uploads: list[Upload] = []
        self.jobs: dict[str, Job] = {}
        self.scripts: list[JobScript] = []
        self._event_ids = itertools.count(1)
        super().__init__(responder=self.respond)

    def add_routes(self, app: FastAPI) -> None:
        app.add_api_route("/v1/files", self.handle, methods=["POST"])
        app.add_api_route("/v1/files/{file_id}", self.handle, methods=["GET"])
        app.add_api_route("/v1/fine_tuning/jobs", self.handle, methods=["POST"])
        app.add_api_route("/v1/fine_tuning/jobs/{job_id}", self.handle, methods=["GET"])
        app.add_api_route("/v1/fine_tuning/jobs/{job_id}/events", self.handle, methods=["GET"])
        app.add_api_route("/v1/fine_tuning/jobs/{job_id}/cancel", self.handle, methods=["POST"])
        app.add_api_route("/v1/chat/completions", self.handle, methods=["POST"])

    def not_found_body(self, message: str) -> dict:
        return error_body(400, message)[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script_next_job(self, *scripts: JobScript) -> None:
        """The scripts the next created jobs follow, in order (the default script when none is left)."""
        self.scripts.extend(scripts)

    def requests_to(self, method: str, prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # --- wire -----------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        upload = None
        if request.method == "POST" and request.url.path == "/v1/files":
            upload = parse_upload(request.headers.get("content-type", ""), await request.body())
            if upload is not None:
                # The base class records the body as JSON; a multipart body (maybe not UTF-8) is
                # neither, so it records this summary instead (Starlette caches the body it read).
                summary = {"purpose": upload.purpose, "filename": upload.filename, "bytes": len(upload.content)}
                request._body = json.dumps(summary).encode()
        token = _current_upload.set(upload)
        try:
            return await super().handle(request)
        finally:
            _current_upload.reset(token)

    def respond(self, request: RecordedRequest) -> Reply:
        if self.expected_api_key is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            if given != self.expected_api_key:
                # The real API echoes the key with its middle masked; this echoes it whole, the
                # worst case for tests that no key reaches output or logs.
                return error(401, f"Incorrect API key provided: {given}.", code="invalid_api_key")
        parts = request.path.strip("/").split("/")[1:]  # without "v1"
        if parts == ["files"]:
            return self.create_file()
        if parts[0] == "files":
            upload = next((u for u in self.uploads if u.id == parts[1]), None)
            return upload.file_object() if upload else error(404, f"No such File object: {parts[1]}", param="id")
        if parts == ["chat", "completions"]:
            return self.chat(request)
        if parts == ["fine_tuning", "jobs"]:
            return self.create_job(request.json or {})
        job = self.jobs.get(parts[2])
        if job is None:
            return error(404, f"Could not find fine-tune: {parts[2]}", param="fine_tuning_job_id")
        if len(parts) == 3:
            return self.poll(job)
        if parts[3] == "events":
            return self.list_events(job, request.query)
        return self.cancel(job)

    def create_file(self) -> Reply:
        upload = _current_upload.get()
        if upload is None:
            return error(400, "Expected a multipart body with 'file' and 'purpose'", param="file")
        if not upload.purpose:
            return error(400, "Missing required parameter: 'purpose'.", param="purpose")
        self.uploads.append(upload)
        return upload.file_object()

    def create_job(self, body: dict[str, Any]) -> Reply:
        for key in ("model", "training_file"):
            if not body.get(key):
                return error(400, f"Missing required parameter: '{key}'.", param=key)
        for key in ("training_file", "validation_file"):
            file_id = body.get(key)
            if file_id is None:
                continue
            upload = next((u for u in self.uploads if u.id == file_id), None)
            if upload is None:
                return error(400, f"invalid {key}: {file_id}", param=key, code="invalid_file")
            if upload.purpose != "fine-tune":
                return error(400, f"File {file_id} has purpose {upload.purpose!r}, expected 'fine-tune'", param=key)
        suffix = body.get("suffix")
        if suffix is not None and len(suffix) > 64:
            return error(400, "suffix must be at most 64 characters", param="suffix")
        if "hyperparameters" in body and "method" in body:
            return error(400, "Specify hyperparameters under 'method' only", param="hyperparameters")
        hyper = body.get("hyperparameters") or ((body.get("method") or {}).get("supervised") or {}).get("hyperparameters") or {}
        resolved = {
            "n_epochs": hyper.get("n_epochs", "auto"),
            "batch_size": hyper.get("batch_size", "auto"),
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
        }
        script = self.scripts.pop(0) if self.scripts else JobScript()
        job_id = "ftjob-" + uuid.uuid4().hex[:24]
        job_body = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": body["model"],
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": ORGANIZATION,
            "result_files": [],
            "status": "validating_files",
            "validation_file": body.get("validation_file"),
            "training_file": body["training_file"],
            "hyperparameters": resolved,
            "method": {"type": "supervised", "supervised": {"hyperparameters": resolved}},
            "trained_tokens": None,
            "error": None,
            "seed": body.get("seed") if body.get("seed") is not None else 1234,
            "estimated_finish": None,
            "integrations": [],
            "metadata": body.get("metadata"),
            "user_provided_suffix": suffix,
        }
        job = self.jobs[job_id] = Job(body=job_body, request=body, script=script)
        self.emit(job, f"Created fine-tuning job: {job_id}")
        self.emit(job, f"Validating training file: {body['training_file']}")
        return dict(job_body)

    def poll(self, job: Job) -> Reply:
        if job.body["status"] not in TERMINAL and job.polls < len(job.script.statuses):
            step = job.script.statuses[job.polls]
            job.polls += 1
            if isinstance(step, tuple):
                return step
            self.enter(job, step)
        return dict(job.body)

    def enter(self, job: Job, status: str) -> None:
        """Move the job to `status`, with the events the real API emits on the way."""
        previous, body, script = job.body["status"], job.body, job.script
        body["status"] = status
        if status == "queued" and previous != "queued":
            self.emit(job, "Files validated, moving job to queued state")
        elif status == "running":
            if previous != "running":
                self.emit(job, "Fine-tuning job started")
            # Steps advance evenly over the script's running polls, reaching total_steps at the last.
            running_polls = sum(1 for s in script.statuses if s == "running")
            done = sum(1 for s in script.statuses[: job.polls] if s == "running")
            step = script.total_steps * done // running_polls
            loss = round(2.0 / (1 + step), 4)
            self.emit(
                job,
                f"Step {step}/{script.total_steps}: training loss={loss}",
                type="metrics",
                data={"step": step, "total_steps": script.total_steps, "train_loss": loss, "train_mean_token_accuracy": 0.5},
            )
        elif status == "succeeded":
            suffix = body.get("user_provided_suffix") or ""
            model_id = script.model_id or uuid.uuid4().hex[:8]
            body["fine_tuned_model"] = f"ft:{body['model']}:{ORG_SLUG}:{suffix}:{model_id}"
            body["trained_tokens"] = script.trained_tokens
            body["finished_at"] = int(time.time())
            body["result_files"] = ["file-results" + uuid.uuid4().hex[:12]]
            self.emit(job, f"New fine-tuned model created: {body['fine_tuned_model']}")
            self.emit(job, "The job has successfully completed")
        elif status == "failed":
            body["error"] = script.error or {"code": "server_error", "message": "Internal error", "param": None}
            body["finished_at"] = int(time.time())
            self.emit(job, f"Job failed: {body['error']['message']}", level="error")
        elif status == "cancelled":
            body["finished_at"] = int(time.time())
            self.emit(job, "Fine-tuning job cancelled")

    def cancel(self, job: Job) -> Reply:
        if job.body["status"] in TERMINAL:
            return error(400, f"Job has already completed: {job.body['id']}", param="fine_tuning_job_id")
        self.enter(job, "cancelled")
        return dict(job.body)

    def emit(self, job: Job, message: str, *, level: str = "info", type: str = "message", data: Any = None) -> None:
        job.events.append(
            {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{next(self._event_ids):06d}",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "data": data if data is not None else {},
                "type": type,
            }
        )

    def list_events(self, job: Job, query: dict[str, str]) -> Reply:
        newest_first = list(reversed(job.events))
        after = query.get("after")
        if after:
            ids = [e["id"] for e in newest_first]
            if after not in ids:
                return error(400, f"invalid 'after': {after}", param="after")
            newest_first = newest_first[ids.index(after) + 1 :]
        limit = int(query.get("limit") or 20)
        return {"object": "list", "data": newest_first[:limit], "has_more": len(newest_first) > limit}

    def chat(self, request: RecordedRequest) -> Reply:
        model = (request.json or {}).get("model")
        made = {j.body["fine_tuned_model"] for j in self.jobs.values() if j.body["fine_tuned_model"]}
        if model not in made:
            return error(404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found")
        return chat_completion([choice(f"answer from {model}")], model=model)


def error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> tuple:
    status, body, headers = error_body(status, message, code=code)
    body["error"]["param"] = param
    return status, body, headers


def parse_upload(content_type: str, raw: bytes) -> Upload | None:
    """The `file` and `purpose` parts of a multipart/form-data body, or None when it is not one."""
    if not content_type.startswith("multipart/form-data"):
        return None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        return None
    fields: dict[str, Any] = {}
    filename = ""
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True) or b""
        if name == "file":
            filename = part.get_filename() or "upload"
            fields["file"] = content
        elif name:
            fields[name] = content.decode("utf-8")
    if "file" not in fields:
        return None
    return Upload(
        id="file-" + uuid.uuid4().hex[:24],
        filename=filename,
        purpose=fields.get("purpose", ""),
        content=fields["file"],
        created_at=int(time.time()),
    )
