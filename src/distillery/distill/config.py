"""The options of a training run: `DistillationConfig` for every signal, `OnPolicyConfig` for on-policy.

Each option is declared once, here, as a dataclass field with its default, its help text and its
check, in the manner of `transformers.TrainingArguments`. The Python API takes these objects
(`train_student(student, data, out=..., config=DistillationConfig(...))`, `train_on_policy`), and
`distillery train` builds its options from the same fields (flags, defaults, help) and the config
from its parsed options. A bad value raises a `ValueError` whose one line names the field; the
command line prints the same words as a usage error naming the flag.

The loss options (`LossOptions`) choose how the teacher's targets are mixed in:

    L = alpha * L_hard + (1 - alpha) * L_soft

`L_hard` is the cross entropy on the trajectory's own tokens (what the teacher, or the expert,
wrote); `L_soft` is the divergence from the teacher's temperature-softened distribution, scaled by
T^2 (see `distillery.distill.losses`). The trainer reads them from its own arguments,
`DistillationTrainingArguments` (`distill/training_arguments.py`: TRL's `SFTConfig` plus these
fields), which `train_student` builds from a config.

This module imports neither torch nor TRL: the command line reads it while parsing its options.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from distillery.checks import MAX_SEED, not_a_choice, out_of_range

SIGNALS = ("sequence", "online", "sparse", "action", "on-policy")
# Signals `DistillationTrainer` (SFTTrainer-based) trains; on-policy runs on TRL's own
# DistillationTrainer instead (`distillery.distill.on_policy.train_on_policy`).
OFFLINE_SIGNALS = SIGNALS[:4]
# The names of `divergences.DIVERGENCES` and `sparse_losses.TAIL_MODES`, spelled out so that this
# module needs no torch (tests/test_config.py keeps them equal).
DIVERGENCE_NAMES = ("forward_kl", "reverse_kl", "jsd")
TAIL_MODE_NAMES = ("bucket", "renormalize")
# Who samples the student's on-policy episodes: transformers' generate, or TRL's vLLM modes.
STUDENT_GENERATORS = ("transformers", "vllm-colocate", "vllm-server")


def option(default: Any = MISSING, *, help: str, choices: tuple[str, ...] | None = None, low: float | None = None,
           high: float | None = None, low_open: bool = False, default_factory: Any = MISSING) -> Any:
    """A dataclass field with its help text and what values it accepts (checked by `check_options`)."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    if low is not None or high is not None:
        metadata["bounds"] = (low, high, low_open, False)
    return field(default=default, default_factory=default_factory, metadata=metadata)


def check_options(options: Any, declared_by: type) -> None:
    """Raise `ValueError("<field>: <why>")` for the first field of `declared_by` whose value `options` refuses.

    None passes for a field whose type admits it (an option left unset).
    """
    for spec in fields(declared_by):
        value = getattr(options, spec.name)
        if value is None and "None" in str(spec.type):
            continue
        problem = None
        if "choices" in spec.metadata:
            problem = not_a_choice(value, spec.metadata["choices"])
        elif "bounds" in spec.metadata:
            low, high, low_open, high_open = spec.metadata["bounds"]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problem = f"must be a number, got {value!r}"
            else:
                problem = out_of_range(value, low, high, low_open=low_open, high_open=high_open)
        if problem:
            raise ValueError(f"{spec.name}: {problem}")


@dataclass(kw_only=True)
class LossOptions:
    """How the teacher's targets enter the loss; shared by `DistillationConfig` and the trainer's arguments."""

    alpha: float = option(
        0.5, low=0, high=1,
        help="Weight of the hard-label loss: L = alpha*CE + (1-alpha)*T^2*KD. 1.0 = plain SFT.",
    )
    temperature: float = option(
        2.0, low=0, low_open=True,
        help="Softening temperature T for teacher and student (the soft term is scaled by T^2); default 2. "
        "On-policy: the sampling and loss temperature, default 1.",
    )
    divergence: str = option(
        "forward_kl", choices=DIVERGENCE_NAMES,
        help="forward_kl = KL(teacher||student), covers all teacher modes; reverse_kl = KL(student||teacher), "
        "mode-seeking; jsd = generalized Jensen-Shannon (GKD).",
    )
    jsd_beta: float = option(0.5, low=0, high=1, help="beta of the generalized JSD (only for divergence jsd).")
    sparse_tail: str = option(
        "bucket", choices=TAIL_MODE_NAMES,
        help="Sparse signal: 'bucket' keeps the teacher's mass outside its top k as one extra outcome; "
        "'renormalize' drops it and renormalises both distributions over the k ids.",
    )
    # 256 rows: measured at V=32k (BENCHMARKS.md, "KD training"), 1024 rows is most of a batch's
    # assistant tokens, so the loss barely chunks; 256 halves its peak.
    kd_chunk_size: int = option(
        256, low=1, help="Tokens per chunk inside the KD loss; extra memory is O(chunk x vocab). Does not change results.",
    )

    def __post_init__(self):
        check_options(self, LossOptions)


@dataclass(kw_only=True)
class DistillationConfig(LossOptions):
    """Every option of a training run (the loss options included); `train_student` takes one.

    `training_arguments` passes further `transformers.TrainingArguments` / TRL settings through as
    they are (`{"warmup_steps": 20, "lr_scheduler_type": "cosine"}`).
    """

    signal: str = option(
        "sequence", choices=SIGNALS,
        help="Teacher signal. sequence: SFT on the teacher's text (black-box teachers such as Claude). online: "
        "dense teacher logits per batch. sparse: top-k teacher logprobs from a sidecar. action: the teacher's "
        "distribution over tool calls per step (k samples). on-policy: the student runs its own episodes with "
        "the real tools and the teacher scores every token it wrote (reverse KL, TRL's DistillationTrainer); "
        "start from an SFT checkpoint (docs/training.md).",
    )
    topk: int = option(20, low=1, help="k when a sparse sidecar is computed from the teacher.")
    max_steps: int | None = option(None, low=1, help="Optimizer steps; overrides epochs when set.")
    epochs: float = option(1.0, low=0, low_open=True, help="Passes over the data (when max steps are not set).")
    learning_rate: float | None = option(
        None, low=0, low_open=True,
        help="Learning rate. Default: 1e-3 for an untrained world student or a small student pruned by `distillery "
        "student init` (1e-4 for a large one), 2e-4 with LoRA, else 2e-5.",
    )
    batch_size: int = option(8, low=1, help="Examples per device per step.")
    gradient_accumulation_steps: int = option(1, low=1, help="Micro-batches accumulated per optimizer step.")
    max_length: int | None = option(1024, low=1, help="Tokens per example; longer ones are truncated.")
    lora: bool = option(False, help="Train a LoRA adapter (PEFT) and merge it into the output.")
    lora_r: int = option(16, low=1, help="LoRA rank.")
    lora_alpha: int = option(32, low=1, help="LoRA scaling alpha.")
    seed: int = option(0, low=0, high=MAX_SEED, help="Seed for initialisation, data order and dropout.")
    save_steps: int | None = option(None, low=1, help="Write a checkpoint every N steps (to resume from).")
    resume: bool = option(False, help="Continue from the last checkpoint in OUT/checkpoints.")
    logging_steps: int = option(10, low=1, help="Log the loss and its components every N steps.")
    threads: int = option(
        0, low=0,
        help="CPU threads for torch. 0: one thread for a small model on a CPU (more only oversubscribe the "
        "cores), torch's default otherwise.",
    )
    self_check: int = option(
        32, low=0,
        help="After training, replay this many training turns greedily and report whether the student "
        "reproduces them (valid tool-call format, exact calls, exact answers); it warns when it cannot, and "
        "serve / cascade check warn again. 0 skips it.",
    )
    report: str | list[str] = option("none", help="Experiment trackers to report to (TrainingArguments.report_to).")
    progress: bool = option(True, help="Show the progress bar.")
    training_arguments: dict[str, Any] = option(
        default_factory=dict, help="Further TrainingArguments / TRL settings, passed through as they are.",
    )

    def __post_init__(self):
        check_options(self, type(self))
        if self.signal == "on-policy" and not isinstance(self, OnPolicyConfig):
            raise ValueError("signal: 'on-policy' trains with an OnPolicyConfig (distillery.distill.on_policy"
                             ".train_on_policy)")


def _same_option(name: str, default: Any) -> Any:
    """`DistillationConfig`'s field `name` with another default (the same help and checks)."""
    spec = next(spec for spec in fields(DistillationConfig) if spec.name == name)
    return field(default=default, metadata=spec.metadata)


@dataclass(kw_only=True)
class OnPolicyConfig(DistillationConfig):
    """`DistillationConfig` for on-policy distillation, plus its own options; `train_on_policy` takes one.

    The loss is TRL's generalized JSD with `beta`; alpha, divergence, topk and the sparse options do
    not apply.
    """

    signal: str = option("on-policy", choices=("on-policy",), help="Always on-policy.")
    temperature: float = _same_option("temperature", 1.0)
    beta: float = option(
        1.0, low=0, high=1,
        help="On-policy: generalized JSD beta; 1 = reverse KL(student||teacher), 0 = forward KL. With a vLLM "
        "teacher, beta > 0 scores the sampled token only (TRL's top-1 support).",
    )
    max_completion_length: int = option(256, low=1, help="On-policy: tokens per episode, the student's and tool results'.")
    max_tool_turns: int = option(8, low=1, help="On-policy: tool-calling rounds per episode.")
    teacher_params: int | None = option(
        None, low=1, help="On-policy with a vLLM teacher: its parameter count, for the compute ledger's FLOPs.",
    )
    generate_with: str = option(
        "transformers", choices=STUDENT_GENERATORS,
        help="On-policy: what samples the student's episodes. transformers: any machine. vllm-colocate: vLLM in "
        "the training process, on its GPU. vllm-server: a `trl vllm-serve` server (--vllm-server-url), sent the "
        "student's weights each step. Both vLLM modes need a CUDA GPU and vLLM installed.",
    )
    vllm_server_url: str | None = option(
        None, help="On-policy with --generate-with vllm-server: the `trl vllm-serve` server's URL "
        "(default: TRL's, http://0.0.0.0:8000).",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.vllm_server_url and self.generate_with != "vllm-server":
            raise ValueError(f"vllm_server_url: only when generate_with is 'vllm-server' (it is {self.generate_with!r})")
