"""`SQLiteStore`, the default trajectory store: one SQLite file in WAL mode, one transaction per trajectory."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import ValidationError

from distillery.errors import ConfigError
from distillery.store.base import (
    DEFAULT_STORE_PATH,
    FAILED_STATUSES,
    PutResult,
    StoreError,
    TrajectoryKey,
    TrajectoryStore,
    UnreadableRowError,
    validation_problem,
)
from distillery.trajectory import Trajectory

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trajectories (
    id           TEXT PRIMARY KEY,
    task_id      TEXT NOT NULL,
    model        TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    status       TEXT NOT NULL,
    success      INTEGER,            -- 1, 0, or NULL when the task has no checker
    error        TEXT,
    cost_usd     REAL NOT NULL,
    n_steps      INTEGER NOT NULL,
    created_at   REAL NOT NULL,      -- unix seconds (UTC) of Trajectory.created_at
    stored_at    REAL NOT NULL,      -- unix seconds when this row was written
    data         TEXT NOT NULL,      -- Trajectory.model_dump_json(): the lossless record
    UNIQUE (task_id, model, sample_index)
);
CREATE INDEX IF NOT EXISTS trajectories_model_status ON trajectories (model, status);
CREATE INDEX IF NOT EXISTS trajectories_created_at ON trajectories (created_at);
CREATE TABLE IF NOT EXISTS trajectory_tags (
    trajectory_id TEXT NOT NULL REFERENCES trajectories (id) ON DELETE CASCADE,
    tag           TEXT NOT NULL,
    PRIMARY KEY (trajectory_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trajectory_tags_tag ON trajectory_tags (tag, trajectory_id);
"""

_PAGE = 256  # rows fetched per round trip when streaming


def _timestamp(value: datetime | str | float | None, field: str) -> float | None:
    """A filter bound as unix seconds. Naive datetimes and ISO strings without offset are UTC."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{field}: {value!r} is not an ISO 8601 date or datetime") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _where(
    *,
    tags_any: Iterable[str] | None = None,
    tags_all: Iterable[str] | None = None,
    model: str | Iterable[str] | None = None,
    success: bool | None = None,
    status: str | Iterable[str] | None = None,
    since: datetime | str | float | None = None,
    until: datetime | str | float | None = None,
    task_ids: Iterable[str] | None = None,
) -> tuple[str, list[Any]]:
    """SQL conditions (joined with AND) and their parameters for the shared filter keywords."""
    clauses: list[str] = []
    params: list[Any] = []

    def member(column: str, values: list[str]) -> None:
        clauses.append(f"{column} IN ({','.join('?' * len(values))})")
        params.extend(values)

    tags_any, tags_all = _as_list(tags_any), _as_list(tags_all)
    if tags_any is not None:
        if not tags_any:
            clauses.append("0")  # "any of no tags" matches nothing
        else:
            clauses.append(
                "EXISTS (SELECT 1 FROM trajectory_tags g WHERE g.trajectory_id = t.id "
                f"AND g.tag IN ({','.join('?' * len(tags_any))}))"
            )
            params.extend(tags_any)
    if tags_all:
        wanted = sorted(set(tags_all))
        clauses.append(
            "(SELECT COUNT(*) FROM trajectory_tags g WHERE g.trajectory_id = t.id "
            f"AND g.tag IN ({','.join('?' * len(wanted))})) = ?"
        )
        params.extend([*wanted, len(wanted)])
    for column, value in (("t.model", model), ("t.status", status), ("t.task_id", task_ids)):
        values = _as_list(value)
        if values is not None:
            if values:
                member(column, values)
            else:
                clauses.append("0")
    if success is not None:
        clauses.append("t.success = ?")
        params.append(int(bool(success)))
    if since is not None:
        clauses.append("t.created_at >= ?")
        params.append(_timestamp(since, "since"))
    if until is not None:
        clauses.append("t.created_at < ?")
        params.append(_timestamp(until, "until"))
    return (" AND ".join(clauses) or "1"), params


class SQLiteStore(TrajectoryStore):
    """A trajectory store in one SQLite file, safe to read while a collection writes to it.

    * WAL journal: readers (eval, the gateway) never block the writer and see only committed rows.
    * `synchronous=NORMAL` by default: in WAL mode a commit survives the process being killed (the
      WAL is in the OS page cache); only a power loss or OS crash can drop the last few commits,
      and never corrupts the file. Collection resumes by key, so a lost trajectory is simply
      collected again, and NORMAL avoids an fsync per trajectory. Pass `synchronous="FULL"` when
      every committed row must survive power loss.
    * One connection per thread (sqlite3 connections must not be shared across threads).
    * `put_is_quick` under NORMAL: a commit is a write() into the page cache, about 0.07 ms, so a
      collector writes from its event loop. Under FULL each commit waits for an fsync, so it does not.
      (A commit can still wait up to `busy_timeout_s` for another process's write; commits are
      short, so in practice that is one other commit.)
    * `readonly=True` opens the file without write access (and fails if it does not exist).
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_STORE_PATH,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        readonly: bool = False,
        busy_timeout_s: float = 30.0,
    ):
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.put_is_quick = synchronous == "NORMAL"
        self.readonly = readonly
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if self.path.is_dir():
            raise ConfigError(f"{self.path} is a directory, not a trajectory store (give the store's file)")
        if readonly:
            if not self.path.is_file():
                raise ConfigError(f"{self.path}: no such trajectory store")
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError as exc:
                raise ConfigError(
                    f"{self.path}: store is not writable ({exc.filename} exists and is not a directory)"
                ) from None
            except OSError as exc:
                raise ConfigError(
                    f"{self.path}: store is not writable (cannot create {self.path.parent}: {exc.strerror})"
                ) from None
        self._connection()  # open now, so a bad path fails here with a clear message

    # -- connections -------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = None
        try:
            if self.readonly:
                conn = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.busy_timeout_s,
                    isolation_level=None, check_same_thread=False,
                )
            else:
                # Each connection is only used by the thread that opened it (thread-local);
                # check_same_thread=False only lets close() release it from another thread.
                conn = sqlite3.connect(
                    self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
                )
            conn.execute("PRAGMA foreign_keys = ON")
            if not self.readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise ConfigError(f"{self.path}: could not switch the store to WAL mode (got {mode})")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                # BEGIN IMMEDIATE takes the write lock, so an unwritable file fails here, not mid-run.
                conn.execute("BEGIN IMMEDIATE")
                conn.executescript(_SCHEMA)  # executescript commits the open transaction
            else:
                conn.execute("SELECT count(*) FROM trajectories").fetchone()
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            what = "readable" if self.readonly else "writable"
            raise ConfigError(f"{self.path}: store is not {what} ({exc})") from None
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def release_thread(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            conn.close()
            self._local.conn = None

    def _fail(self, action: str, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"{self.path}: could not {action} ({exc})")

    # -- writes ------------------------------------------------------------------------------

    def put(self, trajectory: Trajectory, *, replace: bool = False) -> PutResult:
        if self.readonly:
            raise ConfigError(f"{self.path}: store was opened read-only")
        data = trajectory.model_dump_json()
        success = None if trajectory.outcome is None or trajectory.outcome.success is None else int(
            trajectory.outcome.success
        )
        row = (
            trajectory.id,
            trajectory.task_id,
            trajectory.model,
            trajectory.sample_index,
            trajectory.status,
            success,
            trajectory.error,
            trajectory.cost_usd,
            len(trajectory.steps),
            trajectory.created_at.timestamp(),
            time.time(),
            data,
        )
        conn = self._connection()
        try:
            with _transaction(conn):
                existing = conn.execute(
                    "SELECT id, status FROM trajectories WHERE task_id = ? AND model = ? AND sample_index = ?",
                    (trajectory.task_id, trajectory.model, trajectory.sample_index),
                ).fetchone()
                outcome: PutResult = "inserted"
                if existing is not None:
                    if existing[1] not in FAILED_STATUSES and not replace:
                        return "kept"
                    conn.execute("DELETE FROM trajectories WHERE id = ?", (existing[0],))
                    outcome = "replaced"
                # The same id stored under another key (re-put after its key changed) is replaced too.
                conn.execute("DELETE FROM trajectories WHERE id = ?", (trajectory.id,))
                conn.execute("INSERT INTO trajectories VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
                if trajectory.tags:
                    conn.executemany(
                        "INSERT OR IGNORE INTO trajectory_tags (trajectory_id, tag) VALUES (?, ?)",
                        [(trajectory.id, tag) for tag in trajectory.tags],
                    )
                return outcome
        except sqlite3.Error as exc:
            raise self._fail(f"write trajectory {trajectory.id}", exc) from None

    def add_tags(self, trajectory_ids: Iterable[str], tags: Iterable[str]) -> int:
        """Add tags to stored trajectories (the tag table and the JSON record both), in one transaction."""
        ids, new_tags = list(trajectory_ids), list(dict.fromkeys(tags))
        if not ids or not new_tags:
            return 0
        conn = self._connection()
        found = 0
        try:
            with _transaction(conn):  # an unreadable row raises out of it: rolled back, nothing changed
                for trajectory_id in ids:
                    row = conn.execute("SELECT rowid, data FROM trajectories WHERE id = ?", (trajectory_id,)).fetchone()
                    if row is None:
                        continue
                    found += 1
                    record = self._record(row[0], trajectory_id, row[1])
                    added = [tag for tag in new_tags if tag not in record["tags"]]
                    if not added:
                        continue
                    record["tags"].extend(added)
                    conn.execute(
                        "UPDATE trajectories SET data = ? WHERE id = ?",
                        (json.dumps(record, ensure_ascii=False, separators=(",", ":")), trajectory_id),
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO trajectory_tags (trajectory_id, tag) VALUES (?, ?)",
                        [(trajectory_id, tag) for tag in added],
                    )
        except sqlite3.Error as exc:
            raise self._fail("add tags", exc) from None
        return found

    def delete(self, trajectory_ids: Iterable[str]) -> int:
        """Remove trajectories (and their tags); returns how many rows went."""
        ids = list(trajectory_ids)
        conn = self._connection()
        try:
            with _transaction(conn):
                return sum(conn.execute("DELETE FROM trajectories WHERE id = ?", (i,)).rowcount for i in ids)
        except sqlite3.Error as exc:
            raise self._fail("delete trajectories", exc) from None

    # -- reads -------------------------------------------------------------------------------

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._connection().execute(sql, list(params)).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from None

    def _parse(self, rowid: int, trajectory_id: str, data: str | bytes) -> Trajectory:
        """The row's record as a `Trajectory`, or `UnreadableRowError` naming the file, row and trajectory."""
        try:
            return Trajectory.model_validate_json(data)
        except ValidationError as exc:
            raise UnreadableRowError(self.path, rowid, trajectory_id, validation_problem(exc)) from None

    def _record(self, rowid: int, trajectory_id: str, data: str | bytes) -> dict[str, Any]:
        """The row's record as a JSON object with a tag list (what `add_tags` edits), checked like `_parse`."""
        try:
            record = json.loads(data)
        except (ValueError, TypeError) as exc:
            raise UnreadableRowError(self.path, rowid, trajectory_id, f"(root): not valid JSON ({exc})") from None
        if not isinstance(record, dict) or not isinstance(record.get("tags", []), list):
            self._parse(rowid, trajectory_id, data)  # raises, with pydantic's account of what is wrong
        record.setdefault("tags", [])
        return record

    def get(self, trajectory_id: str) -> Trajectory | None:
        rows = self._read("SELECT rowid, id, data FROM trajectories WHERE id = ?", (trajectory_id,))
        return self._parse(*rows[0]) if rows else None

    def get_by_key(self, key: TrajectoryKey) -> Trajectory | None:
        rows = self._read(
            "SELECT rowid, id, data FROM trajectories WHERE task_id = ? AND model = ? AND sample_index = ?", tuple(key)
        )
        return self._parse(*rows[0]) if rows else None

    def has_ok(self, key: TrajectoryKey) -> bool:
        failed = list(FAILED_STATUSES)
        rows = self._read(
            "SELECT 1 FROM trajectories WHERE task_id = ? AND model = ? AND sample_index = ? "
            f"AND status NOT IN ({','.join('?' * len(failed))})",
            (*key, *failed),
        )
        return bool(rows)

    def done_keys(self, model: str) -> set[tuple[str, int]]:
        failed = list(FAILED_STATUSES)
        rows = self._read(
            "SELECT task_id, sample_index FROM trajectories WHERE model = ? "
            f"AND status NOT IN ({','.join('?' * len(failed))})",
            (model, *failed),
        )
        return {(task_id, sample_index) for task_id, sample_index in rows}

    def count(self, **filters: Any) -> int:
        where, params = _where(**filters)
        return self._read(f"SELECT COUNT(*) FROM trajectories t WHERE {where}", params)[0][0]

    def iter_trajectories(self, *, limit: int | None = None,
                          on_invalid: Callable[[UnreadableRowError], None] | None = None,
                          **filters: Any) -> Iterator[Trajectory]:
        """Stream matches in insertion order, a page at a time.

        Each page is its own short read (keyset pagination on rowid), so no read transaction stays
        open between pages: a long export never holds back the WAL checkpoint, and rows written
        meanwhile may appear in later pages.

        A row whose record does not parse raises `UnreadableRowError`, or, with `on_invalid`, is
        handed to it and skipped; `limit` counts the trajectories yielded, not the rows skipped.
        """
        where, params = _where(**filters)
        last_rowid = -1
        remaining = limit
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            rows = self._read(
                f"SELECT t.rowid, t.id, t.data FROM trajectories t WHERE {where} AND t.rowid > ? "
                "ORDER BY t.rowid LIMIT ?",
                [*params, last_rowid, page],
            )
            for rowid, trajectory_id, data in rows:
                last_rowid = rowid
                try:
                    trajectory = self._parse(rowid, trajectory_id, data)
                except UnreadableRowError as exc:
                    if on_invalid is None:
                        raise
                    on_invalid(exc)
                    continue
                yield trajectory
                if remaining is not None:
                    remaining -= 1
            if len(rows) < page:
                return

    def stats(self, **filters: Any) -> dict[str, Any]:
        """Counts by model and status, total cost, and success rate among checked trajectories."""
        where, params = _where(**filters)
        rows = self._read(
            f"SELECT model, status, COUNT(*), SUM(cost_usd), SUM(success = 1), SUM(success IS NOT NULL) "
            f"FROM trajectories t WHERE {where} GROUP BY model, status ORDER BY model, status",
            params,
        )
        return {
            "rows": [
                {"model": m, "status": s, "count": n, "cost_usd": c or 0.0, "succeeded": ok or 0, "checked": chk or 0}
                for m, s, n, c, ok, chk in rows
            ],
            "count": sum(r[2] for r in rows),
            "cost_usd": sum(r[3] or 0.0 for r in rows),
        }

    def integrity_check(self) -> str:
        return self._read("PRAGMA integrity_check")[0][0]

    @property
    def journal_mode(self) -> str:
        return self._read("PRAGMA journal_mode")[0][0]

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


class _transaction:
    """`with _transaction(conn):` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def open_store(path: str | Path | TrajectoryStore | None = None, **options: Any) -> TrajectoryStore:
    """A store from a path (or an already-open store, returned as is); None means the default path."""
    if isinstance(path, TrajectoryStore):
        return path
    return SQLiteStore(path if path is not None else DEFAULT_STORE_PATH, **options)
