"""The KD study's scoring and tables (benchmarks/kd_study.py): evaluation of one model, intervals, markdown.

Evaluation (`evaluate_run`) runs the student alone through the cascade machinery with the
`logprob-mean` scorer, so each task yields both its outcome (the world's checker) and the student's
confidence: the task's confidence is its lowest step confidence (`TierRun.min_confidence`, what a
cascade acts on: one doubtful step escalates). AUROC and ECE of that confidence for predicting task
success come from `distillery.evaluation.metrics`. Teacher-forced NLL is `kd_quality.teacher_forced`.

Intervals (`interval`): the mean over seeds and a two-sided 95% Student-t interval,
mean +- t(0.975, n-1) * s / sqrt(n), with scipy's t quantile. Without scipy the normal quantile
1.96 is used instead (narrower than t for few seeds: 2.78 at n = 5), and the table says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
import subprocess
from pathlib import Path
from typing import Any

from kd_quality import TIERS, teacher_forced

EVAL_SPLITS = ("validation", "test")
SCORER = "logprob-mean"  # the student's confidence, as the demo's cascade reads it
CONCURRENCY = 32  # tasks in flight; a local model answers them in batches (BatchingModel)


def t_quantile(n: int) -> tuple[float, str]:
    """The 97.5% quantile for a 95% interval over n seeds, and what it is ("t" or "normal")."""
    try:
        from scipy.stats import t
    except ImportError:  # documented fallback: the normal approximation
        return 1.959963984540054, "normal"
    return float(t.ppf(0.975, n - 1)), "t"


def interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% interval over seeds; half-width None for fewer than two values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None, "half": None, "kind": None}
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": 1, "mean": mean, "low": None, "high": None, "half": None, "kind": None}
    quantile, kind = t_quantile(n)
    half = quantile * statistics.stdev(values) / math.sqrt(n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half, "half": half, "kind": kind}


def world_tools(split: str):
    """The world's tools for a split's tasks, sealed to that split."""
    from distillery.world.tools import toolbox

    return toolbox(split)


def world_identity() -> dict[str, Any]:
    """Which world the figures come from: its version (`distillery.world.WORLD_VERSION`), the repository
    commit and the bundled teacher's hash."""
    from distillery.world import WORLD_VERSION as version
    from distillery.world.models import TEACHER_DIR
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    weights = TEACHER_DIR / "model.safetensors"
    teacher = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else None
    return {"label": "offline world", "world": version, "commit": commit + ("+dirty" if dirty else ""),
            "teacher_sha256": teacher}


def alone_runs(model: str | Path, split: str, n: int, *, scorer: str | None = SCORER) -> tuple[list, list, list]:
    """One model alone on `generate_tasks(split, n, seed=0)`, its steps scored by `scorer`: its
    trajectories and their `TierRun`s (what routing simulations read). Local models batch their calls."""
    from distillery.evaluation.runs import TierRun, run_tiers_alone
    from distillery.models import load_model
    from distillery.models.batching import batched
    from distillery.models.blocking import run_blocking
    from distillery.world import SYSTEM_PROMPT
    from distillery.world.tasks import generate_tasks

    if split not in EVAL_SPLITS:
        raise ValueError(f"alone_runs: split {split!r}; runs are scored on {' or '.join(EVAL_SPLITS)}")
    tasks = generate_tasks(split, n, seed=0)
    uri = str(model) if str(model).startswith(("world:", "hf:")) else f"hf:{model}"
    loaded = batched(load_model(uri), CONCURRENCY)
    [trajectories] = run_blocking(lambda: run_tiers_alone([loaded], [scorer], tasks, tools=world_tools(split),
                                                          concurrency=CONCURRENCY, system=SYSTEM_PROMPT, max_steps=8))
    return tasks, trajectories, [TierRun.from_trajectory(t) for t in trajectories]


def evaluate_run(model_dir: Path, split: str, n: int, *, teacher: str | None = None) -> dict[str, Any]:
    """Success by tier, teacher-forced NLL, AUROC/ECE of the student's confidence for task success,
    the per-task runs (`tier_runs`) the cascade figures are simulated from and, given the teacher,
    AUROC/ECE of each step's confidence for "this step was wrong" (`step_quality`)."""
    from distillery.evaluation.metrics import scorer_quality
    from distillery.world.evaluate import LABEL, score

    tasks, trajectories, runs = alone_runs(model_dir, split, n)
    report = score(trajectories, tasks)
    report["calibration"] = scorer_quality([r.min_confidence for r in runs], [not r.success for r in runs])
    if teacher is not None:
        report["step_calibration"] = step_quality(trajectories, split, teacher)
    forced = teacher_forced(Path(model_dir), n, split=split)
    report["teacher_forced"] = forced
    # The overall NLL weighs the tiers present equally (each tier's mean NLL per assistant token).
    report["nll_per_token"] = statistics.fmean(v["nll_per_token"] for v in forced.values()) if forced else None
    report["tier_runs"] = [run_record(r) for r in runs]
    report.update(split=split, label=LABEL)
    return report


def step_quality(trajectories: list[Any], split: str, teacher: str) -> dict[str, Any]:
    """AUROC and ECE of the student's step confidence for "this step was wrong": a final answer is
    wrong when the checker fails the task, any other step when the teacher, in the same state, would
    act differently (`evaluation.runs.step_wrong`, as `distillery eval` labels steps)."""
    from distillery.evaluation.metrics import scorer_quality
    from distillery.evaluation.runs import reference_actions, scored_step_labels
    from distillery.models import load_model
    from distillery.models.batching import batched
    from distillery.models.blocking import run_blocking

    model = batched(load_model(teacher), CONCURRENCY)
    references = run_blocking(lambda: reference_actions(trajectories, model, world_tools(split), concurrency=CONCURRENCY))
    confidences, wrong = scored_step_labels(trajectories, references)
    return {**scorer_quality(confidences, wrong), "steps_wrong": sum(wrong)}


def run_record(run: Any) -> dict[str, Any]:
    """A `TierRun` as JSON (without take-overs: the study's cascade restarts with the teacher)."""
    record = dataclasses.asdict(run)
    record.pop("handovers")
    return record


def from_record(record: dict[str, Any]) -> Any:
    from distillery.evaluation.runs import TierRun

    return TierRun(**record)


def teacher_runs(out: Path, teacher: str, split: str, n: int) -> list[Any]:
    """The teacher alone on the split's first n tasks, run once per study and cached in OUT/teacher-runs/."""
    path = out / "teacher-runs" / f"{split}-{n}.json"
    if not path.is_file():
        _, _, runs = alone_runs(teacher, split, n, scorer=None)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([run_record(r) for r in runs]))
    return [from_record(r) for r in json.loads(path.read_text())]


def cascade_figures(student_val: list[Any], teacher_val: list[Any], student_test: list[Any], teacher_test: list[Any],
                    target: float) -> dict[str, Any]:
    """The two-tier cascade a student yields: its threshold calibrated on validation (the cheapest
    reaching `target` x the teacher's success there), then simulated on test from the cached runs;
    APGR over the student's whole test deferral curve. A doubted task restarts with the teacher
    (`escalate="restart"`), which cached single-tier runs simulate exactly with no model calls."""
    from distillery.evaluation.calibrate import calibrate
    from distillery.evaluation.metrics import apgr
    from distillery.evaluation.simulate import deferral_curve, simulate

    chosen = calibrate([student_val, teacher_val], target=target)
    on_test = simulate([student_test, teacher_test], chosen.thresholds)
    n = len(teacher_test)
    student = sum(r.success for r in student_test) / n
    teacher = sum(r.success for r in teacher_test) / n
    teacher_cost = sum(r.cost_usd for r in teacher_test) / n
    curve = [(p.teacher_fraction, p.success) for p in deferral_curve(student_test, teacher_test)]
    return {
        "target": target, "threshold": chosen.thresholds[0], "met_on_validation": chosen.met,
        "validation": {"success": chosen.chosen.success, "teacher_success": chosen.teacher_success,
                       "teacher_fraction": chosen.chosen.teacher_fraction},
        "student_success": student, "teacher_success": teacher, "success": on_test.success,
        "of_teacher": on_test.success / teacher if teacher else None,
        "cost_share": on_test.cost_per_task / teacher_cost if teacher_cost else None,
        "teacher_fraction": on_test.teacher_fraction, "apgr": apgr(curve, student, teacher),
        "escalate": "restart",
    }


# -- tables -------------------------------------------------------------------------------------


def _cell(values: list[float], digits: int = 2) -> str:
    stats = interval(values)
    if stats["mean"] is None:
        return "–"
    if stats["half"] is None:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} [{stats['low']:.{digits}f}, {stats['high']:.{digits}f}]"


def _sci(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3g}" if values else "–"


def compute_to_reach(means: dict[str, list[tuple[float, float]]]) -> dict[str, Any] | None:
    """The first saved point (mean FLOPs) at which each method's mean success reaches SFT's final mean
    success, and its ratio to SFT's own; None without an SFT curve."""
    if not means.get("sft"):
        return None
    target = means["sft"][-1][1]
    first = {method: next((flops for flops, success in points if success >= target - 1e-9), None)
             for method, points in means.items()}
    base = first["sft"]
    return {"target": target,
            "methods": {m: (f, None if f is None or not base else f / base) for m, f in first.items()}}


def load_runs(out: Path, methods) -> dict[str, list[dict[str, Any]]]:
    return {m: [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"{m}-seed*/eval.json"))]
            for m in methods}


def report(out: Path, methods) -> str:
    """Markdown: per method, mean and 95% interval over seeds, on the test split, labelled "offline world"."""
    study = json.loads((out / "study.json").read_text()) if (out / "study.json").exists() else {}
    world = study.get("world", {})
    runs = load_runs(out, methods)
    seeds = max((len(r) for r in runs.values()), default=0)
    kind = t_quantile(max(seeds, 2))[1]
    head = (f"offline world ({world.get('world', '?')}, commit {world.get('commit', '?')}, teacher "
            f"{world.get('teacher_sha256', '?')}); budget: {study.get('budget', '?')}; split: test; "
            f"mean [95% {'t' if kind == 't' else 'normal-approximation'} interval] over seeds")
    success = [f"**Success by tier** — {head}", "",
               "| method | seeds | all | " + " | ".join(TIERS) + " |", "|" + "---|" * (len(TIERS) + 3)]
    quality = ["**NLL, calibration and compute** — offline world, test split", "",
               "| method | NLL/token (teacher-forced) | task AUROC | task ECE | step AUROC | step ECE | ledger FLOPs "
               "| wall s | stopped by |", "|---|---|---|---|---|---|---|---|---|"]
    for method, evals in runs.items():
        if not evals:
            continue
        tiers = [_cell([e["by_tier"][t]["success"] for e in evals if t in e["by_tier"]]) for t in TIERS]
        success.append(f"| {method} | {len(evals)} | {_cell([e['success'] for e in evals])} | " + " | ".join(tiers) + " |")
        calib = [e["calibration"] for e in evals]
        steps = [e["step_calibration"] for e in evals if e.get("step_calibration")]
        stopped = sorted({str(e["train"]["stopped_by"]) for e in evals})
        quality.append(
            f"| {method} | {_cell([e['nll_per_token'] for e in evals], 3)} "
            f"| {_cell([c['auroc'] for c in calib if c['auroc'] is not None])} "
            f"| {_cell([c['ece'] for c in calib if c['ece'] is not None])} "
            f"| {_cell([c['auroc'] for c in steps if c['auroc'] is not None])} "
            f"| {_cell([c['ece'] for c in steps if c['ece'] is not None])} "
            f"| {_sci([e['train']['total_flops'] for e in evals])} | {_cell([e['train']['seconds'] for e in evals], 1)} "
            f"| {', '.join(stopped)} |")
    cascade = ["**Two-tier cascade each student yields** — offline world; threshold calibrated on validation "
               "(cheapest reaching the target x the teacher's success there), figures on test; a doubted task "
               "restarts with the teacher", "",
               "| method | target | student alone | cascade | % of teacher | cost vs teacher | tasks escalated "
               "| APGR | met on validation |", "|---|---|---|---|---|---|---|---|---|"]
    for method, evals in runs.items():
        figures = [e["cascade"] for e in evals if e.get("cascade")]
        if not figures:
            continue
        met = sum(bool(f["met_on_validation"]) for f in figures)
        cascade.append(
            f"| {method} | {figures[0]['target']:.2f} | {_cell([f['student_success'] for f in figures])} "
            f"| {_cell([f['success'] for f in figures])} | {_cell([f['of_teacher'] for f in figures])} "
            f"| {_cell([f['cost_share'] for f in figures])} | {_cell([f['teacher_fraction'] for f in figures])} "
            f"| {_cell([f['apgr'] for f in figures if f['apgr'] is not None])} | {met}/{len(figures)} |")
    curve = ["**Compute to quality** — offline world, validation split, mean over seeds at each saved point", "",
             "| method | budget used | ledger FLOPs | success | NLL/token |", "|---|---|---|---|---|"]
    means: dict[str, list[tuple[float, float]]] = {}  # per method: (mean FLOPs, mean success) by budget fraction
    for method, evals in runs.items():
        points: dict[float, list[dict[str, Any]]] = {}
        for e in evals:
            for point in e.get("curve", []):
                points.setdefault(point["fraction"], []).append(point)
        for fraction in sorted(points):
            group = points[fraction]
            curve.append(f"| {method} | {fraction:.2f} | {_sci([p['total_flops'] for p in group])} "
                         f"| {_cell([p['success'] for p in group])} | {_cell([p['nll_per_token'] for p in group], 3)} |")
        means[method] = [(statistics.fmean(p["total_flops"] for p in points[f]), statistics.fmean(p["success"] for p in points[f]))
                         for f in sorted(points)]
    reach = compute_to_reach(means)
    if reach:
        curve += ["", f"Ledger compute at which each method's mean validation success first reaches the SFT student's "
                      f"final one ({reach['target']:.3f}); only saved points count, so it is an upper bound "
                      "within one curve step:", "", "| method | FLOPs | x SFT's |", "|---|---|---|"]
        for method, figures in reach["methods"].items():
            flops, ratio = figures
            curve.append(f"| {method} | {'not reached' if flops is None else f'{flops:.3g}'} "
                         f"| {'–' if ratio is None else f'{ratio:.2f}'} |")
    return "\n\n".join("\n".join(table) for table in (success, quality, cascade, curve))
