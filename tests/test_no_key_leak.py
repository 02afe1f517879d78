"""API keys never reach the store, the logs or exported datasets.

Unique fake keys are planted in ANTHROPIC_API_KEY / OPENAI_API_KEY. The `distillery collect` CLI
runs in a subprocess with DEBUG logging to a file, against a local OpenAI-compatible server (the
real `openai` SDK on the wire) that also answers one task with a 401 whose message echoes the
key, and rate-limits another once. Then every byte the run left behind is searched for the keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip("distillery.models.openai")
wire = pytest.importorskip("tests.wire.openai_server")

REPO = Path(__file__).resolve().parents[1]


def responder(request):
    """Tool call first, then a final answer; task "leaky" gets a 401 echoing the bearer token."""
    messages = request.json["messages"]
    user = wire.last_user_text(request)
    if "leaky" in user:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return wire.error_body(401, f"Incorrect API key provided: {token}. You can find your API key at ...")
    if messages[-1]["role"] == "tool":
        return wire.chat_completion([wire.choice(f"The sum is {messages[-1]['content']}.")], usage_=wire.usage(40, 8))
    call = wire.function_tool_call("add", {"a": 2, "b": 3})
    return wire.chat_completion([wire.choice(None, tool_calls=[call])], usage_=wire.usage(30, 12))


@pytest.mark.timeout(180)
def test_planted_keys_appear_nowhere(tmp_path):
    openai_key = f"sk-proj-LEAKCHECK{uuid.uuid4().hex}"
    anthropic_key = f"sk-ant-api03-LEAKCHECK{uuid.uuid4().hex}"
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "\n".join(
            json.dumps({"id": f"t{i}", "query": q, "expected": 5, "checker": "numeric"})
            for i, q in enumerate(["add 2 and 3", "please add 2 and 3", "leaky question", "rate limited: add 2 and 3"])
        )
    )
    db, log_file, export = tmp_path / "store.db", tmp_path / "collect.log", tmp_path / "export.jsonl"
    env = {
        **os.environ,
        "OPENAI_API_KEY": openai_key,
        "ANTHROPIC_API_KEY": anthropic_key,
        "DISTILLERY_LOG_LEVEL": "DEBUG",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]),
    }
    env.pop("OPENAI_BASE_URL", None)

    with wire.ScriptedOpenAIServer(responder) as server:
        # The first "rate limited" request gets a 429 with retry-after; the retry succeeds.
        def maybe_rate_limit(request):
            if "rate limited" in wire.last_user_text(request) and not getattr(maybe_rate_limit, "done", False):
                maybe_rate_limit.done = True
                return wire.error_body(429, "Rate limit reached", {"retry-after": "0"})
            return responder(request)

        server.responder = maybe_rate_limit
        collect = subprocess.run(
            [sys.executable, "-m", "distillery.cli", "collect", "--teacher", "openai:gpt-4o",
             "--base-url", server.base_url, "--queries", str(queries), "--store", str(db),
             "--tools", "tests.test_collect:TOOL_LIST", "--log-file", str(log_file), "--no-progress",
             "--concurrency", "2", "--max-retries", "2"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=150,
        )
        assert collect.returncode == 0, collect.stderr
        # The key really was in use: the SDK sent it to the server.
        assert any(r.headers.get("authorization") == f"Bearer {openai_key}" for r in server.requests)

    exported = subprocess.run(
        [sys.executable, "-m", "distillery.cli", "store", "export", str(export), "--store", str(db)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )
    assert exported.returncode == 0, exported.stderr

    # The run did what it should, so the search below covers real content.
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(lines) == 4
    by_id = {t["task_id"]: t for t in lines}
    assert by_id["t2"]["status"] == "error" and "Incorrect API key provided" in by_id["t2"]["error"]
    assert by_id["t3"]["status"] == "ok" and by_id["t0"]["outcome"]["success"] is True
    log_text = log_file.read_text()
    assert "DEBUG" in log_text and "retrying" in log_text

    files = [p for p in tmp_path.iterdir() if p.is_file() and p != queries]
    assert {db, log_file, export} <= set(files)
    for path in files:  # store.db, its -wal/-shm, the log, the export
        data = path.read_bytes()
        for key in (openai_key, anthropic_key):
            assert key.encode() not in data, f"{key[:12]}... leaked into {path.name}"
            assert key[-16:].encode() not in data, f"a fragment of {key[:12]}... leaked into {path.name}"
    for stream in (collect.stdout, collect.stderr, exported.stdout, exported.stderr):
        assert openai_key not in stream and anthropic_key not in stream
