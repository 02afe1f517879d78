"""Which examples make it into the dataset: rejection sampling, selection, dedup, decontamination.

Each filter takes a list of `Example`s and returns `(kept, dropped_count)`, so the builder can
report how many examples every step removed.

* `success_only`: keep trajectories the task's checker judged correct (rejection sampling, as in
  FireAct and AgentTuning). Unchecked trajectories (no checker) are dropped too: unknown is not
  success.
* `select`: tag, model and date selection for sources that cannot filter themselves (JSONL).
* `dedup_exact`: identical training conversations (same canonical messages and tools).
* `dedup_near`: conversations whose word 5-gram sets have Jaccard similarity >= threshold,
  found with MinHash + LSH banding and confirmed with the exact Jaccard.
* `decontaminate`: drop examples whose user query matches an evaluation query (normalised exact
  match, or a shared word n-gram, default 13 as in GPT-3's decontamination), or whose task id is
  an evaluation task id.
* `invalid_calls`: drop examples with a tool call to an unknown tool or with arguments that
  violate the tool's JSON Schema, so the student is not trained to make those calls.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np

from distillery.dataset.sources import Example
from distillery.dataset.validate import schema_error_detail
from distillery.errors import ConfigError
from distillery.tasks import load_tasks, normalize_text
from distillery.trajectory import canonical_json


STATUSES = ("ok", "error", "all")


def finished(example: Example) -> bool:
    """A completed run: status ok and the conversation ends on an assistant message.

    That is a final answer, or, for a step captured by the gateway, the tool call the client then
    ran (its result is not the model's to produce). A run cut off after a tool result is not.
    """
    if example.trajectory is not None and example.trajectory.status != "ok":
        return False
    messages = example.sample.messages
    return bool(messages) and messages[-1].role == "assistant"


def by_status(examples: list[Example], keep: str) -> tuple[list[Example], dict[str, int]]:
    """Keep completed runs ("ok"), the others ("error": failed, cut off or unfinished), or "all".

    Returns the kept examples and, per reason, how many were left out.
    """
    if keep not in STATUSES:
        raise ConfigError(f"--status {keep!r}: choose one of {', '.join(STATUSES)}")
    kept, left_out = [], {}
    for e in examples:
        if keep == "all" or finished(e) == (keep == "ok"):
            kept.append(e)
            continue
        status = e.trajectory.status if e.trajectory is not None else "ok"
        reason = f"status {status}" if status != "ok" else ("completed run" if finished(e) else "unfinished run (ends on a tool result)")
        left_out[reason] = left_out.get(reason, 0) + 1
    return kept, left_out


def success_only(examples: list[Example]) -> tuple[list[Example], int]:
    kept = [e for e in examples if e.sample.outcome is not None and e.sample.outcome.success is True]
    return kept, len(examples) - len(kept)


def _as_utc(value: datetime | str | None, field: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{field}: {value!r} is not an ISO 8601 date or datetime") from None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def select(
    examples: list[Example],
    *,
    tags: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> tuple[list[Example], int]:
    """Keep examples with any of `tags`, from any of `models`, created in [since, until)."""
    tags, models = set(tags or ()), set(models or ())
    since, until = _as_utc(since, "since"), _as_utc(until, "until")
    kept = []
    for e in examples:
        created = e.trajectory.created_at if e.trajectory is not None else None
        if tags and not tags.intersection(e.sample.tags):
            continue
        if models and e.sample.model not in models:
            continue
        if since is not None and (created is None or _as_utc(created, "created_at") < since):
            continue
        if until is not None and (created is None or _as_utc(created, "created_at") >= until):
            continue
        kept.append(e)
    return kept, len(examples) - len(kept)


def invalid_calls(examples: list[Example]) -> tuple[list[Example], list[tuple[Example, str]]]:
    """Split off examples that call an unknown tool or violate a tool's schema; say why for each."""
    kept, dropped = [], []
    for e in examples:
        problem = first_invalid_call(e)
        if problem is None:
            kept.append(e)
        else:
            dropped.append((e, problem))
    return kept, dropped


def first_invalid_call(example: Example) -> str | None:
    validators = {spec.name: jsonschema.Draft202012Validator(spec.parameters) for spec in example.sample.tools}
    for i, m in enumerate(example.sample.messages):
        for j, call in enumerate(m.tool_calls):
            where = f"messages[{i}].tool_calls[{j}]"
            if call.name not in validators:
                return f"{where}.function.name: {call.name!r} is not one of the example's tools"
            error = jsonschema.exceptions.best_match(validators[call.name].iter_errors(call.arguments))
            if error is not None:
                return f"{where}.function.arguments: does not match {call.name}'s schema: {schema_error_detail(error)}"
    return None


def conversation_key(example: Example) -> str:
    """What makes two examples "the same": the rendered messages (no call ids) and the tools."""
    messages = []
    for m in example.messages:
        item = {k: v for k, v in m.items() if k != "tool_call_id"}  # ids differ between samples
        if m.get("tool_calls"):
            item["tool_calls"] = [c["function"] for c in m["tool_calls"]]
        messages.append(item)
    tools = [spec.model_dump() for spec in example.sample.tools]
    return hashlib.sha256(canonical_json({"messages": messages, "tools": tools}).encode()).hexdigest()


def dedup_exact(examples: list[Example]) -> tuple[list[Example], int]:
    seen: set[str] = set()
    kept = []
    for e in examples:
        key = conversation_key(e)
        if key not in seen:
            seen.add(key)
            kept.append(e)
    return kept, len(examples) - len(kept)


_WORD = re.compile(r"\w+")


def _text(example: Example) -> str:
    parts = []
    for m in example.messages:
        parts.append(m.get("content") or "")
        for call in m.get("tool_calls") or []:
            parts.append(call["function"]["name"] + " " + canonical_json(call["function"]["arguments"]))
    return " ".join(parts)


def shingles(text: str, n: int = 5) -> set[int]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        words = words + [""] * (n - len(words))
    grams = {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}
    # 64-bit hashes of the shingles; blake2b is stable across runs (Python's hash() is salted).
    return {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") for g in grams}


# A prime below 2**31, so `a * x + b` for a, x, b below it fits in uint64 without overflow.
_PRIME = (1 << 31) - 1


def dedup_near(
    examples: list[Example], *, threshold: float = 0.9, num_perm: int = 64, bands: int = 16, seed: int = 0
) -> tuple[list[Example], int]:
    """Drop examples whose 5-gram Jaccard similarity to an earlier kept example is >= threshold.

    MinHash signatures (`num_perm` hash functions) are split into `bands`; examples sharing any
    band become candidates, and a candidate is dropped only if its exact Jaccard clears the
    threshold, so LSH only saves comparisons and never decides on its own.
    """
    if num_perm % bands:
        raise ConfigError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=(num_perm, 1), dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=(num_perm, 1), dtype=np.uint64)
    rows = num_perm // bands
    buckets: dict[tuple[int, bytes], list[int]] = {}
    kept_sets: list[set[int]] = []
    kept: list[Example] = []
    for e in examples:
        grams = shingles(_text(e))
        values = np.fromiter((g % _PRIME for g in grams), dtype=np.uint64, count=len(grams))
        signature = ((a * values[None, :] + b) % _PRIME).min(axis=1).tolist()
        keys = [(band, canonical_json(signature[band * rows : (band + 1) * rows]).encode()) for band in range(bands)]
        candidates = {index for key in keys for index in buckets.get(key, ())}
        if any(len(grams & kept_sets[c]) / len(grams | kept_sets[c]) >= threshold for c in candidates):
            continue
        for key in keys:
            buckets.setdefault(key, []).append(len(kept))
        kept_sets.append(grams)
        kept.append(e)
    return kept, len(examples) - len(kept)


def _user_query(example: Example) -> str:
    return next((m.content for m in example.sample.messages if m.role == "user"), "")


def _ngrams(text: str, n: int) -> set[str]:
    words = normalize_text(text).split()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _task_ids_in(path: str | Path) -> set[str]:
    """`task_id` fields of a trajectory JSONL used as an evaluation set (task files use `id`)."""
    ids = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("{"):
            try:
                value = json.loads(line).get("task_id")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(value, str):
                ids.add(value)
    return ids


def decontaminate(examples: list[Example], eval_path: str | Path, *, ngram: int = 13) -> tuple[list[Example], int]:
    """Drop examples that overlap the evaluation set in `eval_path` (a task file or trajectory JSONL)."""
    eval_tasks = load_tasks(eval_path)
    eval_ids = {t.id for t in eval_tasks} | _task_ids_in(eval_path)
    eval_queries = {normalize_text(t.query) for t in eval_tasks}
    eval_grams = set().union(*(_ngrams(t.query, ngram) for t in eval_tasks))
    kept = []
    for e in examples:
        query = _user_query(e)
        if e.sample.task_id in eval_ids or normalize_text(query) in eval_queries:
            continue
        if eval_grams and _ngrams(query, ngram) & eval_grams:
            continue
        kept.append(e)
    return kept, len(examples) - len(kept)


def max_tokens(examples: list[Example], limit: int) -> tuple[list[Example], int]:
    kept = [e for e in examples if e.tokens <= limit]
    return kept, len(examples) - len(kept)
