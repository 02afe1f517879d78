"""`distillery student init`: a student cut from the teacher (structured pruning), ready to distil."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from distillery.commands.options import choice, input_file_or_dir, non_empty, number, output_dir, seed as seed_range

console = Console()

# distill.init.LAYER_METRICS, spelled out so that a usage error does not wait for torch to import.
LAYER_METRIC_CHOICES = ("cosine", "loss")

student_app = typer.Typer(
    help="Students that start from the teacher: `student init` prunes a teacher's depth and width.",
    no_args_is_help=True,
)


@student_app.command("init")
def init(
    source: str = typer.Option(
        ..., "--from", callback=non_empty(),
        help="The model to prune: a URI (world:teacher, hf:./teacher) or a model directory. Llama-family "
        "decoders (llama, mistral, qwen2, qwen3).",
    ),
    calibration: Path = typer.Option(
        ..., "--calibration", callback=input_file_or_dir(),
        help="Training conversations that decide what to keep (the data you will train on, in the format "
        "`distillery train --data` takes). Rendered with the teacher's chat template; importance is measured "
        "on their activations.",
    ),
    out: Path = typer.Option(
        ..., "--out", callback=output_dir(),
        help="Output directory: a Hugging Face model (config.json, safetensors, the teacher's tokenizer and "
        "chat template) plus init.json (what was kept and why).",
    ),
    layers: int = typer.Option(None, "--layers", callback=number(1), help="Decoder layers to keep. Default: all."),
    hidden: int = typer.Option(None, "--hidden", callback=number(1), help="Hidden (residual stream) size. Default: the teacher's."),
    intermediate: int = typer.Option(
        None, "--intermediate", callback=number(1),
        help="MLP intermediate size. Default: the teacher's, scaled by --hidden / the teacher's hidden size.",
    ),
    heads: int = typer.Option(
        None, "--heads", callback=number(1),
        help="Attention heads to keep per layer; head_dim is never cut (rotary embeddings), so the attention "
        "width is heads x the teacher's head_dim. Default: scaled like --hidden.",
    ),
    kv_heads: int = typer.Option(
        None, "--kv-heads", callback=number(1),
        help="Key/value heads (grouped-query attention). Default: the fewest that keep each group no larger "
        "than the teacher's (multi-head attention stays multi-head).",
    ),
    layer_metric: str = typer.Option(
        "cosine", "--layer-metric", callback=choice(*LAYER_METRIC_CHOICES),
        help="How layers are ranked. cosine: 1 - cos(block input, block output) over the calibration tokens "
        "(one pass). loss: how much the calibration loss rises when the block alone is skipped (one pass per layer).",
    ),
    n_calibration: int = typer.Option(128, "--n-calibration", callback=number(1), help="Conversations drawn (seeded) from --calibration."),
    max_length: int = typer.Option(1024, "--max-length", callback=number(2), help="Tokens per calibration conversation; longer ones are cut."),
    batch_size: int = typer.Option(8, "--batch-size", callback=number(1), help="Calibration conversations per forward pass."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help="Seed for which conversations are drawn."),
    threads: int = typer.Option(0, "--threads", callback=number(0), help="CPU threads for torch. 0: one thread for a small model on a CPU (more only oversubscribe the cores), torch's default otherwise."),
) -> None:
    """Prune a teacher to a student's size, keeping what matters on your data (Minitron-style).

    What to keep is chosen by importance on --calibration, never by fixed indices: layers by how much
    each changes the residual stream (or the loss without it), attention heads by their contribution
    to the residual stream, MLP neurons and hidden channels by their mean activation. Grouped-query
    attention, head_dim and tied embeddings stay consistent; the output is a standard HF model.
    Then distil it back (a pruned model starts far closer to the teacher than a random one):

        distillery student init --from world:teacher --calibration data/train.jsonl \\
            --layers 3 --hidden 96 --intermediate 256 --heads 2 --out runs/s-init
        distillery train --student hf:runs/s-init --data data/train.jsonl --lr 3e-3 --out runs/s

    Measured trade-offs (cutting depth costs far less than cutting width): docs/training.md,
    "Students initialised from the teacher".
    """
    from distillery.distill.init import init_student

    result = init_student(
        source, calibration, out=out, layers=layers, hidden=hidden, intermediate=intermediate, heads=heads,
        kv_heads=kv_heads, layer_metric=layer_metric, n_calibration=n_calibration, max_length=max_length,
        batch_size=batch_size, seed=seed, threads=threads,
    )
    _print_summary(result, source, calibration)


def _print_summary(result, source: str, calibration: Path) -> None:
    table = Table(title=f"{source} -> {result.path}")
    table.add_column("")
    table.add_column("teacher", justify="right")
    table.add_column("student", justify="right")
    for key, label in (("layers", "layers"), ("hidden", "hidden"), ("intermediate", "intermediate"),
                       ("heads", "attention heads"), ("kv_heads", "key/value heads"), ("head_dim", "head_dim")):
        table.add_row(label, str(result.source[key]), str(result.shape[key]))
    table.add_row("parameters", f"{result.parameters['source']:,}", f"{result.parameters['student']:,}")
    console.print(table)
    scores = ", ".join(
        f"{index}{'*' if index in result.plan['layers'] else ''}: {score:.4g}"
        for index, score in enumerate(result.layer_scores)
    )
    console.print(f"layer importance ({result.layer_metric}; * kept): {scores}", highlight=False)
    cal = result.calibration
    console.print(
        f"calibration loss on the assistant's tokens ({cal['sequences']} sequences, {cal['assistant_tokens']:,} "
        f"tokens): teacher {cal['source_loss']:.4f}, pruned student {cal['student_loss']:.4f}, "
        f"a random student of the same size {cal['random_init_loss']:.4f}",
        highlight=False,
    )
    console.print(
        f"wrote {result.path} in {result.seconds:.1f}s. Distil it back (train reads init.json and picks a "
        f"recovery learning rate for a pruned student; --lr overrides it):\n"
        f"  distillery train --student hf:{result.path} --data {calibration} --out <dir>",
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(student_app, name="student")
