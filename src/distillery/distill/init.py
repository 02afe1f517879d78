"""Students initialised from the teacher: structured pruning of depth and width (Minitron-style).

A student that starts as a slice of its teacher knows, on step 0, much of what the teacher knows;
distillation then recovers what the cut lost (Muralidharan et al. 2024, "Compact Language Models
via Pruning and Knowledge Distillation"; Xia et al. 2023, Sheared-LLaMA). What to keep is chosen
by importance measured on calibration data (the user's own training conversations, rendered with
the chat template), never by fixed indices:

- depth: each decoder block's importance is `1 - cos(input, output)` averaged over tokens (the
  Block Influence of ShortGPT, one of Minitron's depth metrics; a block that barely changes the
  residual stream scores near 0), or, with `layer_metric="loss"`, how much the calibration loss
  rises when that block alone is skipped. The top `layers` blocks are kept, in their order.
- width, measured on the depth-pruned model, as Minitron does with activations:
  - attention heads: the mean L2 norm of each head's contribution to the residual stream (its
    attention output through its slice of `o_proj`);
  - MLP neurons: the mean absolute activation entering `down_proj` (`act(gate) * up`);
  - hidden (residual-stream) channels: the mean absolute output of every RMSNorm, summed over norms.

Grouped-query attention stays consistent: key/value groups are ranked by the summed importance of
their query heads, the top `kv_heads` groups are kept with their key/value projections, and each
kept group keeps its best `heads / kv_heads` query heads. `head_dim` is never cut (rotary
embeddings are defined per head dimension), so the attention width shrinks by whole heads.

    from distillery.distill.init import init_student
    result = init_student("world:teacher", "data/train.jsonl", out="runs/s-init",
                          layers=3, hidden=96, intermediate=256, heads=2)
    # result.path is a standard HF model directory: load_model(f"hf:{result.path}"), or train it.

Supported: Llama-family decoders with the Llama module layout (`llama`, `mistral`, `qwen2`,
`qwen3`): q/k/v/o projections (with or without biases), a gated MLP, RMSNorms, tied or untied
embeddings. Other architectures are refused with a message, not sliced wrongly.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from distillery.distill.init_pruning import (  # noqa: F401  (re-exported: the public import path)
    SUPPORTED_MODEL_TYPES,
    PrunePlan,
    StudentShape,
    check_architecture,
    plan_pruning,
    prune_model,
    resolve_shape,
    select_heads,
    top_indices,
)
from distillery.distill.init_scoring import (  # noqa: F401  (re-exported: the public import path)
    LAYER_METRICS,
    Calibration,
    WidthScores,
    _Layers,
    _pad_id,
    calibration_loss,
    calibration_sequences,
    layer_importance,
    width_importance,
)
from distillery.errors import ConfigError
from distillery.models.hf import SMALL_MODEL_PARAMS

INIT_RECORD = "init.json"


# ---------------------------------------------------------------------------------------------
# The whole step


@dataclass
class InitResult:
    """What `init_student` did: where the model is, what was kept and how well it starts."""

    path: Path | None
    source: dict[str, int]
    shape: dict[str, int]
    parameters: dict[str, int]
    layer_metric: str
    layer_scores: list[float]
    plan: dict[str, Any]
    calibration: dict[str, Any]
    seconds: float
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("model")
        data.pop("tokenizer")
        data["path"] = str(self.path) if self.path is not None else None
        return {"kind": "distillery.student_init", **data}


def _parameters(model: Any) -> int:
    # Tied weights are counted once (parameters() yields a shared tensor once).
    return sum(p.numel() for p in model.parameters())


def init_student(
    source: Any,
    calibration: Any,
    *,
    out: str | Path | None = None,
    layers: int | None = None,
    hidden: int | None = None,
    intermediate: int | None = None,
    heads: int | None = None,
    kv_heads: int | None = None,
    layer_metric: str = "cosine",
    n_calibration: int = 128,
    max_length: int = 1024,
    batch_size: int = 8,
    seed: int = 0,
    threads: int = 0,
) -> InitResult:
    """Prune `source` to the given sizes, choosing by importance on `calibration`, and save it.

    source: a model URI (`world:teacher`, `hf:./dir`), a model directory, or `(model, tokenizer)`.
    calibration: training conversations (what `distillery train --data` takes).
    layers, hidden, intermediate, heads, kv_heads: the student's sizes (see `resolve_shape` for
        the defaults); each at most the source's.
    layer_metric: "cosine" (1 - cos(block input, block output)) or "loss" (loss rise when skipped).
    threads: CPU threads for torch; 0 means one for a small model on a CPU, torch's default otherwise.
    out: where to write the HF model directory (config, safetensors, the source's tokenizer and chat
        template, `init.json`); None keeps it in memory only (`result.model`).
    """
    from distillery.distill.training_setup import load_model_and_tokenizer

    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(source, what="from")
    if threads == 0 and not torch.cuda.is_available() and _parameters(model) < SMALL_MODEL_PARAMS:
        threads = 1  # as `distillery train`: more threads only oversubscribe a CPU for a few-million-parameter model
    if threads > 0:
        torch.set_num_threads(threads)
    check_architecture(model)
    source_shape = StudentShape.of(model.config)
    shape = resolve_shape(source_shape, layers=layers, hidden=hidden, intermediate=intermediate,
                          heads=heads, kv_heads=kv_heads)
    if layer_metric not in LAYER_METRICS:
        raise ConfigError(f"--layer-metric {layer_metric!r}: choose one of {', '.join(LAYER_METRICS)}")
    was_training = model.training
    model.eval()
    pad = _pad_id(model, tokenizer)
    sequences = calibration_sequences(tokenizer, calibration, n=n_calibration, max_length=max_length, seed=seed)
    options = dict(batch_size=batch_size, pad_id=pad)
    try:
        source_loss = calibration_loss(model, sequences, **options)
        layer_scores = layer_importance(model, sequences, metric=layer_metric, **options)
        kept_layers = top_indices(layer_scores, shape.layers)
        with _Layers(model, kept_layers):
            scores = width_importance(model, sequences, **options)
        plan = plan_pruning(shape, source_shape, kept_layers, scores)
        student = prune_model(model, shape, plan)
    finally:
        model.train(was_training)
    student_loss = calibration_loss(student, sequences, **options)
    baseline = random_init_loss(student, sequences, seed=seed, **options)
    result = InitResult(
        path=Path(out) if out is not None else None,
        source=asdict(source_shape),
        shape=asdict(shape),
        parameters={"source": _parameters(model), "student": _parameters(student)},
        layer_metric=layer_metric,
        layer_scores=[round(s, 6) for s in layer_scores],
        plan=plan.summary(),
        calibration={"sequences": len(sequences), "tokens": sequences.tokens,
                     "assistant_tokens": sequences.assistant_tokens, "seed": seed,
                     "source_loss": round(source_loss, 4), "student_loss": round(student_loss, 4),
                     "random_init_loss": round(baseline, 4),
                     "data": str(calibration) if isinstance(calibration, (str, Path)) else None},
        seconds=round(time.perf_counter() - started, 2),
        model=student,
        tokenizer=tokenizer,
    )
    if out is not None:
        save_student(result, out)
    return result


def save_student(result: InitResult, out: str | Path) -> Path:
    """Write the pruned model, the source's tokenizer (with its chat template) and `init.json`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(out)
    result.tokenizer.save_pretrained(out)
    result.path = out
    (out / INIT_RECORD).write_text(json.dumps(result.record(), indent=2) + "\n", encoding="utf-8")
    return out


def random_init_loss(model: Any, sequences: Calibration, *, seed: int = 0, batch_size: int = 8,
                     pad_id: int = 0) -> float:
    """Calibration loss of a freshly initialised model with `model`'s config: the baseline pruning must beat."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(copy.deepcopy(model.config)).eval()
    return calibration_loss(fresh.to(next(model.parameters()).device), sequences, batch_size=batch_size,
                            pad_id=pad_id)


__all__ = [
    "INIT_RECORD", "LAYER_METRICS", "SUPPORTED_MODEL_TYPES", "Calibration", "InitResult", "PrunePlan", "StudentShape",
    "WidthScores", "calibration_loss", "calibration_sequences", "check_architecture", "init_student",
    "layer_importance", "plan_pruning", "prune_model", "random_init_loss", "resolve_shape", "save_student",
    "select_heads", "top_indices", "width_importance",
]
