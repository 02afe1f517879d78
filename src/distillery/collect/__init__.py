"""Teacher collection: run the teacher agent over many tasks, concurrently, into the store.

    collector = TeacherCollector("anthropic:claude-opus-4-6", tools, store=SQLiteStore(), n=4,
                                 concurrency=16, budget_usd=20.0)
    result = collector.collect(load_tasks("queries.jsonl"))
    print(result.summary())

Or, the seed's one-liner: `collect_teacher_trajectories(["What is ...?"], "openai:gpt-4o")`.

What it guarantees:
* **Bounded concurrency**: at most `concurrency` (task, sample) runs are in flight, from a fixed
  pool of that many workers on one event loop (or, with `processes=P`, split over P processes).
* **Retries**: transient model errors (429, 529, 5xx, timeouts, unreadable 2xx bodies) are retried
  with exponential backoff and full jitter, or after the server's `retry_after`, up to `max_retries`
  times. After that the trajectory is stored with status "error" and a one-line message naming the
  model, the HTTP status and what the server said; the batch carries on.
* **Timeouts**: each request to a hosted teacher gets `timeout_s` (default 120 s) to answer.
* **No task kills the batch**: any exception from one run becomes a failed ("error") trajectory.
* **Resume**: with a store, (task_id, model, sample_index) keys already stored as finished are
  skipped and reported as "resumed"; failed ones are run again and replace the failed row.
* **Budget**: with `budget_usd`, no new run starts unless spent + (in-flight + 1) x the most
  expensive trajectory so far fits under the cap. In-flight runs finish.
* **n samples**: each task runs `n` times (sample_index 0..n-1), at temperature 1.0 unless set.
* **Shards die with the collection**: with `processes > 1`, a shard process ends the moment the
  collecting process does, even by SIGKILL (`shards._die_with_parent`).

Where each part lives: the collector, its results and the budget in `collector.py`; process
sharding in `shards.py`; the progress bar in `progress.py`. The retry policy is the model wrapper
`models/retrying.py`, the blocking entry point `models/blocking.py`, key redaction `redaction.py`,
and the batched store writer `store/writer.py`.
"""

from distillery.collect.collector import (
    DEFAULT_TIMEOUT_S,
    CollectResult,
    TeacherCollector,
    as_tasks,
    collect_teacher_trajectories,
    override_tool_specs,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CollectResult",
    "TeacherCollector",
    "as_tasks",
    "collect_teacher_trajectories",
    "override_tool_specs",
]
