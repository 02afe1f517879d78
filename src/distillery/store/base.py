"""What every stage needs from a trajectory store: the interface, its errors and the resume key.

The filter keywords and the resume rule are described in `distillery.store`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

from pydantic import ValidationError

from distillery.errors import ConfigError, DistilleryError
from distillery.trajectory import Trajectory

DEFAULT_STORE_PATH = ".distillery/store.db"

# Rows with these statuses are replaced when the same key is put again; all others are final.
FAILED_STATUSES = frozenset({"error"})

PutResult = Literal["inserted", "replaced", "kept"]


class StoreError(DistilleryError):
    """The store could not be read or written (disk full, locked for too long, corrupt file)."""


class UnreadableRowError(StoreError):
    """A stored row whose JSON record does not parse as a `Trajectory`. The store is left as it is."""

    def __init__(self, path: Path, rowid: int, trajectory_id: str, problem: str):
        super().__init__(f"{path}: row {rowid} (trajectory {trajectory_id}): the stored record does not parse: {problem}")
        self.path = path
        self.rowid = rowid
        self.trajectory_id = trajectory_id
        self.problem = problem

    @property
    def origin(self) -> str:
        """`store.db row 3 (trajectory abc)`: where the row is, for messages that list several."""
        return f"{self.path} row {self.rowid} (trajectory {self.trajectory_id})"


def validation_problem(exc: ValidationError) -> str:
    """pydantic's first complaint as `field: message (and N more)`, one line; the field is (root) for the whole record."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


class TrajectoryKey(NamedTuple):
    """What makes a trajectory unique for resume: the task, the model, and which of n samples."""

    task_id: str
    model: str
    sample_index: int = 0

    @classmethod
    def of(cls, trajectory: Trajectory) -> TrajectoryKey:
        return cls(trajectory.task_id, trajectory.model, trajectory.sample_index)


class TrajectoryStore(ABC):
    """What every stage needs from a store. Filters are the keywords described in the module doc."""

    # True when `put` returns in well under a millisecond (no fsync, no network round trip), so an
    # event loop may call it directly: cheaper than handing each write to a thread and back. A
    # store that waits on a disk flush or a server leaves this False and is written off the loop.
    put_is_quick: bool = False

    @abstractmethod
    def put(self, trajectory: Trajectory, *, replace: bool = False) -> PutResult:
        """Write one trajectory atomically, following the keep/replace rule for its key."""

    @abstractmethod
    def get(self, trajectory_id: str) -> Trajectory | None: ...

    @abstractmethod
    def get_by_key(self, key: TrajectoryKey) -> Trajectory | None: ...

    @abstractmethod
    def has_ok(self, key: TrajectoryKey) -> bool:
        """True when the key is stored and the row is final (not failed): collection skips it."""

    @abstractmethod
    def done_keys(self, model: str) -> set[tuple[str, int]]:
        """The `(task_id, sample_index)` pairs of `model` that are stored and final."""

    @abstractmethod
    def iter_trajectories(self, *, on_invalid: Callable[[UnreadableRowError], None] | None = None,
                          **filters: Any) -> Iterator[Trajectory]:
        """Stream matching trajectories in insertion order without loading them all.

        A row that does not parse raises `UnreadableRowError`; with `on_invalid`, the error is passed
        to it instead and the row is skipped (and left in the store).
        """

    @abstractmethod
    def count(self, **filters: Any) -> int: ...

    @abstractmethod
    def add_tags(self, trajectory_ids: Iterable[str], tags: Iterable[str]) -> int:
        """Add tags to stored trajectories; returns how many trajectories were found."""

    def query(self, **filters: Any) -> list[Trajectory]:
        return list(self.iter_trajectories(**filters))

    def export_jsonl(self, path: str | Path, **filters: Any) -> int:
        """Write matching trajectories as JSONL (one `Trajectory` per line); returns the count.

        The file appears complete or not at all: it is written next to the target and renamed.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot create the export's directory ({exc.strerror})") from None
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        written = 0
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for trajectory in self.iter_trajectories(**filters):
                    f.write(trajectory.model_dump_json())
                    f.write("\n")
                    written += 1
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"{path}: cannot write the export ({exc.strerror})") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def close(self) -> None:
        pass

    def release_thread(self) -> None:
        """Free whatever the calling thread holds (its connection); called by short-lived writer threads."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
