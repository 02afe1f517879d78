"""The three output formats, and writing a whole build atomically.

* `openai`: OpenAI chat fine-tuning JSONL (`formats.openai.fine_tuning_record`), one example per line.
* `hf`: Hugging Face chat JSONL, `messages` + `tools` (JSON string) per line, for
  `load_dataset("json", data_files=...)` and TRL's `SFTTrainer`; also `task_id`,
  `trajectory_id`, and with action distributions an `action_distributions` JSON string column
  (what `distillery.distill.signals.ActionSignal` reads).
* `parquet`: the same columns as `hf` under one fixed Arrow schema, written in row groups of
  1,024, for large sets (`load_dataset("parquet", data_files=...)`, `Dataset.from_parquet`, pandas, Spark).

`StagedFiles` makes a multi-file build appear all at once or not at all: every file is first
written to a temp file in its target directory; only when all of them are complete are they
renamed into place, and on any failure the temp files are removed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.errors import ConfigError

FORMATS = {"openai": ".jsonl", "hf": ".jsonl", "parquet": ".parquet"}

_CALL = pa.struct(
    [("id", pa.string()), ("type", pa.string()), ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))]
)
HF_MESSAGE_TYPE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("tool_calls", pa.list_(_CALL)),
        ("tool_call_id", pa.string()),
        ("name", pa.string()),
    ]
)
HF_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(HF_MESSAGE_TYPE)),
        ("tools", pa.string()),
        ("task_id", pa.string()),
        ("trajectory_id", pa.string()),
    ]
)
PARQUET_ROW_GROUP = 1024


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    return format


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False))
            f.write("\n")


def write_parquet(records: list[dict[str, Any]], path: str | Path) -> None:
    """Rows under `HF_SCHEMA` (plus `action_distributions` when present), in row groups."""
    schema = HF_SCHEMA
    if records and "action_distributions" in records[0]:
        schema = schema.append(pa.field("action_distributions", pa.string()))
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for start in range(0, len(records), PARQUET_ROW_GROUP):
            writer.write_table(pa.Table.from_pylist(records[start : start + PARQUET_ROW_GROUP], schema=schema))


def write_records(records: list[dict[str, Any]], path: str | Path, format: str) -> None:
    if check_format(format) == "parquet":
        write_parquet(records, path)
    else:
        write_jsonl(records, path)


class StagedFiles:
    """Collect `(path, writer)` pairs, then write them all to temp files and rename them together.

        staged = StagedFiles()
        staged.add(out / "train.jsonl", lambda tmp: write_jsonl(rows, tmp))
        staged.commit()  # all files appear, or none do
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Callable[[str], None]]] = []

    def add(self, path: str | Path, write: Callable[[str], None]) -> None:
        self._pending.append((Path(path), write))

    def add_text(self, path: str | Path, text: str) -> None:
        self.add(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def add_bytes(self, path: str | Path, data: bytes) -> None:
        self.add(path, lambda tmp: Path(tmp).write_bytes(data))

    @property
    def pending(self) -> list[tuple[Path, Callable[[str], None]]]:
        return list(self._pending)

    def commit(self) -> list[Path]:
        temps: list[tuple[str, Path]] = []
        try:
            for path, write in self._pending:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                except OSError as exc:
                    raise ConfigError(f"{path}: cannot write here ({exc.strerror})") from None
                os.close(fd)
                temps.append((tmp, path))
                write(tmp)
            for tmp, path in temps:
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in temps:
                Path(tmp).unlink(missing_ok=True)
            raise
        written = [path for _, path in temps]
        self._pending = []
        return written
