"""`distillery demo`: the whole seed pipeline end to end, offline, in a few minutes (see docs/demo.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from distillery.commands.options import MAX_TASKS, choice, non_empty, number, output_dir, parsed, seed as seed_range


def _check_scorer(spec: str) -> None:
    from distillery.routing.confidence import get_scorer

    get_scorer(spec)


def demo(
    out: Path = typer.Option(
        Path("distillery-demo"), "--out", callback=output_dir(),
        help="Output directory for every artifact: store.db (teacher trajectories), data/train.jsonl (+ KD "
        "sidecar), student-init/ (the pruned student), student/ (the trained checkpoint), cascade.toml, runs/, results.json. Re-running with the "
        "same settings reuses the stages that finished.",
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the output directory first and run every stage again."),
    quick: bool = typer.Option(
        False, "--quick",
        help="Tiny budgets (48 train tasks, 24 validation, 24 test, 100 training steps): checks that the pipeline "
        "works in about a minute; the numbers are then only a smoke test.",
    ),
    teacher: str = typer.Option(
        "world:teacher", "--teacher", callback=non_empty(),
        help="Teacher model URI. world:teacher (default) is the bundled offline model: no network, no key. "
        "anthropic:claude-opus-4-6 needs ANTHROPIC_API_KEY (openai:gpt-4o needs OPENAI_API_KEY) and makes real, "
        "billed calls; a black-box teacher has no logits, so training switches to sequence-level KD.",
    ),
    student: str = typer.Option(
        None, "--student", callback=non_empty(),
        help="pruned (default with a local teacher): the student is cut out of the teacher (--student-layers, "
        "--student-hidden...) and distilled to recover; a model URI such as world:student-xs (the default with a "
        "black-box teacher) or world:student-s is distilled from its own random weights.",
    ),
    student_layers: int = typer.Option(None, "--student-layers", callback=number(1), help="--student pruned: decoder layers kept, chosen by importance on the training data (default 3 of the world teacher's 4)."),
    student_hidden: int = typer.Option(None, "--student-hidden", callback=number(1), help="--student pruned: hidden size kept (default: the teacher's)."),
    student_intermediate: int = typer.Option(None, "--student-intermediate", callback=number(1), help="--student pruned: MLP width kept (default: scaled with --student-hidden)."),
    student_heads: int = typer.Option(None, "--student-heads", callback=number(1), help="--student pruned: attention heads kept (default: scaled with --student-hidden)."),
    n_train: int = typer.Option(None, "--n-train", callback=number(1, MAX_TASKS), help="World train-split tasks the teacher solves for the training data (default 640; --quick 48)."),
    n_validation: int = typer.Option(None, "--n-validation", callback=number(1, MAX_TASKS), help="Validation tasks the threshold is calibrated on (default 100; --quick 24)."),
    n_test: int = typer.Option(None, "--n-test", callback=number(1, MAX_TASKS), help="Held-out test tasks for the summary table (default 100; --quick 24)."),
    steps: int = typer.Option(None, "--steps", callback=number(1), help="Training steps for the student (default 250; --quick 100)."),
    lr: float = typer.Option(
        None, "--lr", callback=number(0, low_open=True), help="Student learning rate (default: the trainer's recovery rate for a pruned student, 1e-3 for the world teacher's size; 3e-3 for a world student from random weights)."
    ),
    alpha: float = typer.Option(0.5, "--alpha", callback=number(0, 1), help="L = alpha*CE + (1-alpha)*T^2*KD: weight of the hard labels (1.0 = plain SFT)."),
    temperature: float = typer.Option(2.0, "--temperature", callback=number(0, low_open=True), help="KD softening temperature T for teacher and student."),
    target: float = typer.Option(
        None, "--target", callback=number(0, 1, low_open=True),
        help="Calibration goal: the cheapest threshold whose validation success reaches TARGET x the teacher's (default 0.97).",
    ),
    scorer: str = typer.Option(
        "logprob-mean", "--scorer", callback=parsed(_check_scorer),
        help="The student's confidence: logprob-mean (geometric-mean probability of its action tokens), "
        "logprob-min (its least likely action token), agreement:5, ... (docs/routing.md).",
    ),
    escalate: str = typer.Option(
        None, "--escalate", callback=choice("restart", "task", "step"),
        help="task (default): the teacher takes over at the doubted step, keeping the student's earlier steps and "
        "their tool results (calibration replays each possible take-over); restart: the task starts over with the "
        "teacher, from the query; step: only the doubtful step goes to the teacher and the student continues.",
    ),
    budget_usd: float = typer.Option(
        5.0, "--budget-usd", callback=number(0),
        help="Cap, in dollars, on a hosted teacher's collection spend; no new task starts past it. Ignored for "
        "world: and hf: teachers, whose costs are stand-in prices.",
    ),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help="Seed for the world's task samples and the student's training."),
    threads: int = typer.Option(
        0, "--threads", callback=number(0),
        help="torch threads for pruning and training the student; 0 (default) = one per CPU core. Where other work "
        "keeps a core busy, --threads 1 is faster.",
    ),
) -> None:
    """Run the whole pipeline on real (small) models: collect, build, prune a student, train with KD, calibrate, route, evaluate.

    Offline by default (the bundled world teacher, no API key). Examples:

    distillery demo    (about 5 minutes on 2 cores; a re-run reuses the finished stages)

    distillery demo --quick --out /tmp/d    (under a minute, tiny budgets)

    distillery demo --teacher anthropic:claude-opus-4-6    (Claude as the teacher, ANTHROPIC_API_KEY)
    """
    # Imported here so that `distillery --help` never pays for torch and transformers.
    from distillery.world.demo import DemoSettings, run_demo

    overrides = {
        "n_train": n_train, "n_validation": n_validation, "n_test": n_test, "train_steps": steps, "learning_rate": lr,
        "target": target, "escalate": escalate,
        "student_layers": student_layers, "student_hidden": student_hidden,
        "student_intermediate": student_intermediate, "student_heads": student_heads,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    common = dict(out=out, teacher=teacher, student=student, alpha=alpha, temperature=temperature,
                  scorer=scorer, budget_usd=budget_usd, seed=seed, threads=threads)
    settings = DemoSettings.quick_settings(**common, **overrides) if quick else DemoSettings(**common, **overrides)
    run_demo(settings, fresh=fresh)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
