"""Evaluation results on disk: the JSON, the run trajectories beside it, and the deferral-curve PNG.

    save_results(results, "runs/eval.json")   # + runs/eval.png and runs/eval.trajectories.jsonl
    results = load_results("runs/eval.json")  # one-line ConfigError for anything that is not one
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillery.errors import ConfigError, read_json_file
from distillery.trajectory import Trajectory


def save_results(results: dict[str, Any], path: str | Path) -> tuple[Path, Path]:
    """Write the results JSON and, next to it, the deferral-curve PNG. Returns both paths.

    Results from `evaluate` also carry their trajectories: they go to `<stem>.trajectories.jsonl`
    (one `Trajectory` JSON per line, token logprobs left out), named in the JSON's `trajectories`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    trajectories = getattr(results, "trajectories", None)
    if trajectories:
        results["trajectories"] = write_run_trajectories(trajectories, path.with_suffix(".trajectories.jsonl"))
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    png = path.with_suffix(".png")
    plot_deferral_curve(results, png)
    return path, png


def write_run_trajectories(runs: dict[str, list[Trajectory]], path: Path) -> dict[str, Any]:
    """Each run's trajectories, one after the other, to a JSONL file; returns where each run's lines are."""
    index, start = [], 0
    with open(path, "w", encoding="utf-8") as handle:
        for name, trajectories in runs.items():
            for trajectory in trajectories:
                handle.write(trajectory.model_dump_json(exclude={"steps": {"__all__": {"logprobs"}}}) + "\n")
            index.append({"name": name, "start": start, "count": len(trajectories)})
            start += len(trajectories)
    return {"path": path.name, "format": "one Trajectory JSON per line (token logprobs left out), runs in order, "
                                       "each in task order", "runs": index}


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    results = read_json_file(path, what="results file")
    if not isinstance(results, dict):  # a list, a number: nothing `distillery eval` writes
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(results), "a number")
        raise ConfigError(f"{path}: not a distillery eval results file (the JSON is {kind}, not an object)")
    if results.get("kind") != "distillery.eval":
        raise ConfigError(f"{path}: not a distillery eval results file (kind={results.get('kind')!r})")
    return results


def plot_deferral_curve(results: dict[str, Any], path: str | Path) -> None:
    """Success against teacher-call fraction: the scorer's sweep, the random and oracle routers, the run points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routing = results["routing"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    xs = [p["teacher_fraction"] for p in routing["curve"]]
    ys = [p["success"] for p in routing["curve"]]
    ax.plot(xs, ys, "-o", markersize=3, label=f"{results['scorer'].get('scorer', 'scorer')} (APGR {_fmt(routing['apgr'])})")
    ax.plot(*zip(*routing["random_curve"]), "--", color="grey", label=f"random (APGR {_fmt(routing['apgr_random'])})")
    ax.plot(*zip(*routing["oracle_curve"]), ":", color="green", label=f"oracle (APGR {_fmt(routing['apgr_oracle'])})")
    for row in results["rows"]:
        if row["kind"] == "run" and row["name"].startswith(("cascade", "random")):
            marker = "*" if row["name"].startswith("cascade") else "x"
            ax.plot([row["teacher_call_fraction"]], [row["success"]], marker, markersize=11,
                    label=f"{row['name']}: run, step share to teacher")
    ax.set_xlabel("teacher-call fraction")
    ax.set_ylabel("success")
    label = " (offline world)" if results["meta"].get("offline_world") else ""
    ax.set_title(f"Deferral curve{label}, n={results['meta']['n_tasks']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
