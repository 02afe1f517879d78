"""`distillery train`: distil a teacher into a student and write a Hugging Face model directory."""

from __future__ import annotations

import os
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from distillery.commands.options import (choice, input_file, input_file_or_dir, non_empty, number, output_dir,
                                         sqlite_store, usage_error)
from distillery.distill.config import DistillationConfig, OnPolicyConfig
from distillery.errors import ConfigError

console = Console()


# Config fields whose flag is not the field's name with dashes (the flags are older than the config).
FLAGS = {"learning_rate": "--lr", "gradient_accumulation_steps": "--grad-accum"}
# The config's fields this command does not set, and why (tests/test_config.py holds every other field to a flag).
API_ONLY = {
    "jsd_beta": "--divergence jsd keeps GKD's symmetric 0.5; other betas are an ablation, set from Python",
    "sparse_tail": "an ablation of the sparse loss (benchmarks/kd_quality.py), set from Python",
    "kd_chunk_size": "it changes memory, not results, and the default suits the students this command trains",
    "lora_alpha": "--lora-r sizes the adapter; its scale keeps the default (32), set from Python",
    "report": "experiment trackers (wandb, ...) are set up from Python, where their logins are",
    "progress": "the command line always shows the progress bar",
    "training_arguments": "further TrainingArguments, a dict for Python callers",
}


def _config_field(name: str) -> Field:
    """Field `name` as `DistillationConfig` declares it, else as `OnPolicyConfig` does (the on-policy options)."""
    for config_class in (DistillationConfig, OnPolicyConfig):
        for spec in fields(config_class):
            if spec.name == name:
                return spec
    raise KeyError(name)


def flag(name: str) -> str:
    """The command-line flag of config field `name`."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def config_option(name: str, *, default: Any = MISSING) -> Any:
    """A typer option for config field `name`: its flag, default, help and check all come from the field."""
    spec = _config_field(name)
    callback = None
    if "choices" in spec.metadata:
        callback = choice(*spec.metadata["choices"])
    elif "bounds" in spec.metadata:
        low, high, low_open, high_open = spec.metadata["bounds"]
        callback = number(low, high, low_open=low_open, high_open=high_open)
    return typer.Option(spec.default if default is MISSING else default, flag(name), callback=callback,
                        help=spec.metadata["help"])


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    # Compared by name: typer ships its own copy of click, so click's enum is not the one it returns.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


# Command options (not config fields) that only on-policy rollouts use: the tools they run.
ROLLOUT_OPTIONS = frozenset({"tools", "replay_tools"})


def config_from_options(options: dict[str, Any], given: set[str] = frozenset()) -> DistillationConfig:
    """The run's config from the parsed command line: every option named like one of its fields.

    An option left unset (None) keeps the config's default, so --temperature is 2 for the offline
    signals and 1 on-policy. A value the config refuses is a usage error that names its flag, in
    the config's words; so is an on-policy option (`given` on the command line) with another signal.
    """
    config_class = OnPolicyConfig if options["signal"] == "on-policy" else DistillationConfig
    names = {spec.name for spec in fields(config_class)}
    # An on-policy option given to another signal would be dropped without a word; say so instead.
    on_policy_only = {spec.name for spec in fields(OnPolicyConfig)} | ROLLOUT_OPTIONS
    ignored = sorted(given & (on_policy_only - names))
    if ignored:
        raise typer.BadParameter(f"only for --signal on-policy (this run is --signal {options['signal']})",
                                 param_hint=f"'{flag(ignored[0])}'")
    values = {name: value for name, value in options.items() if name in names and value is not None}
    if values.get("resume") and not values.get("save_steps"):
        values["save_steps"] = 100  # a resumed run goes on writing checkpoints, to be resumed again
    try:
        return config_class(**values)
    except ValueError as exc:
        name, _, problem = str(exc).partition(": ")
        raise typer.BadParameter(problem, param_hint=f"'{flag(name)}'") from None


def train(
    ctx: typer.Context,
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
    signal: str = config_option("signal"),
    sidecar: Path = typer.Option(None, "--sidecar", callback=input_file(text=False), help="Top-k sidecar (.topk.parquet) for --signal sparse."),
    alpha: float = config_option("alpha"),
    temperature: float = config_option("temperature", default=None),
    beta: float = config_option("beta"),
    tools: str = typer.Option(
        None, "--tools", help="On-policy: the tools rollouts run, as module:attribute (a ToolBox or a list of @tool "
        "functions). Default: the offline world's tools."
    ),
    replay_tools: str = typer.Option(
        None, "--replay-tools", help="On-policy: comma-separated tools NOT to run (paid, side effects); their calls are "
        "answered from the results recorded in --data / --from-store, and an unrecorded call gets an error result."
    ),
    max_completion_length: int = config_option("max_completion_length"),
    max_tool_turns: int = config_option("max_tool_turns"),
    teacher_params: int = config_option("teacher_params"),
    generate_with: str = config_option("generate_with"),
    vllm_server_url: str = config_option("vllm_server_url"),
    divergence: str = config_option("divergence"),
    topk: int = config_option("topk"),
    max_steps: int = config_option("max_steps"),
    epochs: float = config_option("epochs"),
    learning_rate: float = config_option("learning_rate"),
    batch_size: int = config_option("batch_size"),
    gradient_accumulation_steps: int = config_option("gradient_accumulation_steps"),
    max_length: int = config_option("max_length"),
    lora: bool = config_option("lora"),
    lora_r: int = config_option("lora_r"),
    seed: int = config_option("seed"),
    save_steps: int = config_option("save_steps"),
    resume: bool = config_option("resume"),
    logging_steps: int = config_option("logging_steps"),
    threads: int = config_option("threads"),
    self_check: int = config_option("self_check"),
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
    if signal == "on-policy":
        if (data is None) == (from_store is None):
            raise usage_error("--signal on-policy takes its prompts from exactly one of --data and --from-store")
    elif data is None or from_store is not None:
        raise usage_error(f"--signal {signal} trains on --data (--from-store is for --signal on-policy)")
    config = config_from_options(ctx.params, given={name for name in ctx.params
                                                    if _from_command_line(ctx, name)})
    _check_launch(os.environ)
    # Imported here so that `distillery --help` and the other commands never pay for torch and TRL.
    if signal == "on-policy":
        from distillery.distill.on_policy import train_on_policy

        replayed = [name.strip() for name in (replay_tools or "").split(",") if name.strip()]
        result = train_on_policy(student, out=out, teacher=teacher, data=data, from_store=from_store, tools=tools,
                                 replay_tools=replayed, config=config)
    else:
        from distillery.distill.trainer import train_student

        result = train_student(student, data, out=out, teacher=teacher, sidecar=sidecar, config=config)
    if _is_main_process():
        # Only the main process writes distillation.json, so only it reads and prints it.
        _print_summary(result, data or from_store)
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
