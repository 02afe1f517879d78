"""The compute ledger: tokens each model processed in a training run, and the FLOPs they cost.

"Equal compute" comparisons between signals (SFT, online KD, on-policy) read it from each run's
`distillation.json`. FLOPs are the usual dense-transformer estimates: 2 * parameters per token
for a forward pass, 6 * parameters per token for a training step (forward and backward).
Attention's quadratic term is left out (small at these sequence lengths), and so is the prompt
re-prefill of multi-turn generation, which regenerates from the whole context after each tool
result: the generation figure is a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORWARD_FLOPS_PER_PARAM = 2
TRAINING_FLOPS_PER_PARAM = 6


def _flops(per_param: int, params: int | None, tokens: int) -> float | None:
    return None if params is None else float(per_param * params * tokens)


@dataclass
class ComputeLedger:
    """Token counts of one run (summed over processes by the caller); `to_dict` adds the FLOPs."""

    student_params: int
    teacher_params: int | None = None  # None: unknown (a server teacher), so its FLOPs are too
    episodes: int = 0  # on-policy rollouts
    student_generated_tokens: int = 0  # tokens the student sampled (tool results excluded)
    generation_context_tokens: int = 0  # prompt and tool-result tokens the student read while generating
    teacher_scored_tokens: int = 0  # positions that received a teacher distribution in the loss
    teacher_forward_tokens: int = 0  # tokens the teacher's forward passes ran over
    training_tokens: int = 0  # tokens the student's forward and backward passes ran over

    def add(self, **counts: int) -> None:
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + int(value))

    def to_dict(self) -> dict[str, Any]:
        generation_tokens = self.student_generated_tokens + self.generation_context_tokens
        out = dict(self.__dict__)
        out.update(
            student_generation_flops=_flops(FORWARD_FLOPS_PER_PARAM, self.student_params, generation_tokens),
            teacher_flops=_flops(FORWARD_FLOPS_PER_PARAM, self.teacher_params, self.teacher_forward_tokens),
            training_flops=_flops(TRAINING_FLOPS_PER_PARAM, self.student_params, self.training_tokens),
        )
        parts = [out["student_generation_flops"], out["teacher_flops"], out["training_flops"]]
        out["total_flops"] = None if any(p is None for p in parts) else sum(parts)
        return out

    def summed_over_processes(self, accelerator: Any) -> ComputeLedger:
        """The run's totals: every process counted its own share."""
        if accelerator.num_processes == 1:
            return self
        import torch

        names = [n for n in self.__dict__ if n not in ("student_params", "teacher_params")]
        local = torch.tensor([getattr(self, n) for n in names], dtype=torch.long, device=accelerator.device)
        total = accelerator.reduce(local, reduction="sum").tolist()
        return ComputeLedger(self.student_params, self.teacher_params, **dict(zip(names, map(int, total))))


def offline_ledger(signal: str, *, student_params: int, teacher_params: int | None, training_tokens: int,
                   topk_tokens: int = 0) -> ComputeLedger:
    """The ledger of an SFT or KD run on fixed data: no generation; an online teacher reads every batch.

    `topk_tokens`: the tokens a sparse run's teacher read to compute its top-k sidecar in the run
    (one forward pass over the training data); 0 for a sidecar made elsewhere, whose cost is unknown here.
    """
    counted = signal == "online" or (signal == "sparse" and topk_tokens > 0)
    ledger = ComputeLedger(student_params=student_params, teacher_params=teacher_params if counted else None)
    ledger.add(training_tokens=training_tokens, teacher_forward_tokens=topk_tokens if signal == "sparse" else 0)
    if signal == "online":
        ledger.add(teacher_forward_tokens=training_tokens)
    elif signal == "sequence":
        ledger.teacher_params = 0  # no teacher compute at training time (its text was paid for when collected)
    return ledger
