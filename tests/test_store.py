"""The SQLite trajectory store: lossless round trip, idempotent keys, every filter, export, errors."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest

from distillery.errors import ConfigError
from distillery.store import SQLiteStore, StoreError, TrajectoryKey, UnreadableRowError, open_store
from distillery.trajectory import (
    Outcome,
    Step,
    ThinkingBlock,
    TokenLogprob,
    ToolCall,
    ToolResult,
    ToolSpec,
    TopLogprob,
    Trajectory,
    Usage,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def make(task_id="t1", model="m", sample_index=0, *, status="ok", success=None, tags=(), created_at=T0, cost=0.0):
    return Trajectory(
        task_id=task_id,
        query=f"query for {task_id}",
        model=model,
        sample_index=sample_index,
        status=status,
        error="boom" if status == "error" else None,
        outcome=None if success is None else Outcome(success=success, checker="exact"),
        tags=list(tags),
        created_at=created_at,
        steps=[Step(text="answer", cost_usd=cost)],
    )


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "store.db")
    yield s
    s.close()


def test_round_trip_is_lossless_for_a_rich_trajectory(store):
    call = ToolCall(name="get_price", arguments={"sku": "SKU-1", "qty": [1, 2]})
    bad_call = ToolCall(name="get_price", raw_arguments="{sku:", parse_error="Expecting property name")
    original = Trajectory(
        task_id="rich",
        query="Wie viel kostet SKU-1? ✓",
        system="be brief",
        tools=[ToolSpec(name="get_price", description="price", parameters={"type": "object", "properties": {"sku": {"type": "string"}}})],
        steps=[
            Step(
                text="",
                thinking=[ThinkingBlock(thinking="hmm", signature="sig=="), ThinkingBlock(type="redacted_thinking", data="opaque")],
                tool_calls=[call, bad_call],
                stop_reason="tool_use",
                logprobs=[TokenLogprob(token="get", logprob=-0.01, token_id=7, top=[TopLogprob(token="get", logprob=-0.01)])],
                usage=Usage(input_tokens=100, output_tokens=20, cache_read_input_tokens=50),
                cost_usd=0.0012,
                latency_s=0.5,
                tool_results=[ToolResult(tool_call_id=call.id, name="get_price", content="12.5", latency_s=0.01)],
                provider_content=[{"type": "text", "text": "x"}],
                confidence=0.93,
                routing={"tier": 0},
            ),
            Step(text="It costs 12.50.", usage=Usage(input_tokens=150, output_tokens=8), cost_usd=0.0009),
        ],
        outcome=Outcome(success=True, score=1.0, checker="numeric", expected=12.5, detail="read 12.5"),
        model="anthropic:claude-opus-4-6",
        tags=["pricing", "de"],
        metadata={"source": "unit", "nested": {"a": [1, None]}},
    )
    assert store.put(original) == "inserted"
    assert store.get(original.id) == original
    assert store.get_by_key(TrajectoryKey.of(original)) == original
    assert list(store.iter_trajectories()) == [original]


def test_wal_mode_and_synchronous_setting(tmp_path):
    normal = SQLiteStore(tmp_path / "a.db")
    assert normal.journal_mode == "wal"
    assert normal._connection().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    full = SQLiteStore(tmp_path / "b.db", synchronous="FULL")
    assert full._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(ConfigError):
        SQLiteStore(tmp_path / "c.db", synchronous="OFF")


def test_put_keeps_a_finished_row_and_replaces_a_failed_one(store):
    failed = make(status="error")
    assert store.put(failed) == "inserted"
    assert not store.has_ok(TrajectoryKey("t1", "m", 0))
    assert store.done_keys("m") == set()

    retried = make(status="ok", success=True)
    assert store.put(retried) == "replaced"
    assert store.count() == 1
    assert store.get(failed.id) is None
    assert store.get_by_key(TrajectoryKey("t1", "m", 0)) == retried
    assert store.has_ok(TrajectoryKey("t1", "m", 0))

    # A later run of the same key never overwrites a finished row, whatever its status.
    again = make(status="error")
    assert store.put(again) == "kept"
    assert store.get_by_key(TrajectoryKey("t1", "m", 0)) == retried
    assert store.count() == 1
    # ...unless asked to.
    assert store.put(make(status="max_steps"), replace=True) == "replaced"
    assert store.get_by_key(TrajectoryKey("t1", "m", 0)).status == "max_steps"
    assert store.has_ok(TrajectoryKey("t1", "m", 0))  # max_steps is final, not failed


def test_keys_distinguish_model_and_sample_index(store):
    for model in ("a", "b"):
        for index in range(3):
            assert store.put(make(model=model, sample_index=index)) == "inserted"
    store.put(make(model="a", sample_index=3, status="error"))
    assert store.count() == 7
    assert store.done_keys("a") == {("t1", 0), ("t1", 1), ("t1", 2)}
    assert store.done_keys("c") == set()


def test_putting_the_same_trajectory_twice_is_idempotent(store):
    t = make(tags=["x"])
    store.put(t)
    store.put(t)
    assert store.count() == 1
    assert store._connection().execute("SELECT COUNT(*) FROM trajectory_tags").fetchone()[0] == 1


@pytest.fixture
def filled(store):
    rows = [
        make("a", "m1", tags=["x", "y"], success=True, created_at=T0, cost=0.5),
        make("b", "m1", tags=["x"], success=False, created_at=T0 + timedelta(hours=1)),
        make("c", "m1", tags=["y", "z"], status="error", created_at=T0 + timedelta(hours=2)),
        make("d", "m2", tags=[], success=None, created_at=T0 + timedelta(hours=3), status="max_steps"),
        make("e", "m2", tags=["z"], success=True, created_at=T0 + timedelta(days=1)),
    ]
    for row in rows:
        store.put(row)
    return store


def ids(store, **filters):
    return sorted(t.task_id for t in store.iter_trajectories(**filters))


def test_tag_filters_any_and_all(filled):
    assert ids(filled, tags_any=["x"]) == ["a", "b"]
    assert ids(filled, tags_any=["x", "z"]) == ["a", "b", "c", "e"]
    assert ids(filled, tags_any="y") == ["a", "c"]
    assert ids(filled, tags_all=["x", "y"]) == ["a"]
    assert ids(filled, tags_all=["y", "z"]) == ["c"]
    assert ids(filled, tags_all=["x", "x"]) == ["a", "b"]  # a repeated tag is not counted twice
    assert ids(filled, tags_all=["x", "nope"]) == []
    assert ids(filled, tags_any=[]) == []
    assert ids(filled, tags_any=["x"], tags_all=["y"]) == ["a"]


def test_model_success_status_task_filters(filled):
    assert ids(filled, model="m2") == ["d", "e"]
    assert ids(filled, model=["m1", "m2"]) == ["a", "b", "c", "d", "e"]
    assert ids(filled, success=True) == ["a", "e"]
    assert ids(filled, success=False) == ["b"]  # no checker (NULL) is neither True nor False
    assert ids(filled, success=None) == ["a", "b", "c", "d", "e"]
    assert ids(filled, status="error") == ["c"]
    assert ids(filled, status=["ok", "max_steps"]) == ["a", "b", "d", "e"]
    assert ids(filled, task_ids=["b", "e", "zz"]) == ["b", "e"]
    assert ids(filled, model="m1", success=True) == ["a"]


def test_time_filters_since_inclusive_until_exclusive(filled):
    assert ids(filled, since=T0 + timedelta(hours=1)) == ["b", "c", "d", "e"]
    assert ids(filled, until=T0 + timedelta(hours=1)) == ["a"]
    assert ids(filled, since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3)) == ["b", "c"]
    # Naive datetimes and ISO strings are read as UTC.
    assert ids(filled, since=datetime(2026, 3, 2)) == ["e"]
    assert ids(filled, since="2026-03-02") == ["e"]
    with pytest.raises(ConfigError, match="since"):
        filled.count(since="yesterday")


def test_limit_count_and_streaming_order(filled):
    assert filled.count() == 5
    assert filled.count(model="m1") == 3
    assert filled.count(tags_any=["z"], success=True) == 1
    assert [t.task_id for t in filled.iter_trajectories(limit=2)] == ["a", "b"]
    assert filled.query(limit=0) == []
    assert [t.task_id for t in filled.query(model="m2", limit=5)] == ["d", "e"]


def test_streaming_pages_through_many_rows(store, monkeypatch):
    monkeypatch.setattr("distillery.store.sqlite._PAGE", 7)
    for i in range(30):
        store.put(make(f"t{i:02d}"))
    assert [t.task_id for t in store.iter_trajectories()] == [f"t{i:02d}" for i in range(30)]
    assert len(list(store.iter_trajectories(limit=15))) == 15


def test_add_tags_updates_filters_and_the_record(filled):
    target = filled.query(task_ids=["b", "d"])
    found = filled.add_tags([t.id for t in target] + ["missing-id"], ["gold", "x"])
    assert found == 2
    assert ids(filled, tags_any=["gold"]) == ["b", "d"]
    assert ids(filled, tags_all=["gold", "x"]) == ["b", "d"]
    b = filled.query(task_ids=["b"])[0]
    assert b.tags == ["x", "gold"]  # existing tag not duplicated, order kept


def test_export_jsonl_writes_filtered_trajectories(filled, tmp_path):
    out = tmp_path / "exports" / "m1.jsonl"
    assert filled.export_jsonl(out, model="m1", status="ok") == 2
    lines = out.read_text().splitlines()
    exported = [Trajectory.model_validate_json(line) for line in lines]
    assert [t.task_id for t in exported] == ["a", "b"]
    assert exported[0] == filled.query(task_ids=["a"])[0]
    assert not list(out.parent.glob(".*.tmp"))  # the temp file was renamed, not left behind


def test_export_failure_leaves_no_partial_file(filled, tmp_path, monkeypatch):
    out = tmp_path / "x.jsonl"
    out.write_text("previous export\n")

    def broken(**filters):
        yield filled.query(limit=1)[0]
        raise RuntimeError("disk vanished")

    monkeypatch.setattr(filled, "iter_trajectories", broken)
    with pytest.raises(RuntimeError):
        filled.export_jsonl(out)
    assert out.read_text() == "previous export\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_unwritable_path_is_a_one_line_config_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as info:
        SQLiteStore(blocker / "sub" / "store.db")
    message = str(info.value)
    assert str(blocker / "sub" / "store.db") in message and "\n" not in message
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        SQLiteStore(blocker / "store.db")
    # A directory where the database file should be.
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ConfigError, match="dir.db"):
        SQLiteStore(tmp_path / "dir.db")


def test_a_directory_is_named_as_one(tmp_path):
    (tmp_path / "dir.db").mkdir()
    for readonly in (False, True):
        with pytest.raises(ConfigError, match=r"dir\.db is a directory, not a trajectory store"):
            SQLiteStore(tmp_path / "dir.db", readonly=readonly)


def _spoil(store: SQLiteStore, rowid: int, data: str) -> str:
    """Overwrite one row's JSON record behind the store's back; returns that row's trajectory id."""
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE trajectories SET data = ? WHERE rowid = ?", (data, rowid))
        return db.execute("SELECT id FROM trajectories WHERE rowid = ?", (rowid,)).fetchone()[0]


@pytest.mark.parametrize("data, problem", [("{broken", "Invalid JSON"), ("[1, 2]", "Input should be an object"),
                                           ('{"query": "q"}', "task_id"), ('{"task_id": "a", "query": "q", "steps": 5}', "steps")])
def test_a_row_that_does_not_parse_is_one_line_naming_store_row_and_id(filled, data, problem):
    bad_id = _spoil(filled, 3, data)
    before = filled.path.read_bytes()
    seen = []
    with pytest.raises(UnreadableRowError) as info:
        for trajectory in filled.iter_trajectories():
            seen.append(trajectory.task_id)
    message = str(info.value)
    assert message.startswith(f"{filled.path}: row 3 (trajectory {bad_id}): ") and problem in message, message
    assert "\n" not in message and isinstance(info.value, StoreError)
    assert seen == ["a", "b"]  # the rows before it were read; nothing past it
    for read in (lambda: filled.get(bad_id), lambda: filled.get_by_key(TrajectoryKey("c", "m1", 0))):
        with pytest.raises(UnreadableRowError, match="row 3"):
            read()
    assert filled.path.read_bytes() == before


def test_on_invalid_skips_an_unreadable_row_and_reads_on(filled):
    bad_id = _spoil(filled, 2, "{broken")
    skipped = []
    assert [t.task_id for t in filled.iter_trajectories(on_invalid=skipped.append)] == ["a", "c", "d", "e"]
    assert [(e.rowid, e.trajectory_id) for e in skipped] == [(2, bad_id)]
    assert skipped[0].origin == f"{filled.path} row 2 (trajectory {bad_id})"
    # limit counts what is yielded, not what is skipped
    assert [t.task_id for t in filled.iter_trajectories(on_invalid=skipped.append, limit=2)] == ["a", "c"]
    assert filled.count() == 5  # the row is still stored
    assert filled.stats()["count"] == 5  # stats reads the columns, not the record


def test_export_and_add_tags_stop_at_an_unreadable_row_and_change_nothing(filled, tmp_path):
    bad_id = _spoil(filled, 4, "[1, 2]")
    out = tmp_path / "export.jsonl"
    with pytest.raises(UnreadableRowError, match="row 4"):
        filled.export_jsonl(out)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    good_id = next(filled.iter_trajectories(limit=1)).id
    with pytest.raises(UnreadableRowError, match="row 4"):
        filled.add_tags([good_id, bad_id], ["new"])
    assert "new" not in filled.get(good_id).tags  # the transaction was rolled back
    assert ids(filled, tags_any=["new"]) == []


def test_not_a_database_is_a_config_error(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="junk.db"):
        SQLiteStore(junk)


def test_parent_directories_are_created(tmp_path):
    s = SQLiteStore(tmp_path / "deep" / "er" / "store.db")
    s.put(make())
    assert (tmp_path / "deep" / "er" / "store.db").is_file()


def test_readonly_reader_sees_committed_rows_while_writer_is_open(tmp_path):
    writer = SQLiteStore(tmp_path / "s.db")
    reader = SQLiteStore(tmp_path / "s.db", readonly=True)
    assert reader.count() == 0
    writer.put(make("a"))
    assert reader.count() == 1
    with pytest.raises(ConfigError, match="read-only"):
        reader.put(make("b"))
    with pytest.raises(ConfigError, match="no such trajectory store"):
        SQLiteStore(tmp_path / "absent.db", readonly=True)


def test_concurrent_threads_each_get_a_connection(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    errors = []

    def write(prefix):
        try:
            for i in range(25):
                store.put(make(f"{prefix}-{i}"))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count() == 100
    assert store.integrity_check() == "ok"


def test_columns_mirror_the_json_record(filled):
    conn = sqlite3.connect(filled.path)
    for task_id, model, status, success, data in conn.execute(
        "SELECT task_id, model, status, success, data FROM trajectories"
    ):
        record = json.loads(data)
        assert (record["task_id"], record["model"], record["status"]) == (task_id, model, status)
        expected = None if record["outcome"] is None else record["outcome"]["success"]
        assert success == (None if expected is None else int(expected))


def test_open_store_accepts_a_path_or_a_store(tmp_path):
    s = open_store(tmp_path / "x.db")
    assert isinstance(s, SQLiteStore)
    assert open_store(s) is s


def test_stats_groups_by_model_and_status(filled):
    stats = filled.stats()
    assert stats["count"] == 5
    assert stats["cost_usd"] == pytest.approx(0.5)
    m1_ok = next(r for r in stats["rows"] if r["model"] == "m1" and r["status"] == "ok")
    assert (m1_ok["count"], m1_ok["succeeded"], m1_ok["checked"]) == (2, 1, 2)


def test_release_thread_closes_only_that_threads_connection(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    worker = threading.Thread(target=lambda: (store.put(make("w")), store.release_thread()))
    worker.start()
    worker.join()
    assert len(store._connections) == 1  # the main thread's, opened by the constructor
    assert store.count() == 1
    store.close()
    assert store._connections == []
