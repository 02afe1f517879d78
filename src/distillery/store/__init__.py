"""The trajectory store: where collected trajectories live between stages.

    store = SQLiteStore(".distillery/store.db")
    store.put(trajectory)                      # one transaction per trajectory
    store.count(model="anthropic:claude-opus-4-6", success=True)
    for t in store.iter_trajectories(tags_any=["billing"], status="ok"):
        ...
    store.export_jsonl("teacher.jsonl", success=True)

`TrajectoryStore` is the small interface the rest of distillery uses; `SQLiteStore` is the default
implementation (a server database could implement the same methods later).

Keys and resume. A trajectory's key is `(task_id, model, sample_index)`. Re-running a collection
must resume, not duplicate, so `put()` on a key that is already stored follows one rule:

* a *failed* row (status "error": the API gave up, the process raised) is replaced;
* any other row (status "ok", "max_steps", "max_tokens", "refused") is kept and the new one is
  dropped. Those are finished trajectories; running them again would spend money to get the same
  kind of answer. Pass `replace=True` to overwrite anyway.

Filters (every query method takes the same keywords):
`tags_any`, `tags_all`, `model`, `success` (True/False/None: None means "don't filter"; a
trajectory without a checker has success NULL and matches neither True nor False), `status`,
`since`/`until` (created_at, inclusive/exclusive; naive datetimes are read as UTC), `task_ids`,
`limit`.

Rows that do not parse. Every read that returns trajectories parses the row's JSON record. A record
that does not parse as a `Trajectory` (edited by hand, written by a different version, damaged on
disk) raises `UnreadableRowError`, one line naming the store file, the row id and the trajectory id;
nothing is read past it and nothing in the store is changed. `iter_trajectories(on_invalid=...)`
instead hands each such error to a callback and goes on with the next row (what `distillery build
--skip-invalid` does); the row stays in the store as it is.
"""

from distillery.store.base import DEFAULT_STORE_PATH, FAILED_STATUSES, PutResult, StoreError, TrajectoryKey
from distillery.store.base import TrajectoryStore, UnreadableRowError, validation_problem
from distillery.store.sqlite import SQLiteStore, open_store
from distillery.store.writer import StoreWriter

__all__ = [
    "DEFAULT_STORE_PATH",
    "FAILED_STATUSES",
    "PutResult",
    "SQLiteStore",
    "StoreError",
    "StoreWriter",
    "TrajectoryKey",
    "TrajectoryStore",
    "UnreadableRowError",
    "open_store",
    "validation_problem",
]
