"""Stage bookkeeping: a done-marker per stage keyed by the hash of its inputs, and the cached runs.

Each stage writes `stages/<name>.json` with the hash of its inputs (its settings, the hash of the
stage before it, the teacher's weights). A re-run skips every stage whose hash still matches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillery.trajectory import Trajectory


def fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_fingerprint(uri: str) -> dict[str, Any] | None:
    """Size and mtime of a local model's weights, so a retrained teacher invalidates cached stages."""
    directory: Path | None = None
    if uri == "world:teacher":
        from distillery.world.models import TEACHER_DIR

        directory = TEACHER_DIR
    elif uri.startswith("hf:"):
        directory = Path(uri[3:])
    if directory is None:
        return None
    files = sorted(directory.glob("*.safetensors"))
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files} or None


class Stages:
    """`stages/<name>.json` markers: {"hash", "summary", "seconds"}; a marker whose hash matches means done."""

    def __init__(self, out: Path):
        self.dir = out / "stages"

    def cached(self, name: str, key: str) -> dict[str, Any] | None:
        path = self.dir / f"{name}.json"
        try:
            marker = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return marker if marker.get("hash") == key else None

    def finish(self, name: str, key: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        marker = {"hash": key, "summary": summary, "seconds": round(seconds, 1)}
        write_atomically(self.dir / f"{name}.json", json.dumps(marker, indent=2, default=str) + "\n")
        return marker


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and rename it: a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_trajectories(trajectories: Sequence[Trajectory], path: Path) -> None:
    write_atomically(path, "".join(trajectory.model_dump_json() + "\n" for trajectory in trajectories))


def read_trajectories(path: Path) -> list[Trajectory]:
    with open(path, encoding="utf-8") as handle:
        return [Trajectory.model_validate_json(line) for line in handle if line.strip()]


__all__ = ["Stages", "fingerprint", "read_trajectories", "weights_fingerprint", "write_atomically",
           "write_trajectories"]
