"""The collection's progress bar: done and failed counts and the running cost."""

from __future__ import annotations

from collections import Counter
from typing import Any


class ProgressBar:
    """A rich progress bar with done/failed counts and running cost; a no-op when disabled."""

    def __init__(self, *, total: int, enabled: bool, model: str):
        self.enabled = enabled and total > 0
        self.total = total
        self.model = model
        self.counts: Counter = Counter()
        self.cost = 0.0
        self._progress = None
        self._task_id = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]collect[/] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/] ${task.fields[cost]:.4f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                refresh_per_second=4,  # redraws run on rich's own thread; fewer of them cost the event loop less
            )
            self._progress.start()
            self._task_id = self._progress.add_task(self.model, total=self.total, ok=0, failed=0, cost=0.0)
        return self

    def advance(self, status: str, cost: float) -> None:
        """One run finished with `status`, having cost `cost` dollars."""
        self.counts[status] += 1
        self.cost += cost
        if self._progress is not None:
            self._progress.update(
                self._task_id,
                advance=1,
                ok=self.counts["ok"],
                failed=self.counts["error"],
                cost=self.cost,
            )

    def __exit__(self, *exc_info: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
