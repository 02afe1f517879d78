"""`distillery report`: an eval result as one self-contained HTML page, with a trajectory viewer.

    from distillery.report import write_report
    path = write_report("runs/eval.json")              # -> runs/eval.html, everything inline

The page holds the summary table, the deferral curve, the cost-quality frontier, reliability
diagrams and confidence histograms per tier, success by task family and tier, and a viewer over the
cascade's trajectories (filters, text search, and each escalation's rejected proposal beside the
step that was taken). Figures are inline SVG from matplotlib; the page is rendered from Jinja2
templates; no script, style or font is fetched from anywhere. See docs/report.md.

Imports here are lazy: the gateway reads `distillery.report.registry` without loading matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "latest_report", "register_report", "write_report"]


def __getattr__(name: str) -> Any:
    if name in ("build_report", "write_report"):
        from distillery.report import render

        return getattr(render, name)
    if name in ("latest_report", "register_report"):
        from distillery.report import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'distillery.report' has no attribute {name!r}")
