"""Hosted fine-tuning against a local server speaking the OpenAI Files and Fine-tuning Jobs wire format.

The official `openai` SDK is the client throughout (never mocked); `tests.wire.finetune_server`
plays the API, so every test sees the real requests: multipart uploads, job bodies, polls.
"""

from __future__ import annotations

import io
import json
import logging
import math
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from distillery.cli import app
from distillery.distill.hosted import (
    FineTuneCancelled,
    FineTuneFailed,
    FineTuneProvider,
    FineTuneTimeout,
    OpenAIFineTuning,
    auto_epochs,
    finetune,
    preflight,
    wait_for_job,
)
from distillery.errors import ConfigError, MissingAPIKeyError, ModelError
from distillery.models import load_model
from distillery.models.openai import OpenAIModel
from distillery.pricing import training_price_per_mtok
from distillery.trajectory import Message
from tests.wire.finetune_server import JobScript, ScriptedFineTuningServer
from tests.wire.openai_server import error_body

API_KEY = "sk-test-hosted-3f9a1c77e2b04d5e"
BASE = "gpt-4o-mini-2024-07-18"
FAST = {"poll_interval_s": 0.01, "timeout_s": 30.0}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Look up an order by id.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
        },
    }
]


def example(i: int) -> dict:
    call = {"id": f"call_{i}", "type": "function", "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": i})}}
    return {
        "messages": [
            {"role": "system", "content": "You are a support agent."},
            {"role": "user", "content": f"Where is order {i}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": "shipped"},
            {"role": "assistant", "content": f"Order {i} has shipped."},
        ],
        "tools": TOOLS,
    }


def write_jsonl(path, records) -> bytes:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(data)
    return data


@pytest.fixture
def server():
    with ScriptedFineTuningServer(expected_api_key=API_KEY) as s:
        yield s


@pytest.fixture
def files(tmp_path):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    return train, write_jsonl(train, [example(i) for i in range(12)]), val, write_jsonl(val, [example(i) for i in range(100, 103)])


def quiet_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, force_terminal=False), buffer


def provider(server, **options) -> OpenAIFineTuning:
    return OpenAIFineTuning(api_key=API_KEY, base_url=server.base_url, max_retries=0, **{**FAST, **options})


# --- the success path ---------------------------------------------------------------------------


def test_finetune_end_to_end_returns_a_student_that_loads_and_answers(server, files):
    train, train_bytes, val, val_bytes = files
    console, out = quiet_console()
    uri = finetune(
        train,
        f"openai:{BASE}",
        validation_jsonl=val,
        suffix="support",
        epochs=3,
        batch_size=4,
        learning_rate_multiplier=0.5,
        seed=7,
        console=console,
        api_key=API_KEY,
        base_url=server.base_url,
        max_retries=0,
        **FAST,
    )

    # Both files went up as multipart with purpose fine-tune, byte for byte.
    assert [(u.filename, u.purpose, u.content) for u in server.uploads] == [
        ("train.jsonl", "fine-tune", train_bytes),
        ("val.jsonl", "fine-tune", val_bytes),
    ]
    # One job, created with the supervised method's hyperparameters, suffix and seed.
    (job,) = server.jobs.values()
    assert job.request == {
        "model": BASE,
        "training_file": server.uploads[0].id,
        "validation_file": server.uploads[1].id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5}}},
        "suffix": "support",
        "seed": 7,
    }
    fine_tuned = job.body["fine_tuned_model"]
    assert fine_tuned.startswith(f"ft:{BASE}:scripted-org:support:")
    assert uri == "openai:" + fine_tuned
    # It polled until the script's end (creation + 5 polls), and showed each event exactly once.
    assert len(server.requests_to("GET", f"/v1/fine_tuning/jobs/{job.body['id']}")) >= 5
    shown = out.getvalue()
    for event in job.events:
        assert shown.count(event["message"]) == 1, event["message"]
    assert "12,345 trained tokens" in shown

    # The URI is a student: load_model gives an OpenAIModel on the same endpoint, and it answers.
    student = load_model(uri, api_key=API_KEY, base_url=server.base_url)
    assert isinstance(student, OpenAIModel)
    assert (student.name, student.base_url) == (fine_tuned, server.base_url)
    (turn,) = student.generate([Message(role="user", content="Where is order 3?")])
    assert turn.text == f"answer from {fine_tuned}" and turn.model == uri
    assert server.requests_to("POST", "/v1/chat/completions")[0].json["model"] == fine_tuned


def test_step_by_step_api_and_legacy_hyperparameters(server, files):
    train, _, _, _ = files
    with provider(server, hyperparameters_style="legacy") as ft:
        assert isinstance(ft, FineTuneProvider)
        file_id = ft.upload(train)
        job = ft.create_job(file_id, BASE, epochs=2)
        assert job.status == "validating_files" and not job.done
        done = ft.wait(job.id, progress=False)
        assert done.status == "succeeded" and done.trained_tokens == 12_345
        assert ft.load_student(ft.student_uri(done)).base_url == server.base_url
    request = server.jobs[job.id].request
    assert request["hyperparameters"] == {"n_epochs": 2} and "method" not in request and "suffix" not in request


def test_events_page_backwards_until_the_last_seen_event(server, files):
    train, _, _, _ = files
    server.script_next_job(JobScript(statuses=["queued"] + ["running"] * 6 + ["succeeded"]))
    with provider(server) as ft:
        job = ft.create_job(ft.upload(train), BASE)
        for _ in range(8):
            ft.retrieve(job.id)
        every = [e["id"] for e in server.jobs[job.id].events]
        assert len(every) > 6
        newer = ft.events(job.id, since=every[1], page_size=2)  # several pages of 2
        assert [e.id for e in newer] == every[2:]
        assert ft.events(job.id, since=every[-1]) == []
        metrics = [e for e in newer if e.type == "metrics"]
        assert metrics[-1].data["step"] == metrics[-1].data["total_steps"] == 30


def test_a_failed_poll_is_retried_not_fatal(server, files, caplog):
    train, _, _, _ = files
    server.script_next_job(JobScript(statuses=["queued", error_body(500, "The server had an error"), "running", "succeeded"]))
    with provider(server) as ft:
        job = ft.create_job(ft.upload(train), BASE)
        with caplog.at_level(logging.WARNING, logger="distillery.hosted"):
            assert ft.wait(job.id, progress=False).status == "succeeded"
    assert any("HTTP 500" in r.getMessage() and job.id in r.getMessage() for r in caplog.records)


# --- failures -----------------------------------------------------------------------------------


def test_failed_job_raises_one_line_with_job_id_code_and_message(server, files):
    train, _, _, _ = files
    error = {"code": "invalid_training_file", "message": "Line 4: too many tokens", "param": "training_file"}
    server.script_next_job(JobScript(statuses=["validating_files", "failed"], error=error))
    console, _ = quiet_console()
    with pytest.raises(FineTuneFailed) as info:
        finetune(train, BASE, console=console, api_key=API_KEY, base_url=server.base_url, **FAST)
    (job_id,) = server.jobs
    message = str(info.value)
    assert message == f"fine-tuning job {job_id} failed: invalid_training_file: Line 4: too many tokens (param training_file)"
    assert isinstance(info.value, ModelError) and info.value.code == "invalid_training_file"


def test_cancelled_job_raises_a_clear_error(server, files):
    train, _, _, _ = files
    server.script_next_job(JobScript(statuses=["queued", "running", "cancelled"]))
    with provider(server) as ft:
        job = ft.create_job(ft.upload(train), BASE)
        with pytest.raises(FineTuneCancelled, match=f"job {job.id} was cancelled; it produced no model"):
            ft.wait(job.id, progress=False)


def test_cancel_stops_a_running_job(server, files):
    train, _, _, _ = files
    server.script_next_job(JobScript(statuses=["queued", "running"]))  # would run forever
    with provider(server) as ft:
        job = ft.create_job(ft.upload(train), BASE)
        ft.retrieve(job.id)
        assert ft.cancel(job.id).status == "cancelled"
        with pytest.raises(FineTuneCancelled):
            ft.wait(job.id, progress=False)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_poll_timeout_names_the_still_running_job_and_resume_finishes_it(server, files):
    train, _, _, _ = files
    server.script_next_job(JobScript(statuses=["queued", "running", "running", "running", "running", "succeeded"]))
    clock = FakeClock()
    with provider(server) as ft:
        job = ft.create_job(ft.upload(train), BASE)
        with pytest.raises(FineTuneTimeout) as info:
            wait_for_job(ft, job.id, progress=False, poll_interval_s=60, timeout_s=120, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.now == 120  # waited exactly the timeout, polling every 60 s
    assert str(info.value).startswith(f"fine-tuning job {job.id} is still running after waiting 120 s")
    assert f"distillery finetune --resume {job.id}" in str(info.value)
    assert server.jobs[job.id].body["status"] == "running"  # we stopped waiting; the job did not stop

    result = CliRunner().invoke(
        app,
        ["finetune", "--resume", job.id, "--base-url", server.base_url, "--poll-interval", "0.01", "--no-progress"],
        env={"OPENAI_API_KEY": API_KEY},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "openai:" + server.jobs[job.id].body["fine_tuned_model"]
    assert "The job has successfully completed" in result.stderr  # --no-progress still prints events

    missing = CliRunner().invoke(app, ["finetune", "--resume", "ftjob-nope", "--base-url", server.base_url], env={"OPENAI_API_KEY": API_KEY})
    assert isinstance(missing.exception, ModelError)
    message = str(missing.exception)
    assert message.startswith("openai fine-tuning: job ftjob-nope: HTTP 404: ") and "Could not find fine-tune: ftjob-nope" in message


def test_timeout_when_no_poll_gets_through():
    with OpenAIFineTuning(api_key=API_KEY, base_url="http://127.0.0.1:9/v1", max_retries=0) as ft:  # nothing listens
        clock = FakeClock()
        with pytest.raises(FineTuneTimeout, match="job ftjob-x could not be polled .* after waiting 30 s"):
            wait_for_job(ft, "ftjob-x", progress=False, poll_interval_s=10, timeout_s=30, sleep=clock.sleep, clock=lambda: clock.now)


# --- before upload: validation, cost, keys -------------------------------------------------------


def test_invalid_file_is_refused_before_upload(server, tmp_path):
    bad = tmp_path / "bad.jsonl"
    records = [example(i) for i in range(12)]
    records[3]["messages"][2]["tool_calls"][0]["function"]["arguments"] = {"order_id": 3}  # object, not a string
    write_jsonl(bad, records)
    console, _ = quiet_console()
    with pytest.raises(ConfigError, match=r"bad.jsonl:4: messages\[2\]\.tool_calls\[0\]\.function\.arguments: must be a JSON string"):
        finetune(bad, BASE, console=console, api_key=API_KEY, base_url=server.base_url, **FAST)
    assert server.requests == []


def test_cost_estimate_and_max_cost_guard(server, files):
    train, _, _, _ = files
    plan = preflight(train, BASE, epochs=2)
    # Estimated like the dataset builder: characters / 4 of each example's {messages, tools} JSON.
    expected = sum(math.ceil(len(json.dumps(example(i), ensure_ascii=False)) / 4) for i in range(12))
    assert (plan.examples, plan.training_tokens, plan.epochs) == (12, expected, 2)
    assert plan.cost_usd == pytest.approx(expected * 2 * training_price_per_mtok(BASE) / 1e6)
    # "auto": the cookbook heuristic raises epochs for a small file so it sees ~100 examples.
    assert preflight(train, BASE).epochs == auto_epochs(12) == 9
    assert (auto_epochs(100), auto_epochs(20_000)) == (3, 1)

    console, out = quiet_console()
    with pytest.raises(ConfigError, match=r"--max-cost: estimated \$0\.\d\d is over the \$0\.01 limit; nothing was uploaded"):
        finetune(train, BASE, epochs=25, max_cost_usd=0.01, console=console, api_key=API_KEY, base_url=server.base_url, **FAST)
    assert server.requests == []
    assert "12 examples" in out.getvalue()


def test_bad_hyperparameters_are_refused_before_upload(server, files):
    train, _, _, _ = files
    console, _ = quiet_console()
    with pytest.raises(ConfigError, match="--suffix: must be 1 to 64 characters"):
        finetune(train, BASE, suffix="x" * 65, console=console, api_key=API_KEY, base_url=server.base_url, **FAST)
    with pytest.raises(ConfigError, match="--epochs: must be at least 1"):
        finetune(train, BASE, epochs=0, console=console, api_key=API_KEY, base_url=server.base_url, **FAST)
    assert server.requests == []


def test_missing_key_names_the_env_var_unless_the_endpoint_is_custom(monkeypatch, files):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        OpenAIFineTuning()
    OpenAIFineTuning(base_url="http://127.0.0.1:9/v1")  # a compatible service may need no key

    train, _, _, _ = files
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", "--data", str(train)])
    assert isinstance(result.exception, MissingAPIKeyError)
    dry = runner.invoke(app, ["finetune", "--data", str(train), "--dry-run", "--epochs", "3"])  # no key needed
    assert dry.exit_code == 0 and "12 examples" in dry.stderr and "nothing was uploaded" in dry.stderr


def test_key_never_reaches_output_or_logs(server, files, caplog):
    train, _, val, _ = files
    with caplog.at_level(logging.DEBUG):  # every logger, the SDK's debug request logs included
        result = CliRunner().invoke(
            app,
            ["finetune", "--data", str(train), "--validation", str(val), "--suffix", "s1", "--base-url", server.base_url, "--poll-interval", "0.01"],
            env={"OPENAI_API_KEY": API_KEY, "OPENAI_LOG": "debug"},
        )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith(f"openai:ft:{BASE}:scripted-org:s1:")
    assert server.requests and all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in server.requests)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    # The logs were captured, the SDK's own request logs among them, and still hold no key.
    assert "uploaded" in logged and any(r.name.startswith("openai") for r in caplog.records)
    assert API_KEY not in result.stdout + result.stderr + logged


def test_cli_failure_is_one_line_without_traceback_or_key(files):
    """Through the real entry point: a rejected key, as the API echoes it back, never printed."""
    train, _, _, _ = files
    with ScriptedFineTuningServer(expected_api_key="sk-the-right-one") as server:
        proc = subprocess.run(
            [sys.executable, "-m", "distillery.cli", "finetune", "--data", str(train), "--base-url", server.base_url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**_env(), "OPENAI_API_KEY": API_KEY},
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and API_KEY not in proc.stdout + proc.stderr
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert "HTTP 401" in line and "upload train.jsonl" in line


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}


def test_student_without_a_price_is_flagged_and_a_priced_one_costs_money(server, files, tmp_path, monkeypatch):
    train, _, _, _ = files
    monkeypatch.delenv("DISTILLERY_PRICES", raising=False)
    console, out = quiet_console()
    uri = finetune(train, BASE, console=console, api_key=API_KEY, base_url=server.base_url, **FAST)
    assert f'add [openai."ft:{BASE}"]' in out.getvalue()

    from distillery.pricing import DEFAULT_PRICES

    prices = tmp_path / "prices.toml"
    prices.write_text(DEFAULT_PRICES.read_text() + f'\n[openai."ft:{BASE}"]\ninput = 0.30\noutput = 1.20\n')
    monkeypatch.setenv("DISTILLERY_PRICES", str(prices))
    console, out = quiet_console()
    finetune(train, BASE, console=console, api_key=API_KEY, base_url=server.base_url, **FAST)
    assert "note:" not in out.getvalue()
    (turn,) = load_model(uri, api_key=API_KEY, base_url=server.base_url).generate([Message(role="user", content="hi")])
    assert turn.cost_usd == pytest.approx((10 * 0.30 + 5 * 1.20) / 1e6)  # the scripted usage: 10 in, 5 out
