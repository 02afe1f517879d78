"""The report's figures as inline SVG, drawn with matplotlib's SVG backend.

Text stays text (`svg.fonttype = none`), so the figures are small and their labels can be searched
and read by a test; every figure gets its own id prefix, so several can sit in one HTML page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from distillery.evaluation.metrics import scorer_quality

COLORS = {"scorer": "#1f6fb2", "random": "#8a8a8a", "oracle": "#2e8b57", "cascade": "#d9480f", "random run": "#6741d9",
          "student": "#495057", "teacher": "#000000", "correct": "#2f9e44", "wrong": "#e03131", "middle": "#868e96"}
BINS = 10


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_svg(fig: Any, prefix: str) -> str:
    """The figure as an `<svg>` element: no XML prolog, ids prefixed so figures never share one."""
    plt = _pyplot()
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)  # RDF about the file: links, not content
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    svg = re.sub(r'xlink:href="#([^"]+)"', rf'xlink:href="#{prefix}-\1"', svg)
    svg = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1', svg, count=1)  # scales with its box
    return svg.replace("<svg ", f'<svg role="img" class="figure" ', 1)


def _axes(title: str, size: tuple[float, float] = (6.4, 4.2)):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size, dpi=100)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def _row(results: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    return next((row for row in results["rows"] if row["name"].startswith(prefix)), None)


def deferral_curve(results: dict[str, Any], label: str) -> str:
    """Success against the share of tasks escalated: the scorer's sweep, random and oracle, the operating point."""
    routing = results["routing"]
    fig, ax = _axes(f"Deferral curve{label}")
    xs = [p["teacher_fraction"] for p in routing["curve"]]
    ys = [p["success"] for p in routing["curve"]]
    scorer = results.get("scorer", {}).get("scorer") or "scorer"
    ax.plot(xs, ys, "-o", color=COLORS["scorer"], markersize=3, label=f"{scorer} (APGR {_fmt(routing.get('apgr'))})")
    if routing.get("random_curve"):
        ax.plot(*zip(*routing["random_curve"]), "--", color=COLORS["random"],
                label=f"random router (APGR {_fmt(routing.get('apgr_random'))})")
    if routing.get("oracle_curve"):
        ax.plot(*zip(*routing["oracle_curve"]), ":", color=COLORS["oracle"], linewidth=2,
                label=f"oracle (APGR {_fmt(routing.get('apgr_oracle'))})")
    calibration = results.get("calibration") or {}
    here = calibration.get("simulated_on_this_split")
    cascade = _row(results, "cascade")
    if here:
        thresholds = ", ".join(f"{t:.3g}" for t in here.get("thresholds", []))
        ax.plot([here["teacher_fraction"]], [here["success"]], "*", color=COLORS["cascade"], markersize=16,
                markeredgecolor="black", label=f"calibrated operating point (threshold {thresholds}), simulated", zorder=5)
    predicted = calibration.get("calibrated") or {}
    if predicted.get("predicted_task_escalation_rate") is not None and predicted.get("predicted_success") is not None:
        ax.plot([predicted["predicted_task_escalation_rate"]], [predicted["predicted_success"]], "D", markersize=8,
                markerfacecolor="none", markeredgecolor=COLORS["cascade"], label="predicted on validation", zorder=5)
    if cascade:
        ax.plot([cascade["task_escalation_rate"]], [cascade["success"]], "o", color=COLORS["cascade"], markersize=8,
                label="cascade, run (share of tasks escalated)", zorder=6)
    random_run = _row(results, "random router")
    if random_run and random_run.get("kind") == "run":
        ax.plot([random_run["task_escalation_rate"]], [random_run["success"]], "X", color=COLORS["random run"],
                markersize=9, label="random router, run", zorder=6)
    ax.set_xlabel("share of tasks escalated to the last tier")
    ax.set_ylabel("success")
    ax.set_xlim(-0.02, 1.02)
    ax.legend(fontsize=7.5, loc="lower right")
    return to_svg(fig, "deferral")


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and success (higher), cheapest first."""
    frontier: list[tuple[float, float]] = []
    for cost, success in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or success > frontier[-1][1]:
            frontier.append((cost, success))
    return frontier


def cost_quality(results: dict[str, Any], label: str) -> str:
    """Success against dollars per 1,000 tasks: every threshold of the sweep, its frontier, and each router."""
    fig, ax = _axes(f"Cost–quality frontier{label}")
    sweep = [(p["cost_per_task"] * 1000, p["success"]) for p in results["routing"]["curve"] if "cost_per_task" in p]
    if sweep:
        ax.plot(*zip(*sweep), "o", color=COLORS["scorer"], alpha=0.25, markersize=4, label="each threshold (simulated)")
        frontier = pareto(sweep)
        ax.step(*zip(*frontier), where="post", color=COLORS["scorer"], label="frontier of the sweep")
    markers = {"student": ("s", COLORS["student"]), "tier": ("s", COLORS["middle"]), "teacher": ("s", COLORS["teacher"]),
               "cascade": ("o", COLORS["cascade"]), "random": ("X", COLORS["random run"]), "oracle": ("P", COLORS["oracle"])}
    for row in results["rows"]:
        marker, color = markers.get(row["name"].split()[0], ("o", "grey"))
        how = "simulated" if row.get("kind") == "simulated" else "run"
        ax.plot([row["cost_per_1k_usd"]], [row["success"]], marker, color=color, markersize=10, markeredgecolor="white",
                label=f"{row['name']} ({how})", zorder=5)
    ax.set_xlabel("$ per 1,000 tasks" + (" (stand-in prices)" if results["meta"].get("stand_in_prices") else ""))
    ax.set_ylabel("success")
    ax.legend(fontsize=7, loc="lower right")
    return to_svg(fig, "frontier")


def reliability(confidences: Sequence[float], wrong: Sequence[bool], *, title: str, threshold: float | None,
                prefix: str) -> tuple[str, dict[str, Any]]:
    """A reliability diagram beside confidence histograms of correct and wrong steps; returns (svg, quality)."""
    plt = _pyplot()
    quality = scorer_quality(list(confidences), list(wrong))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.8), dpi=100)
    fig.suptitle(title, fontsize=11)
    centers, accuracy, counts, mean_conf = [], [], [], []
    for b in range(BINS):
        low, high = b / BINS, (b + 1) / BINS
        members = [i for i, c in enumerate(confidences) if low <= c < high or (b == BINS - 1 and c == 1.0)]
        if members:
            centers.append((low + high) / 2)
            accuracy.append(sum(not wrong[i] for i in members) / len(members))
            mean_conf.append(sum(confidences[i] for i in members) / len(members))
            counts.append(len(members))
    left.plot([0, 1], [0, 1], "--", color=COLORS["random"], label="perfectly calibrated")
    if centers:
        left.bar(centers, accuracy, width=1 / BINS * 0.9, color=COLORS["scorer"], alpha=0.75, label="share correct")
        left.plot(mean_conf, accuracy, "o", color="black", markersize=3, label="mean confidence in the bin")
    left.set_xlim(0, 1)
    left.set_ylim(0, 1.02)
    left.set_xlabel("confidence")
    left.set_ylabel("share of steps correct")
    left.set_title(f"reliability: ECE {_fmt(quality['ece'])}, AUROC {_fmt(quality['auroc'])}", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="upper left")
    edges = [i / 20 for i in range(21)]
    right.hist([c for c, w in zip(confidences, wrong) if not w], bins=edges, alpha=0.6, color=COLORS["correct"],
               label=f"correct ({sum(not w for w in wrong)})")
    right.hist([c for c, w in zip(confidences, wrong) if w], bins=edges, alpha=0.6, color=COLORS["wrong"],
               label=f"wrong ({sum(wrong)})")
    if threshold is not None:
        right.axvline(threshold, color=COLORS["cascade"], linestyle="--", label=f"threshold {threshold:.3g}")
    right.set_xlim(0, 1)
    right.set_xlabel("confidence")
    right.set_ylabel("steps")
    right.set_title("confidence of correct and wrong steps", fontsize=9)
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return to_svg(fig, prefix), quality


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
