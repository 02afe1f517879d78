"""Training data for `train_student`: chat rows from files, datasets, samples or trajectories, and the
action-distribution sidecar."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distillery.errors import ConfigError, parse_json_line


def _normalise_message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message in the shape that survives Arrow: tool-call arguments as JSON strings."""
    from distillery.formats.hermes import arrow_message

    return arrow_message(message)


def chat_rows(records: Iterable[Any]) -> list[dict[str, Any]]:
    """Hugging Face chat rows from HF-format dicts, `DistillationSample`s or `Trajectory`s."""
    from distillery.formats.hermes import to_hf_messages, to_hf_tools
    from distillery.trajectory import DistillationSample, Trajectory

    rows = []
    for record in records:
        if isinstance(record, Trajectory):
            record = DistillationSample.from_trajectory(record)
        if isinstance(record, DistillationSample):
            row = {"messages": to_hf_messages(record.messages), "tools": to_hf_tools(record.tools) or []}
            if record.action_distributions is not None:
                row["action_distributions"] = record.action_distributions
            record = row
        row = {
            "messages": [_normalise_message(m) for m in record["messages"]],
            "tools": record.get("tools") if isinstance(record.get("tools"), str)
            else json.dumps(record.get("tools") or [], ensure_ascii=False),
        }
        if record.get("action_distributions") is not None:
            distributions = record["action_distributions"]
            row["action_distributions"] = (
                distributions if isinstance(distributions, str) else json.dumps(distributions, ensure_ascii=False)
            )
        rows.append(row)
    return rows


def load_training_data(data: Any):
    """A `datasets.Dataset` of chat rows from a path (.jsonl/.json/.parquet or a saved dataset dir),
    a `Dataset`, or a list of rows / `DistillationSample`s / `Trajectory`s."""
    from datasets import Dataset, load_from_disk

    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            if (path / "dataset_info.json").exists() or (path / "state.json").exists():
                return load_from_disk(str(path))
            candidates = sorted(path.glob("train*.jsonl")) or sorted(path.glob("*.jsonl"))
            if not candidates:
                raise ConfigError(f"{path}: no saved dataset and no .jsonl file in this directory")
            path = candidates[0]
        if not path.exists():
            raise ConfigError(f"{path}: no such training data file")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            records = pq.read_table(path).to_pylist()
        else:
            records = []
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    record = parse_json_line(line, f"{path}:{number}")
                    if not isinstance(record, dict) or "messages" not in record:
                        raise ConfigError(f"{path}:{number}: expected an object with 'messages' (HF chat format)")
                    records.append(record)
        data = records
    rows = chat_rows(data)
    if not rows:
        raise ConfigError("no training examples")
    return Dataset.from_list(rows)


def attach_action_file(dataset, path: Path):
    """Add the `action_distributions` column from the builder's `<split>.actions.jsonl` sidecar."""
    if "action_distributions" in dataset.column_names or not path.exists():
        return dataset
    by_example: dict[int, dict[int, dict[str, float]]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                    by_example.setdefault(int(record["example"]), {})[int(record["step"])] = record["distribution"]
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    raise ConfigError(f"{path}:{number}: expected {{example, step, distribution}}") from None
    column = []
    for row in range(len(dataset)):
        steps = by_example.get(row, {})
        column.append(json.dumps([steps.get(i) for i in range(max(steps) + 1)] if steps else []))
    return dataset.add_column("action_distributions", column)
