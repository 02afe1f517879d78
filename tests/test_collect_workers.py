"""`distillery collect --processes N` against a local OpenAI-compatible server: workers die with the
collecting process, a SIGKILL mid-run resumes to exactly one trajectory per query, requests time
out and are retried, and malformed or failed responses are recorded as one readable line.

The server (the real `openai` SDK on the wire) runs in this process and notes when each request
arrives, so the kill tests can show that no request reaches it later than 1 s after the kill.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from distillery.collect import DEFAULT_TIMEOUT_S, TeacherCollector
from distillery.store import SQLiteStore
from tests.test_collect import TOOLS_PATH
from tests.test_collect_crash import stored_rows  # every row is ok here: the server always answers

wire = pytest.importorskip("tests.wire.openai_server")

REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "OPENAI_API_KEY": "sk-test-workers-0123456789",
    "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]),
}
ENV.pop("OPENAI_BASE_URL", None)
TASKS = 48
CHILD_GRACE_S = 1.0  # the bound: no request later than this after the kill


class TimedServer:
    """An OpenAI-compatible server that answers every query after `delay` seconds and notes when each
    request arrived (monotonic clock of this process) and which query it carried."""

    def __init__(self):
        self.delay = 0.0
        self.arrivals: list[tuple[float, str]] = []
        self.server = wire.ScriptedOpenAIServer(self.respond)

    async def respond(self, request):
        query = wire.last_user_text(request)
        self.arrivals.append((time.monotonic(), query))
        await asyncio.sleep(self.delay)
        return wire.chat_completion([wire.choice(f"answer to {query}")], usage_=wire.usage(20, 5))

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc_info):
        self.server.stop()


def collect_command(server: TimedServer, queries: Path, db: Path, processes: int) -> list[str]:
    return [sys.executable, "-m", "distillery.cli", "collect", "--teacher", "openai:gpt-4o",
            "--base-url", server.server.base_url, "--queries", str(queries), "--store", str(db),
            "--tools", TOOLS_PATH, "--no-progress", "--concurrency", "4", "--processes", str(processes),
            "--max-retries", "0"]


def wait_gone(processes: list[psutil.Process], timeout: float) -> float | None:
    """When (monotonic) every process had ended, or None after `timeout` (the survivors are then killed).

    A process counts as ended once it is a zombie: it was re-parented when its parent died, and
    whoever reaps it now (init, a subreaper) may take its time."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for process in processes:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return time.monotonic()
        if time.monotonic() > deadline:
            for process in alive:  # do not leak them into the rest of the suite
                process.kill()
            return None
        time.sleep(0.01)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_of_the_parent_stops_every_request_then_resume_is_exactly_once(tmp_path, processes):
    queries = tmp_path / "queries.txt"
    queries.write_text("".join(f"task {i}\n" for i in range(TASKS)))
    db = tmp_path / "store.db"
    with TimedServer() as server:
        server.delay = 0.15
        parent = subprocess.Popen(collect_command(server, queries, db, processes), env=ENV, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            # Mid-way, with every shard sending: shard k runs the tasks with index % N == k.
            while stored_rows(db) < 8 or {int(q.split()[1]) % processes for _, q in server.arrivals} != set(range(processes)):
                assert parent.poll() is None, f"collect exited early: {parent.communicate()}"
                assert time.monotonic() < deadline, "no progress within 60 s"
                time.sleep(0.02)
            family = psutil.Process(parent.pid).children(recursive=True)  # shard workers, resource tracker
            workers = [p for p in family if "spawn_main" in " ".join(p.cmdline())]
            assert len(workers) == (processes if processes > 1 else 0)
            parent.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            parent.wait(timeout=10)
        finally:
            if parent.poll() is None:
                parent.kill()
        # The workers are gone (the kernel kills them with the parent on Linux; a watchdog elsewhere).
        ended = wait_gone(family, timeout=CHILD_GRACE_S + 1)
        assert ended is not None, f"processes outlived the killed parent: {[p.pid for p in family]}"
        assert ended - killed_at < CHILD_GRACE_S
        time.sleep(0.5)  # anything still on its way would arrive now
        last = max(at for at, _ in server.arrivals)
        assert last <= killed_at + CHILD_GRACE_S, f"a request arrived {last - killed_at:.2f}s after the kill"
        late = [q for at, q in server.arrivals if at > killed_at]
        after_kill = stored_rows(db)
        assert 8 <= after_kill < TASKS, "the kill must land mid-way for this test to mean anything"
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        done_before = {row[0] for row in conn.execute("SELECT json_extract(data, '$.query') FROM trajectories WHERE status = 'ok'")}
        conn.close()

        # Re-run with resume: only the missing runs are requested, and each query ends with one row.
        server.delay = 0.0
        before_rerun = len(server.arrivals)
        rerun = subprocess.run(collect_command(server, queries, db, processes), env=ENV, cwd=tmp_path,
                               capture_output=True, text=True, timeout=90)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        asked_again = [q for _, q in server.arrivals[before_rerun:]]
        assert not set(asked_again) & done_before, "the re-run asked again for runs already stored"
        assert len(asked_again) == len(set(asked_again)) == TASKS - after_kill

    store = SQLiteStore(db)
    assert store.integrity_check() == "ok"
    rows = list(store.iter_trajectories())
    assert Counter(t.query for t in rows) == Counter(f"task {i}" for i in range(TASKS))
    assert all(t.status == "ok" and t.final_answer == f"answer to {t.query}" for t in rows)
    print(f"processes={processes}: {after_kill} stored before the kill, last request {last - killed_at:+.3f}s "
          f"after it, {len(late)} arrived after it")


WATCHED = textwrap.dedent(
    """
    import multiprocessing, os, sys, time

    def child(parent_pid, beat):
        from distillery.collect.shards import _die_with_parent
        _die_with_parent(parent_pid, pdeathsig=False)   # the portable path alone: a thread polling getppid
        while True:
            with open(beat, "w") as handle:
                handle.write(str(time.monotonic()))
            time.sleep(0.02)

    if __name__ == "__main__":
        process = multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(), sys.argv[1]))
        process.start()
        print(process.pid, flush=True)
        time.sleep(120)
    """
)


@pytest.mark.timeout(60)
def test_without_pdeathsig_the_watchdog_thread_still_ends_the_worker(tmp_path):
    script, beat = tmp_path / "watched.py", tmp_path / "beat"
    script.write_text(WATCHED)
    parent = subprocess.Popen([sys.executable, str(script), str(beat)], env=ENV, stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    deadline = time.monotonic() + 30
    while not beat.exists():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    parent.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    parent.wait(timeout=10)
    ended = wait_gone([child], timeout=CHILD_GRACE_S + 1)
    assert ended is not None, "the worker outlived its parent"
    assert ended - killed_at < CHILD_GRACE_S
    assert float(beat.read_text()) < killed_at + CHILD_GRACE_S


# -- timeouts ---------------------------------------------------------------------------------------


class Stall:
    """A reply that answers only when released (or after 10 s): a teacher that stopped responding."""

    def __init__(self):
        self.released = threading.Event()

    async def __call__(self, request):
        await asyncio.to_thread(self.released.wait, 10)
        return wire.chat_completion([wire.choice("too late")])


def test_cli_timeout_default_is_the_collectors():
    from typer.main import get_command

    from distillery.cli import app

    command = get_command(app).commands["collect"]
    timeout = next(p for p in command.params if p.name == "timeout")
    assert timeout.default == DEFAULT_TIMEOUT_S == 120.0


def test_a_stalled_request_times_out_and_is_retried(tmp_path):
    stall = Stall()
    with wire.ScriptedOpenAIServer(wire.echo) as server:
        server.enqueue(stall)  # the first request never answers; the retry does
        collector = TeacherCollector("openai:gpt-4o", store=tmp_path / "s.db", progress=False, timeout_s=0.5,
                                     max_retries=2, backoff_base_s=0.01, model_options={"base_url": server.base_url})
        assert collector.model.timeout_s == 0.5
        started = time.monotonic()
        result = collector.collect(["What is 2+2?"])
        elapsed = time.monotonic() - started
        stall.released.set()
    assert result.ok == 1 and result.retries == 1 and len(server.requests) == 2
    assert 0.5 <= elapsed < 5, elapsed
    assert result.trajectories[0].final_answer == "What is 2+2?"


def test_a_request_that_always_stalls_is_recorded_with_the_timeout(tmp_path, caplog):
    stall = Stall()
    with wire.ScriptedOpenAIServer(stall) as server:
        with caplog.at_level(logging.INFO, logger="distillery"):
            result = TeacherCollector("openai:gpt-4o", store=tmp_path / "s.db", progress=False, timeout_s=0.3,
                                      max_retries=1, backoff_base_s=0.01,
                                      model_options={"base_url": server.base_url}).collect(["hello?"])
        stall.released.set()
    assert result.failed == 1 and len(server.requests) == 2
    error = result.trajectories[0].error
    assert error == "openai:gpt-4o: request timed out (no answer within 0.3 s) (gave up after 1 retries)"
    assert not any(record.exc_info for record in caplog.records)


def test_timeout_is_validated_and_only_given_to_hosted_providers(monkeypatch):
    from distillery import models
    from distillery.errors import ConfigError
    from tests.test_collect import FakeModel

    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="timeout_s must be a positive"):
            TeacherCollector(FakeModel(), timeout_s=bad)
    # Local models (world:, hf:, registered ones) send no request to time out, and their loaders
    # take no timeout_s: they are not given one.
    seen = {}
    monkeypatch.setitem(models._PROVIDERS, "local", lambda name, **options: seen.update(options) or FakeModel())
    TeacherCollector("local:x", timeout_s=5, model_options={"seed": 1})
    assert seen == {"seed": 1}
    hosted = TeacherCollector("openai:gpt-4o", timeout_s=5, model_options={"base_url": "http://127.0.0.1:9/v1"})
    assert hosted.model.timeout_s == 5
    explicit = TeacherCollector("openai:gpt-4o", timeout_s=5, model_options={"base_url": "http://127.0.0.1:9/v1",
                                                                             "timeout_s": 7})
    assert explicit.model.timeout_s == 7


# -- error records ----------------------------------------------------------------------------------


def truncated(request):
    body = json.dumps(wire.chat_completion([wire.choice("an answer that is cut off")]))
    return 200, body[:70], {"content-type": "application/json"}


def html_500(request):
    return 500, "<html><body><h1>502 Bad Gateway</h1>" + "nginx " * 200 + "</body></html>", {"content-type": "text/html"}


def json_500(request):
    return wire.error_body(500, "The server had an error while processing your request.")


@pytest.mark.parametrize(
    "reply, expected",
    [
        (truncated, ['openai:gpt-4o: HTTP 200: malformed response body, not valid JSON (Unterminated string',
                     "body: '{\"id\": \"chatcmpl-"]),
        (html_500, ["openai:gpt-4o: HTTP 500: body: '<html><body><h1>502 Bad Gateway</h1>nginx"]),
        (json_500, ["openai:gpt-4o: HTTP 500: server_error: The server had an error while processing your request.",
                    "(request id req_"]),
    ],
    ids=["truncated-json", "html-500", "json-500"],
)
def test_failed_responses_are_recorded_with_model_status_and_body(tmp_path, caplog, reply, expected):
    with wire.ScriptedOpenAIServer(reply) as server:
        with caplog.at_level(logging.DEBUG, logger="distillery"):
            result = TeacherCollector("openai:gpt-4o", store=tmp_path / "s.db", progress=False, max_retries=1,
                                      backoff_base_s=0.01, model_options={"base_url": server.base_url}
                                      ).collect(["What is 2+2?"])
    assert len(server.requests) == 2  # transient: retried once, then recorded
    error = result.trajectories[0].error
    for fragment in expected:
        assert fragment in error, error
    assert error.endswith("(gave up after 1 retries)") and "\n" not in error and len(error) < 600
    assert "JSONDecodeError" not in error
    # One warning line for the failure, no traceback anywhere.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "failed: openai:gpt-4o: HTTP" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_a_malformed_body_is_reported_on_the_httpx_transport_too(tmp_path):
    with wire.ScriptedOpenAIServer(truncated) as server:
        result = TeacherCollector("openai:gpt-4o", store=tmp_path / "s.db", progress=False, max_retries=0,
                                  model_options={"base_url": server.base_url, "http_transport": "httpx"}
                                  ).collect(["What is 2+2?"])
    error = result.trajectories[0].error
    assert error.startswith("openai:gpt-4o: HTTP 200: malformed response body, not valid JSON"), error
    assert "body: '{\"id\": \"chatcmpl-" in error


def test_a_malformed_anthropic_response_is_one_line_too(tmp_path, monkeypatch):
    anthropic_wire = pytest.importorskip("tests.wire.anthropic_server")

    def cut(request):
        return 200, json.dumps(anthropic_wire.message([anthropic_wire.text_block("hi")]))[:50], {"content-type": "application/json"}

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    with anthropic_wire.ScriptedAnthropicServer(cut) as server:
        result = TeacherCollector("anthropic:claude-haiku-4-5", store=tmp_path / "s.db", progress=False, max_retries=0,
                                  model_options={"base_url": server.base_url}).collect(["hello"])
    error = result.trajectories[0].error
    assert error.startswith("anthropic:claude-haiku-4-5: HTTP 200: malformed response body, not valid JSON"), error
    assert "body: '{" in error


def test_cli_log_file_has_one_line_per_failure_and_no_traceback(tmp_path):
    """Through the CLI, with a log file at INFO: a truncated body, then a 500, then an answer."""
    queries = tmp_path / "queries.txt"
    queries.write_text("first\nsecond\n")
    log_file = tmp_path / "collect.log"
    with wire.ScriptedOpenAIServer(wire.echo) as server:
        server.enqueue(truncated, truncated, html_500, html_500)  # the two tasks fail, each after one retry
        result = subprocess.run(
            [sys.executable, "-m", "distillery.cli", "collect", "--teacher", "openai:gpt-4o", "--base-url",
             server.base_url, "--queries", str(queries), "--store", str(tmp_path / "s.db"), "--tools", TOOLS_PATH,
             "--no-progress", "--concurrency", "1", "--max-retries", "1", "--log-level", "INFO",
             "--log-file", str(log_file), "--timeout", "30"],
            env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1  # every run failed
    text = log_file.read_text()
    assert "Traceback" not in text and "Traceback" not in result.stderr
    failures = [line for line in text.splitlines() if " WARNING " in line and "failed:" in line]
    assert len(failures) == 2, text
    assert any("HTTP 200: malformed response body" in line for line in failures)
    assert any("HTTP 500: body: '<html>" in line for line in failures)
    assert sum("retrying openai:gpt-4o" in line for line in text.splitlines()) == 2
    assert ENV["OPENAI_API_KEY"] not in text + result.stderr + result.stdout
