"""`distillery world ...`: the offline world's tasks, evaluation, tokenizer and bundled teacher."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distillery.commands.options import (MAX_TASKS, choice, input_dir, input_file, non_empty, number, output_dir,
                                         output_file, seed as seed_range)
from distillery.errors import ConfigError

console = Console()

world_app = typer.Typer(
    help="The offline world: a shop with real tools, seeded tasks, an expert and a bundled teacher (world:teacher).",
    no_args_is_help=True,
)

SPLIT_HELP = ("Which fixed split: train, validation or test. Products, orders and facts never cross splits. "
              "Validation is for every choice (the default); test only for figures you publish.")
SPLITS = ("train", "validation", "test")
SEED_HELP = "Seed for which tasks are drawn from the split; the same seed always gives the same tasks."


@world_app.command("generate")
def generate(
    split: str = typer.Option("validation", "--split", callback=choice(*SPLITS), help=SPLIT_HELP),
    n: int = typer.Option(200, "--n", callback=number(1, MAX_TASKS), help="How many tasks to write."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help=SEED_HELP),
    out: Path = typer.Option(None, "--out", callback=output_file(), help="Output JSONL file. Default: world-<split>.jsonl in the current folder."),
    gold: bool = typer.Option(False, "--gold", help="Write the expert's gold trajectories (one Trajectory per line) instead of tasks."),
) -> None:
    """Write world tasks as JSONL (readable by `load_tasks` and `distillery collect --queries`)."""
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    tasks = generate_tasks(split, n, seed=seed)  # type: ignore[arg-type]
    path = out or Path(f"world-{split}{'-gold' if gold else ''}.jsonl")
    try:
        with path.open("w", encoding="utf-8") as f:
            for task in tasks:
                f.write((solve(task).model_dump_json() if gold else task.model_dump_json()) + "\n")
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write ({exc.strerror})") from None
    tiers = {}
    for task in tasks:
        tiers[task.metadata["tier"]] = tiers.get(task.metadata["tier"], 0) + 1
    mix = ", ".join(f"{tier} {count}" for tier, count in sorted(tiers.items()))
    console.print(f"wrote {len(tasks)} {'gold trajectories' if gold else 'tasks'} ({split}, seed {seed}; {mix}) to {path}")


@world_app.command("eval")
def evaluate(
    model: str = typer.Option("world:teacher", "--model", callback=non_empty(), help="Model URI to evaluate: world:teacher, hf:<dir>, openai:<name>, ..."),
    split: str = typer.Option("validation", "--split", callback=choice(*SPLITS), help=SPLIT_HELP),
    n: int = typer.Option(200, "--n", callback=number(1, MAX_TASKS), help="How many tasks from the split."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help=SEED_HELP),
    tasks_file: Path = typer.Option(None, "--tasks", callback=input_file(), help="Evaluate the tasks in this JSONL file (from `world generate`) instead of drawing from --split."),
    max_steps: int = typer.Option(8, "--max-steps", callback=number(1), help="Model calls allowed per task before it counts as unfinished."),
    concurrency: int = typer.Option(32, "--concurrency", callback=number(1, 256), help="Tasks run at once; a local model answers them in shared batches (identical greedy turns, several times faster). 1 runs one task at a time."),
    json_out: Path = typer.Option(None, "--json", callback=output_file(), help="Also write the figures to this JSON file."),
    trajectories_out: Path = typer.Option(None, "--trajectories", callback=output_file(), help="Also write every trajectory as JSONL, for inspection."),
) -> None:
    """Run a model through the agent loop on world tasks; print success by tier and family (greedy decoding)."""
    from distillery.models import load_model
    from distillery.tasks import load_tasks
    from distillery.world.evaluate import evaluate_model
    from distillery.world.tasks import generate_tasks

    tasks = load_tasks(tasks_file) if tasks_file else generate_tasks(split, n, seed=seed)  # type: ignore[arg-type]
    chat_model = load_model(model)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[ok]} ok"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        bar = progress.add_task(f"{model} on {tasks_file or split}", total=len(tasks), ok=0)
        solved = [0]

        def on_task(task, trajectory):
            solved[0] += bool(trajectory.outcome and trajectory.outcome.success)
            progress.update(bar, advance=1, ok=solved[0])

        report, trajectories = evaluate_model(chat_model, tasks, max_steps=max_steps, on_task=on_task,
                                              concurrency=concurrency)
    report.update(split=None if tasks_file else split, seed=None if tasks_file else seed,
                  tasks_file=str(tasks_file) if tasks_file else None)
    _print_report(report)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"figures written to {json_out}")
    if trajectories_out:
        with trajectories_out.open("w", encoding="utf-8") as f:
            for trajectory in trajectories:
                f.write(trajectory.model_dump_json() + "\n")


def _print_report(report: dict) -> None:
    for title, key in (("tier", "by_tier"), ("family", "by_family")):
        table = Table(title=f"{report['model']}: success by {title} (offline world)")
        table.add_column(title)
        table.add_column("tasks", justify="right")
        table.add_column("success", justify="right")
        for name, row in report[key].items():
            table.add_row(name, str(row["n"]), f"{100 * row['success']:.1f}%")
        console.print(table)
    console.print(
        f"tool-call accuracy {100 * report['tool_call_accuracy']:.1f}%  exact plans {100 * report['exact_plan']:.1f}%  "
        f"tool errors {100 * report['tool_error_rate']:.1f}%  {report['seconds_per_task']:.2f} s/task"
    )
    console.print(f"[bold]overall success: {100 * report['success']:.1f}% of {report['n']} tasks[/] (offline world)")


@world_app.command("train-teacher")
def train_teacher(
    config: str = typer.Option("teacher", "--config", callback=non_empty(), help="Model size: teacher, student-s (~1/4), student-xs (~1/16), or a config.json path."),
    out: Path = typer.Option(None, "--out", callback=output_dir(), help="Where to save the model. Default: the packaged teacher folder (replaces world:teacher)."),
    n_tasks: int = typer.Option(64000, "--n-tasks", callback=number(1, MAX_TASKS), help="Expert trajectories from the train split to learn from."),
    epochs: float = typer.Option(1.0, "--epochs", callback=number(0, low_open=True), help="Passes over those trajectories."),
    max_steps: int = typer.Option(4000, "--max-steps", callback=number(), help="Optimizer steps; <= 0 trains for --epochs instead. (The bundled teacher took 6,000 steps in eight phases: docs/world.md.)"),
    batch_size: int = typer.Option(64, "--batch-size", callback=number(1), help="Trajectories per optimizer step."),
    learning_rate: float = typer.Option(1e-3, "--lr", callback=number(0, low_open=True), help="Peak learning rate (cosine decay after warm-up). At 3e-3 the teacher did not learn to copy ids (docs/world.md)."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help="Seed for the task sample, the initial weights and the data order."),
    threads: int = typer.Option(0, "--threads", callback=number(0), help="torch CPU threads; 0 keeps torch's default."),
    bf16: bool = typer.Option(True, "--bf16/--fp32", help="bfloat16 autocast (faster on CPUs with AVX-512 BF16/AMX); weights stay float32."),
    init_from: Path = typer.Option(None, "--init-from", callback=input_dir(), help="Continue from a saved world model folder instead of random weights (a second training phase)."),
    copy_weight: float = typer.Option(5.0, "--copy-weight", callback=number(0), help="Loss weight of tokens the model must find in the query or a tool result by content (a city, the first digit of a number); 1 = plain SFT."),
    device: str = typer.Option("auto", "--device", callback=choice("auto", "cpu", "cuda"), help="auto (a CUDA GPU when torch sees one), cpu or cuda."),
    workers: int = typer.Option(0, "--workers", callback=number(0), help="Processes that build the training data; 0 = one per CPU core (at most 16)."),
    max_minutes: float = typer.Option(0.0, "--max-minutes", callback=number(0), help="Stop training after this many minutes and save what there is (reported); 0 = no limit."),
    group_by_length: bool = typer.Option(False, "--group-by-length/--random-batches", help="Draw batches at random (the default), or batch sequences of similar length: a third fewer padded tokens per step, but each batch is then mostly one task family and the loss fell about half as fast per step."),
    pack: bool = typer.Option(True, "--pack/--no-pack", help="Pack each batch's sequences into fewer rows, each attending within itself: the same examples and loss per step as --no-pack, with about a quarter fewer tokens computed."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted or --max-minutes-stopped run from its latest checkpoint (<out>/_trainer); give the same options."),
    focus: str = typer.Option("", "--focus", help="Comma-separated task families (as `distillery world eval` lists them, e.g. stock_value,convert) that --focus-tasks draws from: a continuation phase aimed at what a model still fails."),
    focus_tasks: int = typer.Option(0, "--focus-tasks", callback=number(0, MAX_TASKS), help="Extra train-split tasks from the --focus families, added to --n-tasks."),
) -> None:
    """Train a world model from scratch by SFT on expert trajectories (seeded); prints wall time.

    The defaults (4,000 steps of 64 at peak lr 1e-3, copy weight 5, random packed batches) take about 2 hours on a 2-core CPU at 1.45 to 1.85 s a step. The measured recipe, 2 h 19 min from scratch and 98.2% on test: --n-tasks 64000 --focus stock_value,convert,order_status --focus-tasks 24000 --copy-weight 20 --max-steps 4400 --seed 21. Add --max-minutes to cap a CPU run and --resume to continue it. docs/world.md ("Teacher training") says how the bundled teacher was trained.
    """
    from distillery.world.train import TrainSettings, train_world_model

    settings = TrainSettings(config=config, out=str(out) if out else "", n_tasks=n_tasks, epochs=epochs,
                             max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                             threads=threads, bf16=bf16, init_from=str(init_from) if init_from else "",
                             copy_weight=copy_weight, device=device, workers=workers, max_minutes=max_minutes,
                             group_by_length=group_by_length, pack=pack, resume=resume,
                             focus_families=tuple(name.strip() for name in focus.split(",") if name.strip()),
                             focus_tasks=focus_tasks)
    report = train_world_model(settings, progress=True)
    console.print(
        f"trained {report['config']} ({report['parameters']:,} parameters) on {report['examples']} training sequences, "
        f"{report['steps']} steps, final loss {report['final_loss'] or report['train_loss']:.4f}; wall {report['wall_seconds']:.0f} s "
        f"(data {report['data_seconds']:.0f} s) on {report['machine']}"
    )
    if report["stopped_by_deadline_at_step"] is not None:
        console.print(f"[yellow]stopped by --max-minutes at step {report['stopped_by_deadline_at_step']}; the schedule did not "
                      f"finish (run again with --resume to continue)[/]")


@world_app.command("train-tokenizer")
def train_tokenizer(
    out: Path = typer.Option(None, "--out", callback=output_dir(), help="Where to save it. Default: the packaged tokenizer folder."),
    n_tasks: int = typer.Option(4000, "--n-tasks", callback=number(1, MAX_TASKS), help="Expert transcripts from the train split to learn merges from."),
    vocab_size: int = typer.Option(1536, "--vocab-size", callback=number(256), help="Vocabulary size; the model configs must match it."),
) -> None:
    """Retrain the world tokenizer (byte-level BPE, digits split) on rendered expert transcripts."""
    from distillery.world.models import TOKENIZER_DIR
    from distillery.world.tokenizer import build_world_tokenizer, save_tokenizer

    tokenizer = build_world_tokenizer(n_tasks=n_tasks, vocab_size=vocab_size)
    save_tokenizer(tokenizer, out or TOKENIZER_DIR)
    console.print(f"tokenizer with {len(tokenizer)} tokens saved to {out or TOKENIZER_DIR}")


def register(app: typer.Typer) -> None:
    app.add_typer(world_app, name="world")
