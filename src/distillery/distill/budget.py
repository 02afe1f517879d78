"""Stop a training run at a compute or a wall-clock budget, read from its live compute ledger.

    from distillery.distill.budget import ComputeBudget
    budget = ComputeBudget(flops=2e12, seconds=600)
    train_student(..., callbacks=[budget])          # or train_on_policy(..., callbacks=[budget])
    budget.stopped_by                               # "flops", "seconds" or None (max_steps came first)

After every optimizer step the callback reads the run's ledger (`ledger.py`: the same figures
`distillation.json` records under "compute", kept live by `train_student` and `train_on_policy`)
and stops training at the first step whose total reaches `flops`: a run overshoots its budget by
less than one step's compute. `seconds` counts from `started` (a `time.perf_counter()` value, so a
caller can count model loading and a top-k pass too) or else from the start of `train()`.
`spent_flops` and `spent_seconds` are charged up front (e.g. an on-policy run's SFT warm start).

`milestones` are fractions of the budget at which the model is saved, to `save_dir/f<fraction>`
with a `ledger.json` (step, FLOPs, seconds), for compute-to-quality curves and warm starts. With
both budgets set, the fraction used is the larger of the two (the one that binds).

With `decay=True` the learning rate falls linearly with the fraction of the budget used, from the
trainer's own schedule (e.g. its warmup) at fraction 0 to 0 at the budget. A budget stop leaves the
step count unknown in advance, so a step-based decay cannot be set up; a constant rate ends a short
run far from where a decayed one would (the KD study's pruned student on validation: docs/distillation.md).
An up-front charge starts the decay part-way, so a warm-started run continues the schedule its
warm start was on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from distillery.distill.ledger import ComputeLedger
from distillery.errors import ConfigError


def milestone_name(fraction: float) -> str:
    """The directory name of a milestone: `f0.50`."""
    return f"f{fraction:.2f}"


class ComputeBudget(TrainerCallback):
    """Stops training when the ledger's total FLOPs or the elapsed seconds reach the budget (module docstring)."""

    def __init__(self, *, flops: float | None = None, seconds: float | None = None, started: float | None = None,
                 spent_flops: float = 0.0, spent_seconds: float = 0.0, milestones: Sequence[float] = (),
                 save_dir: str | Path | None = None, decay: bool = False):
        if flops is None and seconds is None:
            raise ConfigError("ComputeBudget: give flops, seconds or both")
        if any(not 0 < f < 1 for f in milestones):
            raise ConfigError("ComputeBudget: milestones are fractions of the budget, strictly between 0 and 1")
        if milestones and save_dir is None:
            raise ConfigError("ComputeBudget: milestones need save_dir")
        self.flops, self.seconds, self.started = flops, seconds, started
        self.spent_flops, self.spent_seconds = spent_flops, spent_seconds
        self.pending = sorted(milestones)
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.decay = decay
        self._step_rate: float | None = None
        self.stopped_by: str | None = None
        self.saved: list[dict[str, Any]] = []
        self._ledger: Callable[[], ComputeLedger] | None = None
        self._accelerator: Any = None

    def watch(self, ledger: Callable[[], ComputeLedger], accelerator: Any = None) -> None:
        """Called by the training entry points with a function that returns the run's ledger now (all processes)."""
        self._ledger, self._accelerator = ledger, accelerator

    def spent(self) -> tuple[float | None, float]:
        """(FLOPs, seconds) charged to the budget so far, the up-front charges included.

        FLOPs are None when the ledger cannot price them (no live ledger, or a teacher of unknown
        size); a FLOPs budget then refuses to run.
        """
        total = self._ledger().to_dict()["total_flops"] if self._ledger is not None else None
        if self.flops is not None and total is None:
            raise ConfigError("ComputeBudget: a FLOPs budget needs the run's live ledger with known FLOPs (train_student "
                              "or train_on_policy, and a teacher of known size)")
        flops = None if total is None else self.spent_flops + total
        elapsed = time.perf_counter() - self.started
        if self._accelerator is not None and self._accelerator.num_processes > 1:
            import torch  # every process must agree on when to stop: the slowest clock decides

            elapsed = self._accelerator.reduce(torch.tensor(elapsed, device=self._accelerator.device), "max").item()
        return flops, self.spent_seconds + elapsed

    def used(self, flops: float | None, seconds: float) -> float:
        """The fraction of the budget used: the larger of the two when both are set."""
        parts = [flops / self.flops if self.flops else 0.0, seconds / self.seconds if self.seconds else 0.0]
        return max(parts)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.started is None:
            self.started = time.perf_counter()
        if self.decay:
            self._decay_learning_rate(self.used(self.spent_flops, self.spent_seconds), kwargs)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.decay and kwargs.get("optimizer") is not None:
            self._step_rate = kwargs["optimizer"].param_groups[0]["lr"]  # what this step applies

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The trainer logs its scheduler's rate; the run record should show the decayed one it applied.
        if self.decay and state.log_history and "learning_rate" in state.log_history[-1] and self._step_rate is not None:
            state.log_history[-1]["learning_rate"] = self._step_rate

    def _decay_learning_rate(self, used: float, kwargs: dict[str, Any]) -> None:
        """Scale the rate the trainer's scheduler set for the next step by the budget left."""
        optimizer, scheduler = kwargs.get("optimizer"), kwargs.get("lr_scheduler")
        if optimizer is None or scheduler is None:
            raise ConfigError("ComputeBudget(decay=True) needs the trainer's optimizer and scheduler")
        factor = max(0.0, 1.0 - used)
        for group, scheduled in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = scheduled * factor

    def on_step_end(self, args, state, control, **kwargs):
        flops, seconds = self.spent()
        used = self.used(flops, seconds)
        while self.pending and used >= self.pending[0]:
            self._save(self.pending.pop(0), state, flops, seconds, kwargs)
        if self.decay:
            self._decay_learning_rate(used, kwargs)
        if used >= 1.0:
            flops_done = self.flops is not None and flops >= self.flops
            self.stopped_by = "flops" if flops_done else "seconds"
            control.should_training_stop = True
        return control

    def _save(self, fraction: float, state, flops: float | None, seconds: float, kwargs: dict[str, Any]) -> None:
        record = {"fraction": fraction, "step": state.global_step, "total_flops": flops,
                  "seconds": round(seconds, 3), "spent_flops": self.spent_flops, "spent_seconds": self.spent_seconds}
        self.saved.append(record)
        if not state.is_world_process_zero:
            return
        out = self.save_dir / milestone_name(fraction)
        kwargs["model"].save_pretrained(out)
        tokenizer = kwargs.get("processing_class")
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        (out / "ledger.json").write_text(json.dumps(record, indent=2))


def watch_ledger(callbacks: Sequence[Any] | None, ledger: Callable[[], ComputeLedger], accelerator: Any = None) -> None:
    """Give every `ComputeBudget` among a trainer's callbacks the run's live ledger."""
    for callback in callbacks or ():
        if isinstance(callback, ComputeBudget):
            callback.watch(ledger, accelerator)
