"""`DistillationConfig`: TRL's `SFTConfig` plus the knowledge-distillation options.

Everything `SFTConfig` (and so `transformers.TrainingArguments`) accepts works unchanged: output
directory, steps, batch size, learning rate, checkpointing, seeding, `accelerate` settings. The
fields below choose where the teacher's targets come from and how they are mixed in:

    L = alpha * L_hard + (1 - alpha) * L_soft

`L_hard` is the cross entropy on the trajectory's own tokens (what the teacher, or the expert,
wrote); `L_soft` is the divergence from the teacher's temperature-softened distribution, scaled
by T^2 (see `distillery.distill.losses`). Two defaults differ from `SFTConfig`: the loss is taken
on assistant tokens only (prompts and tool results carry none), and `gradient_checkpointing` and
`bf16` are off, since the point of a student is to be small and we also train it on CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from distillery.distill.losses import DIVERGENCES, TAIL_MODES

SIGNALS = ("sequence", "online", "sparse", "action", "on-policy")
# Signals `DistillationTrainer` (SFTTrainer-based) trains; on-policy runs on TRL's own
# DistillationTrainer instead (`distillery.distill.on_policy.train_on_policy`).
OFFLINE_SIGNALS = SIGNALS[:4]


@dataclass
class DistillationConfig(SFTConfig):
    """Training arguments for `DistillationTrainer` (TRL style: a dataclass that extends `SFTConfig`)."""

    signal: str = field(
        default="sequence",
        metadata={
            "help": "Where teacher targets come from. 'sequence': SFT on the trajectory text (the only choice for a "
            "black-box teacher such as Claude). 'online': a local teacher with the same tokenizer runs a no-grad "
            "forward on every batch (dense logits). 'sparse': top-k teacher logprobs read from a Parquet sidecar. "
            "'action': the teacher's distribution over tool calls per step, estimated from k samples. "
            "(On-policy distillation runs on TRL's DistillationTrainer: `distillery.distill.on_policy`.)",
            "choices": list(OFFLINE_SIGNALS),
        },
    )
    alpha: float = field(
        default=0.5,
        metadata={"help": "Weight of the hard-label cross entropy; 1 - alpha weights the teacher term. 1.0 is plain SFT."},
    )
    temperature: float = field(
        default=2.0,
        metadata={"help": "Softmax temperature T for both teacher and student in the soft term (scaled by T^2)."},
    )
    divergence: str = field(
        default="forward_kl",
        metadata={
            "help": "forward_kl = KL(teacher||student), mean-seeking; reverse_kl = KL(student||teacher), "
            "mode-seeking; jsd = generalized Jensen-Shannon with `jsd_beta`.",
            "choices": sorted(DIVERGENCES),
        },
    )
    jsd_beta: float = field(default=0.5, metadata={"help": "beta of the generalized JSD (only for divergence='jsd')."})
    sparse_tail: str = field(
        default="bucket",
        metadata={
            "help": "Sparse signal: 'bucket' keeps the teacher's mass outside its top k as one extra outcome; "
            "'renormalize' drops it and renormalises both distributions over the k ids.",
            "choices": list(TAIL_MODES),
        },
    )
    # 256 rows, as the loss's own default: measured at V=32k (BENCHMARKS.md, "KD training"), 1024
    # rows is most of a batch's assistant tokens, so the loss barely chunks; 256 halves its peak.
    kd_chunk_size: int = field(
        default=256,
        metadata={"help": "Tokens per chunk inside the KD loss; extra memory is O(chunk x vocab). Does not change results."},
    )

    # Defaults that differ from SFTConfig (see the module docstring).
    assistant_only_loss: bool = field(default=True, metadata={"help": "Train on assistant tokens only."})
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name mirrors it).
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias of activation_checkpointing."})
    activation_checkpointing: bool | None = field(default=False, metadata={"help": "Recompute activations in backward."})
    bf16: bool | None = field(default=False, metadata={"help": "Train in bfloat16 mixed precision."})
    report_to: str | list[str] | None = field(default="none", metadata={"help": "Experiment trackers to report to."})

    def __post_init__(self):
        super().__post_init__()
        if self.signal not in OFFLINE_SIGNALS:
            hint = " (on-policy: distillery.distill.on_policy.train_on_policy)" if self.signal == "on-policy" else ""
            raise ValueError(f"signal must be one of {', '.join(OFFLINE_SIGNALS)}, got {self.signal!r}{hint}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {', '.join(sorted(DIVERGENCES))}, got {self.divergence!r}")
        if self.sparse_tail not in TAIL_MODES:
            raise ValueError(f"sparse_tail must be one of {', '.join(TAIL_MODES)}, got {self.sparse_tail!r}")
