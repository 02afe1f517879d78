"""`distillery train`: distil a teacher into a student and write a Hugging Face model directory."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from distillery.commands.options import (choice, input_file, input_file_or_dir, non_empty, number, output_dir,
                                         seed as seed_range, sqlite_store, usage_error)
from distillery.errors import ConfigError

console = Console()


# distill.config.SIGNALS and distill.divergences.DIVERGENCES, spelled out so that a usage error does not
# wait for torch to import (tests/test_cli_usage_errors.py keeps them equal).
SIGNAL_CHOICES = ("sequence", "online", "sparse", "action", "on-policy")
DIVERGENCE_CHOICES = ("forward_kl", "reverse_kl", "jsd")


def train(
    student: str = typer.Option(
        ..., "--student", callback=non_empty(), help="Student to train: a URI (world:student-xs, hf:./dir) or a model directory."
    ),
    data: Path = typer.Option(
        None,
        "--data",
        callback=input_file_or_dir(),
        help="Training data in the Hugging Face chat format (`distillery build --format hf`): a .jsonl or "
        ".parquet file, or a dataset directory. Sidecars next to it (train.topk.parquet, train.actions.jsonl) "
        "are picked up for --signal sparse / action. For --signal on-policy, the prompts (each row's messages "
        "before its first assistant turn) and the recorded tool results --replay-tools answers from.",
    ),
    from_store: Path = typer.Option(
        None, "--from-store", callback=sqlite_store(must_exist=True),
        help="--signal on-policy: take the prompts (system prompt, user query) from this trajectory store instead of --data.",
    ),
    out: Path = typer.Option(
        ..., "--out", callback=output_dir(), help="Output directory: the trained model (config.json + safetensors + tokenizer), "
        "checkpoints/ and distillation.json."
    ),
    teacher: str = typer.Option(
        None,
        "--teacher",
        help="Local teacher (world:teacher, hf:./dir, a directory) sharing the student's tokenizer. Needed for "
        "--signal online and on-policy, and for sparse when there is no sidecar (its top-k is then computed once). "
        "On-policy also takes a vLLM server: vllm:http://host:8000 (it scores with prompt_logprobs). Teachers "
        "without token logprobs (anthropic:, openai:) are refused for on-policy.",
    ),
    signal: str = typer.Option(
        "sequence",
        "--signal",
        callback=choice(*SIGNAL_CHOICES),
        help="Teacher signal. sequence: SFT on the teacher's text (black-box teachers such as Claude). online: "
        "dense teacher logits per batch. sparse: top-k teacher logprobs from a sidecar. action: the teacher's "
        "distribution over tool calls per step (k samples). on-policy: the student runs its own episodes with "
        "the real tools and the teacher scores every token it wrote (reverse KL, TRL's DistillationTrainer); "
        "start from an SFT checkpoint (docs/training.md).",
    ),
    sidecar: Path = typer.Option(None, "--sidecar", callback=input_file(text=False), help="Top-k sidecar (.topk.parquet) for --signal sparse."),
    alpha: float = typer.Option(
        0.5, "--alpha", callback=number(0, 1), help="Weight of the hard-label loss: L = alpha*CE + (1-alpha)*T^2*KD. 1.0 = plain SFT."
    ),
    temperature: float = typer.Option(
        None, "--temperature", callback=number(0, low_open=True), help="Softening temperature T for teacher and student (soft term scaled by T^2); default 2. "
        "On-policy: the sampling and loss temperature, default 1."
    ),
    beta: float = typer.Option(
        1.0, "--beta", callback=number(0, 1), help="On-policy: generalized JSD beta; 1 = reverse KL(student||teacher), 0 = forward KL."
    ),
    tools: str = typer.Option(
        None, "--tools", help="On-policy: the tools rollouts run, as module:attribute (a ToolBox or a list of @tool "
        "functions). Default: the offline world's tools."
    ),
    replay_tools: str = typer.Option(
        None, "--replay-tools", help="On-policy: comma-separated tools NOT to run (paid, side effects); their calls are "
        "answered from the results recorded in --data / --from-store, and an unrecorded call gets an error result."
    ),
    max_completion_length: int = typer.Option(
        256, "--max-completion-length", callback=number(1), help="On-policy: tokens per episode, the student's and tool results'."
    ),
    max_tool_turns: int = typer.Option(8, "--max-tool-turns", callback=number(1), help="On-policy: tool-calling rounds per episode."),
    teacher_params: int = typer.Option(
        None, "--teacher-params", callback=number(1), help="On-policy with a vLLM teacher: its parameter count, for the compute ledger's FLOPs."
    ),
    divergence: str = typer.Option(
        "forward_kl",
        "--divergence",
        callback=choice(*DIVERGENCE_CHOICES),
        help="forward_kl = KL(teacher||student), covers all teacher modes; reverse_kl = KL(student||teacher), "
        "mode-seeking; jsd = generalized Jensen-Shannon (GKD).",
    ),
    topk: int = typer.Option(20, "--topk", callback=number(1), help="k when a sparse sidecar is computed from --teacher."),
    max_steps: int = typer.Option(None, "--max-steps", callback=number(1), help="Optimizer steps; overrides --epochs when set."),
    epochs: float = typer.Option(1.0, "--epochs", callback=number(0, low_open=True), help="Passes over the data (when --max-steps is not set)."),
    lr: float = typer.Option(
        None, "--lr", callback=number(0, low_open=True), help="Learning rate. Default: 1e-3 for an untrained world student or a small student pruned by `distillery student init` (1e-4 for a large one), 2e-4 with --lora, else 2e-5."
    ),
    batch_size: int = typer.Option(8, "--batch-size", callback=number(1), help="Examples per device per step."),
    grad_accum: int = typer.Option(1, "--grad-accum", callback=number(1), help="Micro-batches accumulated per optimizer step."),
    max_length: int = typer.Option(1024, "--max-length", callback=number(1), help="Tokens per example; longer ones are truncated."),
    lora: bool = typer.Option(False, "--lora", help="Train a LoRA adapter (PEFT) and merge it into the output."),
    lora_r: int = typer.Option(16, "--lora-r", callback=number(1), help="LoRA rank."),
    seed: int = typer.Option(0, "--seed", callback=seed_range(), help="Seed for initialisation, data order and dropout."),
    save_steps: int = typer.Option(None, "--save-steps", callback=number(1), help="Write a checkpoint every N steps (for --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUT/checkpoints."),
    logging_steps: int = typer.Option(10, "--logging-steps", callback=number(1), help="Log the loss and its components every N steps."),
    threads: int = typer.Option(
        0, "--threads", callback=number(0), help="CPU threads for torch. 0: one thread for a small model on a CPU (more only oversubscribe the cores), torch's default otherwise."
    ),
    self_check: int = typer.Option(
        32, "--self-check", callback=number(0), help="After training, replay this many training turns greedily and report whether the "
        "student reproduces them (valid tool-call format, exact calls, exact answers); it warns when it cannot, and "
        "serve / cascade check warn again. 0 skips it."
    ),
) -> None:
    """Train a student on what the teacher knows: its text, its logits, its action distribution, or its grades of
    the student's own episodes (on-policy).

    Works unchanged under `accelerate launch` or `torchrun` (DDP, FSDP, DeepSpeed); only the main
    process writes and prints. Example:

        distillery train --student world:student-xs --data data/train.jsonl --teacher world:teacher \\
            --signal online --alpha 0.5 --temperature 2 --out runs/xs-kd

        distillery train --student hf:runs/xs-sft --data data/train.jsonl --teacher world:teacher \\
            --signal on-policy --max-steps 200 --out runs/xs-onpolicy
    """
    # Imported here so that `distillery --help` and the other commands never pay for torch and TRL.
    from distillery.distill.config import SIGNALS
    from distillery.distill.losses import DIVERGENCES
    from distillery.distill.trainer import train_student

    if signal not in SIGNALS:
        raise ConfigError(f"--signal {signal!r}: choose one of {', '.join(SIGNALS)}")
    if signal == "on-policy":
        if (data is None) == (from_store is None):
            raise usage_error("--signal on-policy takes its prompts from exactly one of --data and --from-store")
    elif data is None or from_store is not None:
        raise usage_error(f"--signal {signal} trains on --data (--from-store is for --signal on-policy)")
    if signal == "on-policy":
        _check_launch(os.environ)
        from distillery.distill.on_policy import train_on_policy

        result = train_on_policy(
            student, out=out, teacher=teacher, data=data, from_store=from_store, tools=tools,
            replay_tools=[name.strip() for name in (replay_tools or "").split(",") if name.strip()],
            beta=beta, temperature=temperature if temperature is not None else 1.0,
            max_completion_length=max_completion_length, max_tool_turns=max_tool_turns, teacher_params=teacher_params,
            max_steps=max_steps, epochs=epochs, learning_rate=lr, batch_size=batch_size,
            gradient_accumulation_steps=grad_accum, lora=lora, lora_r=lora_r, seed=seed, save_steps=save_steps,
            resume=resume, logging_steps=logging_steps, threads=threads, self_check=self_check,
        )
        if _is_main_process():
            _print_summary(result, data or from_store)
        _leave_process_group()
        return
    temperature = 2.0 if temperature is None else temperature
    if divergence not in DIVERGENCES:
        raise ConfigError(f"--divergence {divergence!r}: choose one of {', '.join(sorted(DIVERGENCES))}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1], got {alpha}")
    if resume and not save_steps:
        save_steps = 100
    _check_launch(os.environ)
    result = train_student(
        student,
        data,
        out=out,
        teacher=teacher,
        signal=signal,
        alpha=alpha,
        temperature=temperature,
        divergence=divergence,
        sidecar=sidecar,
        topk=topk,
        max_steps=max_steps,
        epochs=epochs,
        learning_rate=lr,
        batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        max_length=max_length,
        lora=lora,
        lora_r=lora_r,
        seed=seed,
        save_steps=save_steps,
        resume=resume,
        logging_steps=logging_steps,
        threads=threads,
        self_check=self_check,
    )
    if _is_main_process():
        # Only the main process writes distillation.json (train_student), so only it reads and prints it.
        _print_summary(result, data)
    _leave_process_group()


def _leave_process_group() -> None:
    """Under a launcher, every rank meets once more and then takes the process group down itself.

    Left to interpreter exit, gloo's teardown races the other rank's and can abort a finished run
    (SIGABRT after the model was written). The CLI process ends here, so nothing needs the group
    after this; the Python API leaves it to the caller, who may train again in the same process.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# Set by every process a launcher starts as one of several (torchrun, accelerate's torchrun path, MPI).
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _check_launch(env) -> None:
    """Refuse the one launch that silently trains on a single process.

    `accelerate launch --num_processes N` without `--multi_gpu` (with `--cpu`, or on a machine
    without GPUs) uses accelerate's "simple" launcher: it starts ONE process and expects mpirun
    (`--mpirun_hostfile`) to start the others. That process gets MASTER_ADDR (set because N > 1)
    and no world size, and would train alone on the whole data with a per-device batch that was
    meant for one of N ranks.
    """
    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in env
    if launched_by_accelerate and env.get("MASTER_ADDR") and not any(env.get(v) for v in _WORLD_SIZE_VARIABLES):
        raise ConfigError(
            "accelerate launch started a single process although --num_processes asked for more (its --cpu launcher "
            "needs mpirun); on CPUs run `accelerate launch --multi_gpu --num_processes N -m distillery.cli train ...` "
            "(DDP over gloo) or `torchrun --nproc_per_node N -m -- distillery.cli train ...` (docs/training.md, Scaling out)"
        )


def _is_main_process() -> bool:
    """True in a single-process run, and on the main process (global rank 0) of a distributed one."""
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # no accelerate state (it is created by the trainer): fall back to the launchers' variables
        return int(os.environ.get("RANK", os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))) == 0


def _print_summary(out: Path, data: Path) -> None:
    import json

    summary = json.loads((out / "distillation.json").read_text())
    logged = [entry for entry in summary["log_history"] if "loss" in entry]
    table = Table(title=f"trained {summary['student']} -> {out}")
    table.add_column("step", justify="right")
    for name in ("loss", "loss_hard", "loss_soft", "loss_action"):
        if any(name in entry for entry in logged):
            table.add_column(name, justify="right")
    for entry in logged[-5:]:
        cells = [str(entry["step"])]
        for name in ("loss", "loss_hard", "loss_soft", "loss_action"):
            if any(name in e for e in logged):
                cells.append(f"{entry[name]:.4f}" if name in entry else "")
        table.add_row(*cells)
    console.print(table)
    runtime = summary.get("train_runtime_s")
    console.print(
        f"signal={summary['signal']} alpha={summary['alpha']} T={summary['temperature']} "
        f"divergence={summary['divergence']} steps={summary['global_step']}"
        + (f" in {runtime:.0f}s" if runtime else ""),
        highlight=False,
    )
    compute = summary.get("compute")
    if compute and compute.get("episodes"):
        tools = summary.get("tools") or {}
        console.print(
            f"on-policy: {compute['episodes']} episodes, {compute['student_generated_tokens']} tokens written by the "
            f"student, {tools.get('calls', 0)} tool calls ({tools.get('replayed', 0)} replayed), "
            f"{compute['teacher_scored_tokens']} tokens scored by the teacher; ledger in distillation.json",
            highlight=False,
        )
    if summary.get("rollout_note"):
        console.print(f"[bold yellow]note:[/] {summary['rollout_note']}", highlight=False, soft_wrap=True)
    check = summary.get("self_check")
    if check:
        from distillery.distill.self_check import SelfCheck

        check = SelfCheck(**check)
        console.print(check.describe(), highlight=False)
        if check.warning:
            console.print(f"[bold yellow]warning:[/] {check.warning}", highlight=False, soft_wrap=True)
            for failure in check.failures:
                console.print(f"  {failure}", highlight=False, soft_wrap=True, markup=False)
    # Printed literally: `[[tiers]]` in the hint is TOML, not rich markup.
    console.print(_next_step_hint(out, data), highlight=False, soft_wrap=True, markup=False)


def _next_step_hint(out: Path, data: Path) -> str:
    """What to run next, for the data this student was trained on."""
    kind = _task_kind_of_rows(data)
    if kind is not None and kind.next_step:
        return kind.next_step.format(model=f"hf:{out}")
    return (
        f"next: put it in a cascade.toml as the first tier ([[tiers]] model = \"hf:{out}\"), then distillery calibrate "
        "and distillery eval on your validation tasks (docs/routing.md, docs/own-agent.md); on a GPU, vllm serve "
        f"{out} serves it as an openai: tier"
    )


def _task_kind_of_rows(data: Path):
    """The registered task kind (a world's tasks) every row of a JSONL training file names; else None."""
    import json

    from distillery import registry

    path = data if data.is_file() else next(iter(sorted(data.glob("train*.jsonl"))), None) if data.is_dir() else None
    if path is None or path.suffix != ".jsonl":
        return None
    with open(path, encoding="utf-8") as handle:
        kinds = {registry.task_kind(str(json.loads(line).get("task_id") or "")) for line in handle if line.strip()}
    return kinds.pop() if len(kinds) == 1 else None


def register(app: typer.Typer) -> None:
    app.command("train")(train)
