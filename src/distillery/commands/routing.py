"""`distillery calibrate`, `distillery eval` and `distillery cascade ...`: the student runtime on the CLI."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from distillery.commands.options import (MAX_TASKS, check_text_file, choice, input_file, non_empty, number, output_dir,
                                         output_file, require, seed as seed_range, usage_error)
from distillery.errors import ConfigError

console = Console()
err_console = Console(stderr=True)
GATE_EXIT_CODE = 3

# Help text goes through rich markup (typer's default), where `[tiers]` is a style tag and vanishes:
# everything with brackets is escaped. Paragraphs after the first keep their line breaks.
CONFIG_HELP = escape("The cascade config (TOML): [[tiers]] cheapest first, teacher last; each with model = URI, "
                     "threshold (all but the last), scorer, options. Example: `distillery cascade --help`; docs/routing.md.")
TASKS_HELP = ("Tasks file (JSONL with query/expected/checker, or plain text). Evaluation needs a checker per task. "
              "Leave out to use the offline world's tasks (--world-split).")
SPLITS = ("train", "validation", "test")
SPLIT_HELP = ("Offline-world split to draw tasks from when --tasks is not given: train, validation or test. "
              "Without --tools they run against that split's sealed tools (docs/world.md).")
TOOLS_HELP = ("Tools as module:attribute (a ToolBox or list of @tool), e.g. my_tools:TOOLS for my_tools.py in the "
              "current directory. Default: the offline world's tools.")
SYSTEM_HELP = ("System prompt for every task that does not carry its own 'system' field (as in `distillery collect`; "
               "use the one your teacher collected with). Default with the world's tools: the world's prompt.")

CASCADE_TOML_EXAMPLE = """\
An example cascade.toml (tiers cheapest first, the teacher last):

    escalate = "step"
    [[tiers]]
    model = "hf:runs/student"
    threshold = 0.6
    scorer = "logprob-mean"
    options = { max_new_tokens = 256 }
    [[tiers]]
    model = "openai:gpt-4o"
    base_url = "https://api.openai.com/v1"

Every tier but the last needs a threshold: `distillery calibrate` chooses them and adds a [calibration] table.
More in docs/routing.md."""


def cascade_help(summary: str | None) -> str:
    """A command's help: its docstring, then the cascade.toml example, line by line."""
    return f"{inspect.cleandoc(summary or '')}\n\n{escape(CASCADE_TOML_EXAMPLE)}"


def print_warnings(warnings: list[str]) -> None:
    """Warnings to stderr, one per line, never re-wrapped (so they can be grepped and read whole)."""
    for warning in warnings:
        err_console.print(Text.assemble(("warning: ", "bold yellow"), warning), soft_wrap=True)


def _tasks_and_tools(tasks_path: Optional[Path], split: str, n: int, seed: int, tools_path: Optional[str]):
    """The tasks of --tasks, or `n` drawn from the registered task source's `split`, and their tools."""
    from distillery import registry
    from distillery.tasks import load_tasks
    from distillery.tools import default_tools, load_tools

    if tasks_path is not None:
        tasks = load_tasks(tasks_path)[:n] if n else load_tasks(tasks_path)
    elif n == 0:
        raise usage_error("--n 0 draws no tasks from the offline world; give --n N, or --tasks FILE (where 0 means all)")
    else:
        source = registry.default_task_kind()
        tasks = registry.resolve(source.sample)(split, n, seed)
        if tools_path is None and source.toolbox is not None:
            # A split's tasks get that split's sealed tools: no other split's row can reach the run.
            return tasks, registry.resolve(source.toolbox)(split)
    return tasks, load_tools(tools_path or default_tools(), option="--tools")


def _source_name() -> str:
    """The registered task source's name, as results and configs name where tasks came from."""
    from distillery import registry

    return registry.default_task_kind().name


def _progress() -> tuple[Progress, Any]:
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=True)
    bars: dict[str, Any] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in bars:
            bars[label] = progress.add_task(label, total=total)
        progress.update(bars[label], completed=done)

    return progress, update


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(results: dict[str, Any]) -> Table:
    """The comparison table: one row per router, the columns the issue asks for."""
    label = " (offline world)" if results["meta"].get("offline_world") else ""
    table = Table(title=f"Evaluation{label}: n={results['meta']['n_tasks']} tasks", show_lines=False)
    for column in ("router", "how", "success", "PGR", "esc. steps", "esc. tasks", "teacher share", "$/1k tasks",
                   "saving", "p50 s", "p95 s", "tool exact", "tool args", "agree"):
        table.add_column(column, justify="left" if column in ("router", "how") else "right")
    for row in results["rows"]:
        accuracy = row.get("tool_call_accuracy") or {}
        table.add_row(
            row["name"], row["kind"], _pct(row["success"]), _num(row.get("pgr"), 2),
            _pct(row.get("step_escalation_rate")), _pct(row.get("task_escalation_rate")),
            _pct(row.get("teacher_call_fraction")), f"{row['cost_per_1k_usd']:.4f}", _pct(row.get("saving_vs_teacher")),
            _num(row.get("latency_p50_s"), 2), _num(row.get("latency_p95_s"), 2),
            _pct(accuracy.get("exact")), _pct(accuracy.get("arguments")), _pct(row.get("agreement_with_teacher")),
        )
    return table


def print_report(results: dict[str, Any]) -> None:
    console.print(results_table(results))
    routing = results["routing"]
    cpt = ", ".join(f"CPT({k})={_pct(v)}" for k, v in routing["cpt"].items())
    console.print(f"APGR {_num(routing['apgr'])} (random {_num(routing['apgr_random'])}, oracle "
                  f"{_num(routing['apgr_oracle'])}); {cpt}  [{routing['method']}]")
    for level in ("step_level", "task_level"):
        quality = results["scorer"].get(level)
        if quality:
            console.print(f"scorer {results['scorer']['scorer']} {level.replace('_', '-')}: AUROC {_num(quality['auroc'])}, "
                          f"ECE {_num(quality['ece'])} over {quality['n']} ({quality['labels']})")
    calibration = results.get("calibration") or {}
    calibrated = calibration.get("calibrated") or {}
    if calibrated.get("guarantee"):
        console.print(f"thresholds certified: {calibrated['guarantee']}", highlight=False, soft_wrap=True)
    elif calibrated:
        console.print("thresholds: a point estimate on validation, with no guarantee", highlight=False)
    if "task_escalation_gap" in calibration:
        console.print(f"escalation vs calibration: tasks {calibration['task_escalation_gap']:+.3f}, "
                      f"steps {calibration.get('step_escalation_gap', float('nan')):+.3f} (realised - calibrated)")
    if results["meta"].get("stand_in_prices"):
        stand_ins = ", ".join(f"{uri.replace(':', '.', 1)} priced as {price['stand_in_for'].partition(':')[2]}"
                              for uri, price in (results["meta"].get("prices_per_mtok") or {}).items()
                              if price and price.get("stand_in_for"))
        console.print(f"[dim]costs use stand-in prices from prices.toml{f' ({stand_ins})' if stand_ins else ''}[/]")


def calibrate_command(
    config_path: Path = typer.Option(Path("cascade.toml"), "--config", "-c", callback=input_file(), help=CONFIG_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", callback=output_file(), help="Where to write the calibrated config. Default: overwrite --config."),
    target: Optional[float] = typer.Option(
        None, "--target", callback=number(0, 1.5, low_open=True),
        help="Choose the cheapest thresholds whose validation success is at least this fraction "
        "of the teacher's (e.g. 0.98; in (0, 1.5]). Default when --budget is not given: 0.98."),
    budget: Optional[float] = typer.Option(
        None, "--budget", callback=number(0), help="Instead of --target: the most successful thresholds costing at most this many "
        "dollars per 1,000 tasks on validation."),
    tasks_path: Optional[Path] = typer.Option(None, "--tasks", callback=input_file(), help=TASKS_HELP),
    split: str = typer.Option("validation", "--world-split", callback=choice(*SPLITS), help=SPLIT_HELP),
    n: int = typer.Option(200, "--n", callback=number(0, MAX_TASKS), help="How many validation tasks to use (0 = all in --tasks)."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help="Seed for drawing world tasks."),
    tools_path: Optional[str] = typer.Option(None, "--tools", help=TOOLS_HELP),
    system: Optional[str] = typer.Option(None, "--system", help=SYSTEM_HELP),
    fit_scorer: Optional[Path] = typer.Option(
        None, "--fit-scorer", callback=output_file(), help="Also fit a learned (logistic-regression) scorer for tier 1 on validation steps "
        "labelled by the teacher's action at the same state; save it here and use it in the config."),
    report: Optional[Path] = typer.Option(None, "--report", callback=output_file(), help="Write the calibration sweep (deferral curve) as JSON here."),
    concurrency: int = typer.Option(4, "--concurrency", callback=number(1), help="Tasks run at once per model."),
    delta: Optional[float] = typer.Option(
        None, "--delta", callback=number(0, 1, low_open=True, high_open=True), help="Certify the target with Learn-then-Test: success on new tasks is at least --target with "
        "probability at least 1 - DELTA (e.g. 0.1). When nothing is certified on the validation tasks, the config is "
        "left alone and the best certifiable target is reported. Without it: the point estimate on validation."),
    absolute: bool = typer.Option(
        False, "--absolute", help="With --delta: --target is an absolute success rate (e.g. 0.9) instead of a fraction "
        "of the teacher's success."),
) -> None:
    """Choose escalation thresholds on a validation split and write them into the cascade config."""
    from distillery.evaluation.calibrate import NotCertified, calibrate_cascade
    from distillery.routing.config import config_warnings, load_cascade_config, write_cascade_config
    from distillery.tools import default_system

    if target is not None and budget is not None:
        raise usage_error("give --target or --budget, not both")
    if target is None and budget is None:
        target = 0.98
    config = load_cascade_config(config_path)
    print_warnings(config_warnings(config, calibration=False))
    tasks, tools = _tasks_and_tools(tasks_path, split, n, seed, tools_path)
    progress, update = _progress()
    if delta is not None and not 0 < delta < 1:
        raise usage_error(f"--delta must be in (0, 1), got {delta}")
    if absolute and delta is None:
        raise usage_error("--absolute needs --delta (an absolute target is only certified)")
    try:
        with progress:
            new_config, result, details = calibrate_cascade(
                config, tasks, tools=tools, target=target, budget_per_task=None if budget is None else budget / 1000,
                fit_scorer=str(fit_scorer) if fit_scorer else None, concurrency=concurrency, progress=update,
                system=default_system(system, tools_path), delta=delta, absolute=absolute,
            )
    except NotCertified as exc:
        if report:  # the runs cost money: keep what they showed
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(exc.report, indent=2, default=str) + "\n")
        raise
    destination = out or config_path
    where = tasks_path or f"{_source_name()} split {split!r} (n={len(tasks)}, seed={seed})"
    write_cascade_config(new_config, destination, header=f"Calibrated by `distillery calibrate` on {where}.")
    table = Table(title=f"Deferral sweep on validation ({len(tasks)} tasks; task-level routing over cached runs)")
    for column in ("thresholds", "success", "to last tier", "step esc. (proxy)", "$/1k tasks"):
        table.add_column(column, justify="right")
    curve = sorted(result.curve, key=lambda p: (p.teacher_fraction, p.thresholds))
    shown = curve if len(curve) <= 15 else [curve[round(i * (len(curve) - 1) / 14)] for i in range(15)]
    for point in shown:
        mark = " <" if point is result.chosen else ""
        table.add_row(", ".join(f"{t:.3f}" for t in point.thresholds) + mark, _pct(point.success),
                      _pct(point.teacher_fraction), _pct(point.step_escalation_rate), f"{point.cost_per_task * 1000:.4f}")
    console.print(table)
    goal = f"{target:g} x teacher success" if result.mode == "target" else f"${budget:g}/1k tasks"
    status = "met" if result.met else "[bold red]NOT met[/] (closest setting chosen)"
    console.print(
        f"goal {goal}: {status}. thresholds {[round(t, 4) for t in result.thresholds]}: predicted success "
        f"{_pct(result.chosen.success)} (teacher {_pct(result.teacher_success)}, student {_pct(result.student_success)}), "
        f"{_pct(result.chosen.teacher_fraction)} of tasks reach the last tier, ${result.chosen.cost_per_task * 1000:.4f}/1k tasks "
        f"(teacher-only ${result.teacher_cost_per_task * 1000:.4f})."
    )
    guarantee = new_config.calibration.get("guarantee")
    console.print(f"guarantee: {guarantee}" if guarantee else
                  "[dim]point estimate on validation: new tasks miss the goal about half the time; --delta certifies it[/]",
                  highlight=False, soft_wrap=True)
    console.print(f"wrote {destination}")
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(details, indent=2) + "\n")
        console.print(f"wrote {report}")


def eval_command(
    config_path: Path = typer.Option(Path("cascade.toml"), "--config", "-c", help=CONFIG_HELP),
    out: Path = typer.Option(Path("runs/eval.json"), "--out", "-o", callback=output_file(), help="Results JSON; the deferral curve PNG is written next to it."),
    from_json: Optional[Path] = typer.Option(
        None, "--from-json", callback=input_file(), help="Re-print (and re-gate) saved results without any model call; --config and tasks are ignored."),
    tasks_path: Optional[Path] = typer.Option(None, "--tasks", callback=input_file(), help=TASKS_HELP),
    split: str = typer.Option("test", "--world-split", callback=choice(*SPLITS), help=SPLIT_HELP),
    n: int = typer.Option(200, "--n", callback=number(0, MAX_TASKS), help="How many held-out tasks (0 = all in --tasks)."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help="Seed for world tasks and the random router."),
    tools_path: Optional[str] = typer.Option(None, "--tools", help=TOOLS_HELP),
    system: Optional[str] = typer.Option(None, "--system", help=SYSTEM_HELP),
    concurrency: int = typer.Option(4, "--concurrency", callback=number(1), help="Tasks run at once per model."),
    no_reference: bool = typer.Option(
        False, "--no-reference", help="Skip asking the teacher for its action at each student state (saves one "
        "teacher call per student step; drops tool-call accuracy and step-level AUROC/ECE)."),
    no_random_run: bool = typer.Option(
        False, "--no-random-run", help="Skip running the random router through the cascade (its curve is still simulated)."),
    min_success: Optional[float] = typer.Option(None, "--min-success", callback=number(0, 1), help=f"Gate: exit {GATE_EXIT_CODE} if the cascade's success is below this (0-1)."),
    min_pgr: Optional[float] = typer.Option(None, "--min-pgr", callback=number(), help=f"Gate: exit {GATE_EXIT_CODE} if the cascade's PGR is below this."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", callback=number(0), help=f"Gate: exit {GATE_EXIT_CODE} if the cascade costs more than this many dollars per 1,000 tasks."),
) -> None:
    """Evaluate the cascade on held-out tasks beside the student, the teacher, a random router and the oracle."""
    from distillery.evaluation.evaluate import check_gates, evaluate
    from distillery.evaluation.results import load_results, save_results

    if from_json is not None:
        results = load_results(from_json)
    else:
        from distillery.routing.config import config_warnings, load_cascade_config
        from distillery.tools import default_system

        require(check_text_file, config_path, "--config")  # not checked when parsing: --from-json needs no config
        config = load_cascade_config(config_path)
        print_warnings(config_warnings(config))
        tasks, tools = _tasks_and_tools(tasks_path, split, n, seed, tools_path)
        progress, update = _progress()
        with progress:
            results = evaluate(tasks, config, tools=tools, system=default_system(system, tools_path),
                               concurrency=concurrency, reference_labels=not no_reference,
                               random_router=not no_random_run, seed=seed, progress=update)
        results["meta"]["tasks"] = str(tasks_path) if tasks_path else f"{_source_name()}:{split} n={len(tasks)} seed={seed}"
        json_path, png_path = save_results(results, out)
    print_report(results)
    if from_json is None:
        console.print(f"wrote {json_path} and {png_path}")
    failures = check_gates(results, min_success=min_success, min_pgr=min_pgr, max_cost=max_cost)
    if failures:
        for failure in failures:
            err_console.print(f"[bold red]gate failed:[/] {failure}")
        raise typer.Exit(GATE_EXIT_CODE)


cascade_app = typer.Typer(help=cascade_help("Run, check and train multi-tier cascades (tier 1 -> tier 2 -> ... -> teacher)."),
                          no_args_is_help=True)


@cascade_app.command("check")
def cascade_check(config_path: Path = typer.Argument(Path("cascade.toml"), callback=input_file(), metavar="CONFIG", help=CONFIG_HELP)) -> None:
    """Validate a cascade config and show its tiers (loads no model).

    Warns when the config was never calibrated, and when a local (hf:) student's distillation.json
    says it failed its self-check (it cannot reproduce its own training data).
    """
    from distillery.pricing import price_for
    from distillery.routing.config import config_warnings, load_cascade_config

    config = load_cascade_config(config_path)
    print_warnings(config_warnings(config))
    table = Table(title=f"{config_path}: escalate={config.escalate}, on_fallback_error={config.on_fallback_error}")
    for column in ("tier", "model", "threshold", "scorer", "$/Mtok in/out"):
        table.add_column(column)
    for index, tier in enumerate(config.tiers):
        price = price_for(tier.model)
        table.add_row(str(index + 1), tier.model, "-" if tier.threshold is None else f"{tier.threshold:g}",
                      tier.scorer or ("logprob-mean" if index < len(config.tiers) - 1 else "-"),
                      "unpriced" if price is None else f"{price.input:g}/{price.output:g}")
    console.print(table)


@cascade_app.command("run")
def cascade_run(
    query: str = typer.Argument(..., callback=non_empty(), metavar="QUERY", help="The question to answer."),
    config_path: Path = typer.Option(Path("cascade.toml"), "--config", "-c", callback=input_file(), help=CONFIG_HELP),
    tools_path: Optional[str] = typer.Option(None, "--tools", help=TOOLS_HELP),
    system: Optional[str] = typer.Option(None, "--system", help=SYSTEM_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the whole trajectory as JSON."),
) -> None:
    """Answer one query through the cascade and show who produced each step, with what confidence."""
    from distillery.routing.cascade import Cascade
    from distillery.tools import default_system, default_tools, load_tools

    tools = load_tools(tools_path or default_tools(), option="--tools")
    trajectory = Cascade.from_config(config_path, tools, system=default_system(system, tools_path)).run(query)
    if as_json:
        console.print_json(trajectory.model_dump_json())
        return
    table = Table(title=f"{trajectory.status}: {trajectory.final_answer!r}")
    for column in ("step", "producer", "confidence", "escalated", "action", "$"):
        table.add_column(column)
    for index, step in enumerate(trajectory.steps):
        action = "; ".join(c.canonical() for c in step.tool_calls) or step.text
        table.add_row(str(index + 1), step.producer or "", _num(step.confidence), "yes" if step.escalated else "",
                      action[:80], f"{step.cost_usd:.6f}")
    console.print(table)


@cascade_app.command("train")
def cascade_train(
    config_path: Path = typer.Option(Path("cascade.toml"), "--config", "-c", callback=input_file(), help=CONFIG_HELP),
    out: Path = typer.Option(Path("runs/cascade"), "--out", "-o", callback=output_dir(), help="Directory for one trained model per student tier (tier1/, tier2/, ...)."),
    tasks_path: Optional[Path] = typer.Option(None, "--tasks", callback=input_file(), help=TASKS_HELP),
    split: str = typer.Option("train", "--world-split", callback=choice(*SPLITS), help=SPLIT_HELP),
    n: int = typer.Option(500, "--n", callback=number(0, MAX_TASKS), help="Training tasks (0 = all in --tasks)."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help="Seed for world tasks and training."),
    tools_path: Optional[str] = typer.Option(None, "--tools", help=TOOLS_HELP),
    system: Optional[str] = typer.Option(None, "--system", help=SYSTEM_HELP),
    signal: str = typer.Option("sequence", "--signal", callback=choice("sequence", "online"), help="Teacher signal for each tier: sequence (SFT on the tier above's "
                               "trajectories) or online (logit KD from the tier above; needs a shared tokenizer)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", callback=number(1), help="Optimizer steps per tier (default: one epoch)."),
    concurrency: int = typer.Option(4, "--concurrency", callback=number(1), help="Tasks run at once when collecting from a tier."),
    write_config: Optional[Path] = typer.Option(None, "--write-config", callback=output_file(), help="Write a config naming the trained tiers (hf:<dir>) here; "
                                                 "calibrate it next."),
) -> None:
    """Distil each tier from the one above it, on the tasks that reach it (cascade distillation)."""
    from distillery.routing.config import load_cascade_config
    from distillery.evaluation.train_cascade import train_cascade
    from distillery.tools import default_system

    config = load_cascade_config(config_path)
    tasks, tools = _tasks_and_tools(tasks_path, split, n, seed, tools_path)
    progress, update = _progress()
    with progress:
        trained = train_cascade(config, tasks, tools=tools, out=out, signal=signal, max_steps=max_steps,
                                concurrency=concurrency, seed=seed, progress=update, write_config=write_config,
                                system=default_system(system, tools_path))
    for index, info in enumerate(trained):
        console.print(f"tier {index + 1}: {info['model']} <- {info['source']} on {info['n_trajectories']} trajectories "
                      f"({info['n_tasks']} tasks reaching it)")
    if write_config:
        console.print(f"wrote {write_config}")


def register(app: typer.Typer) -> None:
    app.command("calibrate", help=cascade_help(calibrate_command.__doc__))(calibrate_command)
    app.command("eval", help=cascade_help(eval_command.__doc__))(eval_command)
    app.add_typer(cascade_app, name="cascade")
