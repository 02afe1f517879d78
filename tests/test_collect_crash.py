"""A collection killed with SIGKILL mid-way resumes to exactly one trajectory per (task, sample).

The child is a real process (a small script below) collecting 40 tasks x 2 samples with a slow
fake model into a SQLite store. The parent waits until some rows are committed, kills the child
without warning, checks the file is intact, then re-runs to completion.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from distillery.store import SQLiteStore

REPO = Path(__file__).resolve().parents[1]
TASKS, SAMPLES = 40, 2

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from distillery.collect import TeacherCollector
    from distillery.store import SQLiteStore
    from distillery.trajectory import Turn, Usage

    class SlowModel:
        uri = "fake:slow"

        async def agenerate(self, messages, tools=None, **options):
            await asyncio.sleep(float(sys.argv[2]))
            query = messages[-1].content
            return [Turn(text=f"answer to {query}", usage=Usage(input_tokens=3, output_tokens=2), cost_usd=0.001)]

        def generate(self, messages, tools=None, **options):
            return asyncio.run(self.agenerate(messages, tools, **options))

    queries = [f"task {i}" for i in range(int(sys.argv[3]))]
    collector = TeacherCollector(SlowModel(), store=SQLiteStore(sys.argv[1]), n=int(sys.argv[4]),
                                 concurrency=4, progress=False)
    result = collector.collect(queries)
    print(result.ok, result.failed, result.resumed)
    """
)


def run_child(script: Path, db: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        [sys.executable, str(script), str(db), str(delay), str(TASKS), str(SAMPLES)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )


def stored_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM trajectories").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0


@pytest.mark.timeout(120)
def test_sigkill_mid_collection_then_resume(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "store.db"

    child = run_child(script, db, delay=0.1)
    deadline = time.monotonic() + 60
    while stored_rows(db) < 12:
        assert child.poll() is None, f"child exited early: {child.communicate()}"
        assert time.monotonic() < deadline, "child stored nothing within 60 s"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    after_kill = stored_rows(db)
    assert 12 <= after_kill < TASKS * SAMPLES, "the kill must land mid-way for this test to mean anything"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    # Re-run to completion (fast model); it must only do the missing runs.
    rerun = run_child(script, db, delay=0.0)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    ok, failed, resumed = map(int, out.split())
    assert failed == 0
    assert resumed >= after_kill  # everything committed before the kill was kept
    assert ok + resumed == TASKS * SAMPLES

    store = SQLiteStore(db)
    assert store.integrity_check() == "ok"
    keys = Counter((t.task_id, t.sample_index) for t in store.iter_trajectories())
    assert len(keys) == TASKS * SAMPLES and set(keys.values()) == {1}
    assert {t.query for t in store.iter_trajectories()} == {f"task {i}" for i in range(TASKS)}
    assert store.count(status="ok") == TASKS * SAMPLES
    assert all(t.final_answer == f"answer to {t.query}" for t in store.iter_trajectories())
