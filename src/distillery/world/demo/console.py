"""What the demo prints: one short report per stage, the summary table and where to go next.

Every function here prints from a stage's saved summary, so a cached re-run prints the same lines
without loading a model.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from distillery.world.demo.queries import demo_queries, demo_tasks
from distillery.world.demo.settings import ESCALATION_WORDS, DemoSettings

OWN_AGENT_DOC = "docs/own-agent.md"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def money(value: float) -> str:
    if 0 < value < 0.001:
        return f"${value:.2g}"  # a self-hosted student's cents-per-million would print as $0.0000
    return f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def world_label(s: DemoSettings) -> str:
    return "offline world" if s.offline_world else s.teacher


def price_note(s: DemoSettings) -> str:
    return " (stand-in price: world:teacher priced as anthropic:claude-opus-4-6)" if s.offline_world else ""


def print_stage(console: Console, s: DemoSettings, name: str, summary: dict[str, Any], *, cached: bool,
                store_path: Any) -> None:
    """The lines one stage prints after it finished (or was found cached)."""
    print_ = console.print
    if name == "collect":
        if cached:
            print_query_list(console, s)
        print_(f"teacher: {summary['ok']} ok, {summary['failed']} failed, {summary['incomplete']} incomplete"
               f" ({summary['resumed']} resumed from the store); {summary['correct']}/{summary['checked']} correct;"
               f" {money(summary['cost_usd'])}{price_note(s)}; each split with its own sealed tools; store: {store_path}")
        if summary.get("stopped_by_budget"):
            print_(f"[yellow]stopped by --budget-usd {s.budget_usd}[/]")
    elif name == "build":
        removed = ", ".join(f"{k}: {v}" for k, v in summary["removed"].items()) or "none"
        print_(f"{summary['examples']} examples from {summary['inputs']} teacher trajectories (removed: {removed});"
               f" {summary['tokens_total']} tokens, p50 {summary['tokens_p50']:.0f} per example -> {summary['path']}")
        if "sidecar" in summary:
            side = summary["sidecar"]
            print_(f"KD sidecar: top-{side['k']} teacher logprobs for {100 * side['coverage']:.1f}% of assistant "
                   f"tokens, {side['bytes'] / 1024:.0f} KiB -> {side['path']}")
        else:
            print_("no KD sidecar: the teacher returns no logprobs (sequence-level KD)")
    elif name == "init":
        print_init(console, summary)
    elif name == "train":
        parts = f"loss {fmt(summary['first_loss'])} -> {fmt(summary['final_loss'])}"
        if summary.get("final_loss_soft") is not None:
            parts += f" (hard {fmt(summary['final_loss_hard'])}, soft {fmt(summary['final_loss_soft'])})"
        print_(f"{summary['signal']} KD, alpha={summary['alpha']}, T={summary['temperature']}, "
               f"lr {summary['learning_rate']:g}: {summary['steps']} steps on {summary['examples']} examples, "
               f"{parts} -> {summary['path']}")
    elif name == "calibrate":
        met = "met" if summary["met"] else "[yellow]NOT met[/] (closest setting kept)"
        print_(f"on {summary['n_tasks']} validation tasks: student alone {pct(summary['student_success'])}, "
               f"teacher alone {pct(summary['teacher_success'])}")
        print_(f"threshold {summary['threshold']:.4f} ({summary['scorer']}): the cheapest setting reaching "
               f"{summary['target']:g} x teacher success, {met}; predicts {pct(summary['predicted_success'])} "
               f"success with {pct(summary['predicted_task_escalation_rate'])} of tasks escalated -> {summary['config']}")
    elif name == "queries":
        print_queries(console, s, summary)
    elif name == "evaluate":
        print_summary(console, s, summary)


def print_init(console: Console, summary: dict[str, Any]) -> None:
    if not summary["pruned"]:
        console.print(f"student {summary['student']}: random weights, no pruning (--student pruned cuts it out of "
                      "the teacher instead)")
        return
    source, shape, parameters = summary["source"], summary["shape"], summary["parameters"]
    calibration = summary["calibration"]
    console.print(
        f"pruned {summary['from']} from {source['layers']} layers x hidden {source['hidden']} to "
        f"{shape['layers']} x {shape['hidden']} (intermediate {shape['intermediate']}, {shape['heads']} heads): "
        f"{parameters['student']:,} of {parameters['source']:,} parameters "
        f"({100 * parameters['student'] / parameters['source']:.0f}%), layers {summary['layers_kept']} kept "
        f"by {summary['layer_metric']} importance -> {summary['path']}"
    )
    console.print(f"loss on {calibration['sequences']} training conversations before any training: teacher "
                  f"{fmt(calibration['source_loss'])}, pruned {fmt(calibration['student_loss'])}, the same size from "
                  f"random weights {fmt(calibration['random_init_loss'])}")


def print_query_list(console: Console, s: DemoSettings) -> None:
    table = Table(title="the queries (queries.json; collected and trained on, as in the seed's flow)")
    table.add_column("#", justify="right")
    table.add_column("query")
    table.add_column("tier")
    for index, task in enumerate(demo_tasks(), start=1):
        table.add_row(str(index), task.query, task.metadata["tier"])
    console.print(table)
    console.print(
        f"teacher runs: {len(demo_queries())} queries + {s.n_train} train tasks (the training data), "
        f"{s.n_validation} validation and {s.n_test} test tasks (teacher-alone runs, reused below)"
    )


def print_queries(console: Console, s: DemoSettings, summary: dict[str, Any]) -> None:
    world = " (offline world)" if s.offline_world else ""
    console.print(f"student {s.trained_student_uri} distilled, teacher {s.teacher} as fallback; a step whose "
                  f"confidence is below {summary['threshold']:.4f} goes to the teacher{world}")
    for number, row in enumerate(summary["rows"], start=1):
        steps = row["student_steps"] + row["teacher_steps"]
        who = ("[green]student[/]" if row["answered_by"] == "student"
               else f"[yellow]escalated to teacher[/] ({row['teacher_steps']} of {steps} steps)")
        verdict = "[green]correct[/]" if row["correct"] else f"[red]wrong[/] (expected {row['expected']})"
        answer = row["answer"] if row["answer"] is not None else "(no answer)"
        console.print(f"[bold]{number}. {row['query']}[/]", highlight=False)
        console.print(f"   {who}, student confidence {fmt(row['min_confidence'])}: {answer!r} -> {verdict}",
                      highlight=False)
    console.print(f"[dim]confidence: the student's lowest step score ({s.scorer} over its action tokens)[/]")


def print_summary(console: Console, s: DemoSettings, summary: dict[str, Any]) -> None:
    """The per-tier table: success, the share of tasks each tier answered, cost; then the trade-off in words."""
    label = world_label(s)
    caption = (f"{summary['n_tasks']} held-out test tasks, {label}. Cost per 1,000 tasks from prices.toml"
               + ("; world:teacher at a stand-in price (anthropic:claude-opus-4-6's), the student at what serving "
                  "its parameters costs (\\[self_hosted] in prices.toml)" if s.offline_world else "")
               + ". By student / by teacher: the share of tasks whose answer that tier gave. The cascade escalates a "
               f"task when a student step scores below the threshold ({ESCALATION_WORDS[s.escalate]}). The random "
               "router sends the same share of tasks to the teacher from their start, chosen at random: expected values "
               "over the same runs, not a run.")
    table = Table(title=f"Summary ({label})", caption=caption)
    table.add_column("", no_wrap=True)
    for column in ("success", "by student", "by teacher", "$/1k tasks", "vs teacher"):
        table.add_column(column, justify="right")
    for row in summary["rows"]:
        share = row.get("answered_by_student")
        saving = row["saving_vs_teacher"]
        table.add_row(row["name"], pct(row["success"]), pct(share),
                      pct(None if share is None else 1 - share), money(row["cost_per_1k_usd"]),
                      "-" if saving is None else f"{100 * (1 - saving):.1f}%")
    console.print(table)
    rows = {row["name"]: row for row in summary["rows"]}
    if {"cascade", "teacher alone", "random router"} <= set(rows) and rows["teacher alone"]["success"]:
        cascade, teacher, random = rows["cascade"], rows["teacher alone"], rows["random router"]
        cost = "" if cascade["saving_vs_teacher"] is None else f" at {pct(1 - cascade['saving_vs_teacher'])} of its cost"
        console.print(
            f"the cascade keeps {pct(cascade['success'] / teacher['success'])} of the teacher's success{cost}, "
            f"the student answering {pct(cascade['answered_by_student'])} of tasks; a random router sending the same "
            f"{pct(1 - random['answered_by_student'])} to the teacher would keep "
            f"{pct(random['success'] / teacher['success'])}", highlight=False)


def print_artifacts(console: Console, results: dict[str, Any], *, out: Any, n_stages: int) -> None:
    table = Table(title=f"artifacts under {out}", show_header=False)
    for name, path in results["artifacts"].items():
        table.add_row(name, path)
    console.print(table)
    total = results["timing"]["wall_s"]
    cached = sum(1 for t in results["timing"]["stages"].values() if t["cached"])
    console.print(f"wall time {total:.0f}s, CPU time {results['timing']['cpu_s']:.0f}s ({cached} of {n_stages} "
                  "stages cached)")


def print_next_steps(console: Console, *, report: Any, config: Any) -> None:
    """Where to go from here: the report, the gateway over this cascade, and one's own agent."""
    console.print(f"report: [cyan]{report.path}[/] ({report.bytes / 1e6:.1f} MB, everything inline: open it in a "
                  "browser)", highlight=False)
    console.print(f"next: open the report above; serve this cascade behind an OpenAI-compatible API with "
                  f"[bold]distillery serve --cascade {config}[/]; distil your own agent: [bold]{OWN_AGENT_DOC}[/]",
                  highlight=False)


__all__ = ["fmt", "money", "pct", "print_artifacts", "print_next_steps", "print_stage", "print_summary"]
