"""`DistillationTrainingArguments`: TRL's `SFTConfig` plus the loss options, what `DistillationTrainer` reads.

Everything `SFTConfig` (and so `transformers.TrainingArguments`) accepts works unchanged: output
directory, steps, batch size, learning rate, checkpointing, seeding, `accelerate` settings. The loss
options (alpha, temperature, divergence, ...) are `distill.config.LossOptions`, declared there once
with their help and checks. Two defaults differ from `SFTConfig`: the loss is taken on assistant
tokens only (prompts and tool results carry none), and `gradient_checkpointing` and `bf16` are off,
since the point of a student is to be small and we also train it on CPUs.

`train_student` builds these from a `DistillationConfig`; build them yourself to drive
`DistillationTrainer` directly, as with any TRL trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from distillery.distill.config import LossOptions, check_options


@dataclass
class DistillationTrainingArguments(LossOptions, SFTConfig):
    """Training arguments for `DistillationTrainer` (TRL style: a dataclass that extends `SFTConfig`)."""

    # Defaults that differ from SFTConfig (see the module docstring).
    assistant_only_loss: bool = field(default=True, metadata={"help": "Train on assistant tokens only."})
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name mirrors it).
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias of activation_checkpointing."})
    activation_checkpointing: bool | None = field(default=False, metadata={"help": "Recompute activations in backward."})
    bf16: bool | None = field(default=False, metadata={"help": "Train in bfloat16 mixed precision."})
    report_to: str | list[str] | None = field(default="none", metadata={"help": "Experiment trackers to report to."})

    def __post_init__(self):
        SFTConfig.__post_init__(self)
        check_options(self, LossOptions)
