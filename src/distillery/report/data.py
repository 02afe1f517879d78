"""What the report shows, as plain data: the summary table, the breakdowns and the viewer's records.

Everything here is read from an eval result (`distillery eval --out runs/eval.json`) and the
trajectories saved beside it (`runs/eval.trajectories.jsonl`); nothing is re-run or re-estimated.
The one derived figure is the oracle's CPT, computed from the oracle curve the result saved with the
same function that gives the scorer's and the random router's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.errors import ConfigError
from distillery.evaluation.metrics import cpt
from distillery.evaluation.results import load_results
from distillery.routing.decision import should_escalate
from distillery.trajectory import RoutingRecord, Step, TierConfidence, ToolCall, Trajectory

# Tags the runtime adds to a trajectory; they are not a task's family.
RUNTIME_TAGS = {"escalated", "fallback_failed", "gateway"}
# The longest text shown whole in the viewer; the rest of a longer one is cut with a note saying how much.
MAX_TEXT = 4000
# The summary's columns; a row without one (the oracle has no step figures) shows "–" there.
ROW_KEYS = ("kind", "success", "pgr", "cost_per_1k_usd", "saving_vs_teacher", "step_escalation_rate",
            "task_escalation_rate", "escalation_rate_by_tier", "teacher_call_fraction")


@dataclass
class Loaded:
    """An eval result, where it came from, and its runs' trajectories (by row name, in task order)."""

    results: dict[str, Any]
    path: Path | None = None
    runs: dict[str, list[Trajectory]] = field(default_factory=dict)
    trajectories_path: Path | None = None
    missing_trajectories: str | None = None  # why the viewer is empty, when it is


def load(path: str | Path, trajectories: str | Path | None = None) -> Loaded:
    """The result at `path` and the trajectories its JSON names (or the JSONL at `trajectories`)."""
    path = Path(path)
    results = load_results(path)
    saved = results.get("trajectories") or {}
    if trajectories is None and not saved.get("path"):
        return Loaded(results, path, missing_trajectories=(
            "this result has no saved trajectories (it was written by a distillery eval before they were saved); "
            "run `distillery eval --out ...` again, or give --trajectories FILE"))
    source = Path(trajectories) if trajectories is not None else path.parent / saved["path"]
    try:
        with open(source, encoding="utf-8") as handle:
            lines = [line for line in handle if line.strip()]
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such trajectories file (named by {path})") from None
    try:
        parsed = [Trajectory.model_validate_json(line) for line in lines]
    except ValueError as exc:
        raise ConfigError(f"{source}: not a trajectory JSONL file: {str(exc).splitlines()[0]}") from None
    index = saved.get("runs") or []
    if index and sum(run["count"] for run in index) == len(parsed):  # the eval's own file, or a copy of it
        runs = {run["name"]: parsed[run["start"]:run["start"] + run["count"]] for run in index}
    else:  # a plain JSONL of trajectories: all of them are the cascade's
        runs = {cascade_row(results)["name"]: parsed}
    return Loaded(results, path, runs, source)


def cascade_row(results: dict[str, Any]) -> dict[str, Any]:
    return next(row for row in results["rows"] if row["name"].startswith("cascade"))


# --------------------------------------------------------------------------------------------------
# Families and tiers of tasks, from their tags
# --------------------------------------------------------------------------------------------------


def task_tier(tags: Sequence[str]) -> str | None:
    """`tier:2` -> "2"."""
    return next((tag.split(":", 1)[1] for tag in tags if tag.startswith("tier:")), None)


def task_family(tags: Sequence[str]) -> str | None:
    """`family:lookup` -> "lookup"; else the first plain tag (the offline world tags tasks `[family, "tier:…"]`)."""
    for tag in tags:
        if tag.startswith("family:"):
            return tag.split(":", 1)[1]
    return next((tag for tag in tags if ":" not in tag and tag not in RUNTIME_TAGS), None)


def _tier_sort_key(value: str) -> tuple:
    order = {"none": 0, "easy": 1, "medium": 2, "hard": 3}
    return (0, float(value), "") if _is_number(value) else (1, order.get(value, 99), value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def breakdowns(results: dict[str, Any], runs: dict[str, list[Trajectory]]) -> dict[str, Any]:
    """Success by task family and by task tier, for each tier alone and the cascade (where tasks are tagged)."""
    per_task = results.get("per_task") or []
    cascade_runs = runs.get(cascade_row(results)["name"], [])
    by_id = {t.task_id: t.tags for t in cascade_runs}
    tags = [task.get("tags") if task.get("tags") is not None else by_id.get(task["task_id"], []) for task in per_task]
    n_tiers = len(results["meta"]["tiers"])
    columns = [_tier_label(results, i) for i in range(n_tiers)] + ["cascade"]
    keys = [f"tier{i}_success" for i in range(n_tiers)] + ["cascade_success"]

    def table(group_of, sort_key) -> list[dict[str, Any]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for task, task_tags in zip(per_task, tags):
            group = group_of(task_tags)
            if group is not None:
                groups.setdefault(group, []).append(task)
        out = []
        for name in sorted(groups, key=sort_key):
            tasks = groups[name]
            out.append({
                "name": name, "n": len(tasks),
                "success": [sum(bool(t.get(key)) for t in tasks) / len(tasks) for key in keys],
                "escalated": sum((t.get("cascade_escalated_steps") or 0) > 0 for t in tasks) / len(tasks),
            })
        return out

    return {
        "columns": columns,
        "families": table(task_family, str),
        "tiers": table(task_tier, _tier_sort_key),
    }


def _tier_label(results: dict[str, Any], index: int) -> str:
    tiers = results["meta"]["tiers"]
    if index == 0:
        return "student alone"
    if index == len(tiers) - 1:
        return "teacher alone"
    return f"tier {index + 1} alone"


# --------------------------------------------------------------------------------------------------
# The summary table
# --------------------------------------------------------------------------------------------------


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the comparison table, with APGR and CPT where the result has them for that router.

    APGR and CPT come from the simulated deferral curve (task-level routing over the cached single-tier
    runs), so they are shown for the routers that curve describes: the scorer's (beside the cascade,
    which routes by that scorer), the random router's and the oracle's.
    """
    routing = results.get("routing") or {}
    students = [r for r in results["rows"] if r["name"].startswith("student alone")]
    teachers = [r for r in results["rows"] if r["name"].startswith("teacher alone")]
    oracle_cpt = {}
    if students and teachers and routing.get("oracle_curve"):
        student, teacher = students[0]["success"], teachers[0]["success"]
        oracle_cpt = {level: cpt([tuple(p) for p in routing["oracle_curve"]], float(level.rstrip("%")) / 100,
                                 student, teacher) for level in routing.get("cpt", {})}
    out = []
    for row in results["rows"]:
        curve: dict[str, Any] = {}
        if row["name"].startswith("cascade"):
            curve = {"apgr": routing.get("apgr"), "cpt": routing.get("cpt") or {}}
        elif row["name"].startswith("random router"):
            curve = {"apgr": routing.get("apgr_random"), "cpt": routing.get("cpt_random") or {}}
        elif row["name"].startswith("oracle"):
            curve = {"apgr": routing.get("apgr_oracle"), "cpt": oracle_cpt}
        shown = {key: row.get(key) for key in ROW_KEYS}
        out.append({**shown, **row, "curve": {"apgr": curve.get("apgr"), "cpt": curve.get("cpt") or {}}})
    return out


def cpt_levels(results: dict[str, Any]) -> list[str]:
    return list((results.get("routing") or {}).get("cpt", {}))


# --------------------------------------------------------------------------------------------------
# The trajectory viewer's records
# --------------------------------------------------------------------------------------------------


def _cut(text: str | None) -> str:
    if not text:
        return ""
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}… [{len(text) - MAX_TEXT:,} more characters not shown]"


def _calls(calls: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        call = call if isinstance(call, dict) else call.model_dump()
        if call.get("parse_error"):
            arguments = call.get("raw_arguments") or ""
        else:
            arguments = json.dumps(call.get("arguments") or {}, ensure_ascii=False, sort_keys=True)
        out.append(_compact({"name": call.get("name", ""), "args": _cut(arguments), "error": call.get("parse_error")}))
    return out


def _confidence_entry(entry: TierConfidence) -> dict[str, Any]:
    return entry.model_dump(include={"tier", "confidence", "threshold", "invalid", "score_error", "error"},
                            exclude_none=True)


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    """Leave out empty fields (None, "", [], {}, False): the viewer reads a missing one as empty, and the
    file stays small. `ok` is kept, since False there means a failed task."""
    return {key: value for key, value in record.items()
            if key == "ok" or not (value is None or value is False or (isinstance(value, (str, list, dict)) and not value))}


def step_record(step: Step) -> dict[str, Any]:
    routing = step.routing or RoutingRecord()
    thresholds = {entry.tier: entry.threshold for entry in routing.confidences}
    rejected = [_compact({
        "tier": r.tier, "model": r.model, "confidence": r.confidence,
        "threshold": thresholds.get(r.tier), "text": _cut(r.text), "calls": _calls(r.tool_calls),
    }) for r in routing.rejected]
    record: dict[str, Any] = {
        "by": step.producer or step.model, "tier": routing.tier, "confidence": step.confidence,
        "escalated": step.escalated, "thinking": _cut("\n\n".join(b.thinking for b in step.thinking if b.thinking)),
        "text": _cut(step.text), "calls": _calls(step.tool_calls),
        "results": [_compact({"name": r.name, "content": _cut(r.content), "error": r.is_error}) for r in step.tool_results],
        "confidences": [_confidence_entry(c) for c in routing.confidences],
        "rejected": rejected, "stop": step.stop_reason, "cost": step.cost_usd,
    }
    if routing.fallback_failed:
        record["fallback_failed"] = routing.fallback_failed
    if routing.abandoned_attempt is not None:
        record["abandoned"] = routing.abandoned_attempt.model_dump(exclude={"attempts_detail"})
    return _compact(record)


def trajectory_record(index: int, trajectory: Trajectory, alone: Trajectory | None,
                      thresholds: Sequence[float]) -> dict[str, Any]:
    """One cascade trajectory for the viewer; `alone` is the student's run of the same task alone.

    Under `escalate = "restart"` the abandoned attempt is recorded on the first kept step
    (`routing.abandoned_attempt.attempts_detail`) and shown as it was. Results saved before
    the cascade recorded it fall back to the student-alone run of the task, shown up to its first
    step below the threshold and labelled as that run (greedy decoding repeats it).
    """
    outcome = trajectory.outcome
    top = max((s.tier for s in trajectory.steps), default=0)
    record: dict[str, Any] = {
        "i": index, "task": trajectory.task_id, "query": _cut(trajectory.query), "status": trajectory.status,
        "error": trajectory.error, "ok": None if outcome is None else outcome.success,
        "expected": None if outcome is None or outcome.expected is None else _cut(str(outcome.expected)),
        "answer": _cut(trajectory.final_answer), "escalated": any(s.escalated for s in trajectory.steps),
        "top": top, "family": task_family(trajectory.tags), "task_tier": task_tier(trajectory.tags),
        "tags": [t for t in trajectory.tags if t not in RUNTIME_TAGS], "cost": trajectory.cost_usd,
        "steps": [step_record(step) for step in trajectory.steps],
    }
    restarted = trajectory.metadata.get("restarted")
    if restarted:
        record["restarted"] = restarted
        recorded = _recorded_attempt(trajectory)
        record["alone"] = recorded if recorded is not None else _student_attempt(alone, thresholds)
    return {**_compact(record), "steps": record["steps"]}


def _recorded_attempt(trajectory: Trajectory) -> dict[str, Any] | None:
    """The first abandoned attempt as the cascade recorded it: its steps, then the doubted proposal."""
    record = trajectory.steps[0].routing if trajectory.steps else None
    detail = record.abandoned_attempt.attempts_detail if record and record.abandoned_attempt else None
    if not detail:
        return None
    attempt = detail[0]
    proposal = attempt["rejected"]
    steps = [step_record(Step.model_validate(step)) for step in attempt["steps"]]
    steps.append(step_record(Step(text=proposal.get("text") or "", producer=proposal.get("model"),
                                  confidence=proposal.get("confidence"),
                                  tool_calls=[ToolCall.model_validate(c) for c in proposal.get("tool_calls") or []])))
    return {"model": proposal.get("model"), "threshold": proposal.get("threshold"), "doubted": len(steps) - 1,
            "steps": steps, "recorded": True}


def _student_attempt(alone: Trajectory | None, thresholds: Sequence[float]) -> dict[str, Any] | None:
    if alone is None or not thresholds:
        return None
    threshold = thresholds[0]
    steps = []
    doubted = None
    for index, step in enumerate(alone.steps):
        steps.append(step_record(step))
        if should_escalate(step.confidence, threshold):
            doubted = index
            break
    return {"model": alone.model, "threshold": threshold, "doubted": doubted, "steps": steps}


def viewer_records(results: dict[str, Any], runs: dict[str, list[Trajectory]]) -> list[dict[str, Any]]:
    cascade = runs.get(cascade_row(results)["name"], [])
    student_name = next((row["name"] for row in results["rows"] if row["name"].startswith("student alone")), None)
    student = runs.get(student_name, []) if student_name else []
    by_task = {t.task_id: t for t in student}
    thresholds = cascade_row(results).get("thresholds") or []
    return [trajectory_record(i, t, by_task.get(t.task_id), thresholds) for i, t in enumerate(cascade)]


def options(records: Sequence[dict[str, Any]], key: str) -> list[str]:
    values = {r[key] for r in records if r.get(key) is not None}
    return sorted(values, key=_tier_sort_key if key == "task_tier" else str)
