"""examples/seed_pipeline.py runs as a user runs it: offline on the world models, and with Claude's wire format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distillery.world.models import TEACHER_DIR
from tests.wire.anthropic_server import ScriptedAnthropicServer, last_user_text, message, text_block

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seed_pipeline.py"


def run_example(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def without_keys() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}


def query_list() -> list[str]:
    namespace: dict = {}
    source = EXAMPLE.read_text()
    start = source.index("QUERIES = [")
    exec(source[start: source.index("]\n", start) + 2], namespace)  # the literal list, without running the script
    return namespace["QUERIES"]


@pytest.mark.skipif(not (TEACHER_DIR / "model.safetensors").is_file(), reason="the bundled world teacher is not in the tree yet")
def test_the_seed_pipeline_runs_offline(tmp_path):
    done = run_example("--offline", "--out", "seed", "--steps", "5", "--n-train", "8", "--n-test", "4",
                       env=without_keys(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    queries = query_list()
    assert len([l for l in lines if l.startswith("teacher ")]) == len(queries)
    assert len([l for l in lines if l.startswith("student ")]) == len(queries)
    rows = [json.loads(line) for line in (tmp_path / "seed" / "train.jsonl").read_text().splitlines()]
    assert rows and all("messages" in row for row in rows)
    # The student was cut out of the teacher, then trained.
    init = json.loads((tmp_path / "seed" / "student-init" / "init.json").read_text())
    assert init["shape"]["layers"] == 2 and init["parameters"]["student"] < init["parameters"]["source"]
    assert (tmp_path / "seed" / "student" / "model.safetensors").is_file()
    # The held-out summary: three tiers, then the random router at the cascade's share.
    summary = lines[next(i for i, l in enumerate(lines) if l.startswith("held-out: 4 world test tasks")):]
    assert [l.split()[0] for l in summary[1:5]] == ["student", "teacher", "student", "random"]
    assert "answered by the student 100.0%" in summary[1] and "answered by the student   0.0%" in summary[2]


def test_with_a_key_the_teacher_is_claude_opus_through_the_anthropic_sdk(tmp_path):
    # A local server speaking the Messages API: the official SDK inside the provider talks to it.
    def reply(request):
        return message([text_block(f"You asked: {last_user_text(request)}")], model=request.json["model"])

    with ScriptedAnthropicServer(responder=reply) as server:
        env = {**without_keys(), "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
               "ANTHROPIC_BASE_URL": server.base_url}
        done = run_example("--out", "seed", "--steps", "2", "--threshold", "1.0", env=env, cwd=tmp_path)
        requests = list(server.requests)
    assert done.returncode == 0, done.stderr[-2000:]
    queries = query_list()
    assert requests and {r.json["model"] for r in requests} == {"claude-opus-4-6"}
    # The key travels in the header this SDK version uses (x-api-key, or Authorization: Bearer).
    assert all("sk-ant-test-not-a-real-key" in (r.headers.get("x-api-key", "") + r.headers.get("authorization", ""))
               for r in requests)
    # Collection asked Claude once per query; threshold 1.0 escalates every student step to Claude again.
    assert len(requests) >= 2 * len(queries)
    assert f"'{queries[0]}': 'You asked: {queries[0]}'" in done.stdout
    assert "sk-ant-test-not-a-real-key" not in (tmp_path / "seed" / "train.jsonl").read_text()
