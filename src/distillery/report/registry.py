"""Which report is the latest for a cascade config: what `distillery serve` shows at `GET /report`.

`distillery report` (and `distillery demo`) record the report they write in
`<config's folder>/.distillery/reports.json`, keyed by the config's file name, with the report's path
relative to that folder (so the folder can move as a whole). Only the standard library is imported
here: the gateway looks reports up without loading the plotting stack.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

INDEX = Path(".distillery") / "reports.json"


def index_path(config: str | Path) -> Path:
    return Path(config).resolve().parent / INDEX


def _read(index: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def register_report(config: str | Path, report: str | Path) -> Path:
    """Record `report` as the latest report for the cascade `config`; returns the index file."""
    config, report = Path(config).resolve(), Path(report).resolve()
    index = index_path(config)
    index.parent.mkdir(parents=True, exist_ok=True)
    entries = _read(index)
    entries[config.name] = {"report": os.path.relpath(report, config.parent),
                            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = index.with_name(index.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    tmp.replace(index)
    return index


def latest_report(config: str | Path | None) -> Path | None:
    """The latest report recorded for the cascade `config`, if there is one and it still exists."""
    if not config or not Path(config).is_file():
        return None
    config = Path(config).resolve()
    entry = _read(index_path(config)).get(config.name)
    if not isinstance(entry, dict) or not isinstance(entry.get("report"), str):
        return None
    path = (config.parent / entry["report"]).resolve()
    return path if path.is_file() else None
