"""The demo's tasks: the hand-written queries (`queries.json`) and samples of the world's splits.

`queries.json` holds one object per query: the world task family, the entities it is about and
the query text. Every entity combination is in the world's *train* split, so these queries (which
the seed's flow collects and trains on) never leak into the held-out test split; the test suite
checks it. Edit the file to show other questions: the expected answer comes from the shop
database through the family's checker, not from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillery.tasks import Task

QUERIES_FILE = Path(__file__).with_name("queries.json")
QUERY_TAG = "demo-query"
QUERY_SPLIT = "train"


def demo_queries() -> list[tuple[str, dict[str, Any], str]]:
    """(family, entities, query) for each query in `queries.json`, in file order."""
    rows = json.loads(QUERIES_FILE.read_text(encoding="utf-8"))
    return [(row["family"], row["entities"], row["query"]) for row in rows]


def demo_tasks() -> list[Task]:
    """The queries as world tasks, with the checker, expected answer and context of their family."""
    from distillery.world.tasks import make_task

    return [make_task(name, entities, query, id=f"demo-query-{index}", split=QUERY_SPLIT,
                      tags=[QUERY_TAG, f"split:{QUERY_SPLIT}"])
            for index, (name, entities, query) in enumerate(demo_queries(), start=1)]


def world_split(split: str, n: int, seed: int) -> list[Task]:
    """`n` world tasks of one split, tagged `split:<split>` so the store can tell them apart."""
    from distillery.world.tasks import generate_tasks

    return [task.model_copy(update={"tags": [*task.tags, f"split:{split}"]}) for task in generate_tasks(split, n, seed)]


__all__ = ["QUERIES_FILE", "QUERY_SPLIT", "QUERY_TAG", "demo_queries", "demo_tasks", "world_split"]
