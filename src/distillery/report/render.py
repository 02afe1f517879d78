"""Rendering: the loaded result and trajectories, through the Jinja2 templates, into one HTML file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from distillery import __version__
from distillery.report import data, plots

DEFAULT_PAGE_SIZE = 20


@dataclass
class Written:
    """A report on disk: where, how big, how many trajectories its viewer holds, and which cascade it is for."""

    path: Path
    bytes: int
    trajectories: int
    registered_for: Path | None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    return "–" if value is None else f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def _script_json(value: Any) -> Markup:
    """JSON for a `<script type="application/json">` block: compact, and unable to close the tag."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def environment() -> Environment:
    env = Environment(loader=PackageLoader("distillery.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, money=_money, script_json=_script_json)
    return env


def build_report(loaded: data.Loaded, *, page_size: int = DEFAULT_PAGE_SIZE, title: str | None = None) -> str:
    """The whole report as one HTML string."""
    results = loaded.results
    meta = results["meta"]
    label = " (offline world)" if meta.get("offline_world") else ""
    cascade = data.cascade_row(results)
    thresholds = cascade.get("thresholds") or []
    figures = {"deferral": Markup(plots.deferral_curve(results, label)),
               "frontier": Markup(plots.cost_quality(results, label))}
    reliability = []
    for entry in results.get("step_confidences") or []:
        tier = entry["tier"]
        svg, quality = plots.reliability(
            entry["confidence"], entry["wrong"], threshold=thresholds[tier] if tier < len(thresholds) else None,
            title=f"tier {tier + 1}: {entry['model']} alone, scorer {entry.get('scorer')}{label}", prefix=f"reliability{tier}")
        reliability.append({"tier": tier, "model": entry["model"], "scorer": entry.get("scorer"), "svg": Markup(svg),
                            "quality": quality, "labels": entry["labels"]})
    if not reliability and results.get("per_task"):  # an older result: task-level only
        tasks = [t for t in results["per_task"] if t.get("student_min_confidence") is not None]
        svg, quality = plots.reliability(
            [t["student_min_confidence"] for t in tasks], [not t["tier0_success"] for t in tasks],
            threshold=thresholds[0] if thresholds else None, prefix="reliability0",
            title=f"tier 1: {meta['tiers'][0]} alone, task level{label}")
        reliability.append({"tier": 0, "model": meta["tiers"][0], "scorer": (results.get("scorer") or {}).get("scorer"),
                            "svg": Markup(svg), "quality": quality,
                            "labels": "task failed; confidence = the task's lowest step confidence (this result saved no "
                                      "per-step confidences)"})
    records = data.viewer_records(results, loaded.runs)
    context = {
        "title": title or f"distillery report: {cascade['name']} on {meta['n_tasks']} tasks{label}",
        "label": label,
        "meta": meta,
        "results": results,
        "source": str(loaded.path) if loaded.path else None,
        "trajectories_source": str(loaded.trajectories_path) if loaded.trajectories_path else None,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "rows": data.summary_rows(results),
        "cpt_levels": data.cpt_levels(results),
        "cascade": cascade,
        "teacher": next((r for r in results["rows"] if r["name"].startswith("teacher alone")), None),
        "routing": results.get("routing") or {},
        "scorer": results.get("scorer") or {},
        "calibration": results.get("calibration") or {},
        "figures": figures,
        "reliability": reliability,
        "breakdowns": data.breakdowns(results, loaded.runs),
        "records": records,
        "viewer": {
            "n": len(records),
            "escalated": sum(bool(r.get("escalated")) for r in records),
            "failed": sum(r["ok"] is False for r in records),
            "families": data.options(records, "family"),
            "task_tiers": data.options(records, "task_tier"),
            "tiers": meta["tiers"],
            "page_size": page_size,
            "missing": loaded.missing_trajectories,
            "escalate": cascade.get("escalate"),
        },
    }
    return environment().get_template("report.html.j2").render(**context)


def write_report(eval_path: str | Path, out: str | Path | None = None, *, trajectories: str | Path | None = None,
                 cascade: str | Path | None = None, page_size: int = DEFAULT_PAGE_SIZE,
                 title: str | None = None) -> Written:
    """Render the report of the eval result at `eval_path` to `out` (default: beside it, `.html`).

    When `cascade` is given, or the result's config file exists, the report is recorded as the latest
    for that cascade, so `distillery serve --cascade CONFIG` serves it at `GET /report`.
    """
    from distillery.report.registry import register_report

    eval_path = Path(eval_path)
    loaded = data.load(eval_path, trajectories)
    out = Path(out) if out is not None else eval_path.with_suffix(".html")
    out.parent.mkdir(parents=True, exist_ok=True)
    html = build_report(loaded, page_size=page_size, title=title)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    config = cascade if cascade is not None else loaded.results["meta"].get("config")
    registered = None
    if config and Path(config).is_file():
        register_report(config, out)
        registered = Path(config)
    n = len(loaded.runs.get(data.cascade_row(loaded.results)["name"], []))
    return Written(out, out.stat().st_size, n, registered)
