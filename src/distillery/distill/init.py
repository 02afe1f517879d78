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
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from distillery.errors import ConfigError
from distillery.models.hf import SMALL_MODEL_PARAMS

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
LAYER_METRICS = ("cosine", "loss")
INIT_RECORD = "init.json"


# ---------------------------------------------------------------------------------------------
# Shapes


@dataclass(frozen=True)
class StudentShape:
    """The sizes a pruned model keeps. `head_dim` is the source's (never pruned)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: Any) -> StudentShape:
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        )

    def describe(self) -> str:
        return (f"{self.layers} layers, hidden {self.hidden}, intermediate {self.intermediate}, "
                f"{self.heads} heads ({self.kv_heads} key/value) of {self.head_dim}")


def check_architecture(model: Any) -> None:
    """Refuse models whose layout this slicer does not know, with a message that says so."""
    config = model.config
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"student init prunes Llama-family decoders ({', '.join(SUPPORTED_MODEL_TYPES)}); "
            f"this model is {kind!r}"
        )
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not len(layers):
        raise ConfigError(f"a {kind} model without decoder layers at model.model.layers")
    layer = layers[0]
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"):
        if layer.get_submodule(name) is None:  # pragma: no cover - get_submodule raises first
            raise ConfigError(f"{kind} layer has no {name}")


def resolve_shape(source: StudentShape, *, layers: int | None = None, hidden: int | None = None,
                  intermediate: int | None = None, heads: int | None = None,
                  kv_heads: int | None = None) -> StudentShape:
    """The target shape, with defaults and every constraint checked (ConfigError names the option).

    Defaults: the source's value for `layers` and `hidden`; `intermediate` scales with the hidden
    size; `heads` scales with the hidden size too (whole heads of the source's head_dim, at least
    one); `kv_heads` keeps the source's query-per-key/value grouping where it can (all heads for
    multi-head attention).
    """
    layers = source.layers if layers is None else layers
    hidden = source.hidden if hidden is None else hidden
    if intermediate is None:
        intermediate = max(1, round(source.intermediate * hidden / source.hidden))
    if heads is None:
        heads = max(1, min(source.heads, round(source.heads * hidden / source.hidden)))
    group = source.heads // source.kv_heads
    if kv_heads is None and heads <= source.heads:
        # The fewest key/value heads whose groups are no larger than the source's (MHA stays MHA).
        kv_heads = next(d for d in range(1, heads + 1) if heads % d == 0 and heads // d <= group)
    elif kv_heads is None:
        kv_heads = source.kv_heads  # --heads is out of range; the check below says so
    for name, value, limit in (("--layers", layers, source.layers), ("--hidden", hidden, source.hidden),
                               ("--intermediate", intermediate, source.intermediate),
                               ("--heads", heads, source.heads), ("--kv-heads", kv_heads, source.kv_heads)):
        if not 1 <= value <= limit:
            raise ConfigError(f"{name} {value}: must be between 1 and the source's {limit} (pruning only removes)")
    if heads % kv_heads:
        raise ConfigError(f"--heads {heads} must be a multiple of --kv-heads {kv_heads} (grouped-query attention)")
    if heads // kv_heads > group:
        raise ConfigError(
            f"--heads {heads} with --kv-heads {kv_heads} puts {heads // kv_heads} query heads on each key/value "
            f"head, but the source has only {group} per key/value head; raise --kv-heads"
        )
    return StudentShape(layers, hidden, intermediate, heads, kv_heads, source.head_dim)


# ---------------------------------------------------------------------------------------------
# Calibration data


@dataclass
class Calibration:
    """Calibration sequences: token ids, and labels on the assistant's tokens (-100 elsewhere)."""

    input_ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)

    @property
    def assistant_tokens(self) -> int:
        return sum(sum(1 for label in labels if label != -100) for labels in self.labels)


def calibration_sequences(tokenizer: Any, data: Any, *, n: int = 128, max_length: int = 1024,
                          seed: int = 0) -> Calibration:
    """Up to `n` training conversations, tokenized exactly as `distillery train` tokenizes them.

    `data` is what `distillery train --data` takes (HF chat rows: a .jsonl/.parquet file, a
    dataset, rows, `DistillationSample`s or `Trajectory`s). A seeded sample of `n` rows is rendered
    with the tokenizer's chat template (`distillery.chat_tokens`: each assistant turn after its
    inference prompt); each sequence is cut to `max_length` tokens. Importance is measured on every
    token; the calibration loss on the assistant's tokens, the ones a student is trained on.
    """
    from distillery.chat_tokens import tokenize_rows
    from distillery.distill.trainer import load_training_data

    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the source's tokenizer has no chat template; calibration renders conversations with it")
    rows = load_training_data(data).to_list()
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    chosen = [rows[i] for i in sorted(order[:n])]
    input_ids, labels = [], []
    for sequence in tokenize_rows(tokenizer, chosen, names=[f"calibration conversation {i}" for i in sorted(order[:n])]):
        ids, lab = sequence["input_ids"][:max_length], sequence["labels"][:max_length]
        if len(ids) >= 2:
            input_ids.append(list(ids))
            labels.append(list(lab))
    if not input_ids:
        raise ConfigError("no calibration conversation has two or more tokens")
    return Calibration(input_ids, labels)


def _batches(calibration: Calibration, pad_id: int, batch_size: int,
             device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, labels) batches, right-padded, similar lengths together."""
    sequences = calibration.input_ids
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, i in enumerate(chunk):
            length = len(sequences[i])
            ids[row, :length] = torch.tensor(sequences[i])
            mask[row, :length] = 1
            labels[row, :length] = torch.tensor(calibration.labels[i])
        yield ids.to(device), mask.to(device), labels.to(device)


def _pad_id(model: Any, tokenizer: Any = None) -> int:
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(model.config, "pad_token_id", None),
                  getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


@torch.no_grad()
def calibration_loss(model: Any, calibration: Calibration, *, batch_size: int = 8, pad_id: int = 0) -> float:
    """Mean next-token cross entropy (nats per token) over the assistant's tokens of the calibration set."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for ids, mask, labels in _batches(calibration, pad_id, batch_size, device):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        targets = labels[:, 1:]
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                 ignore_index=-100, reduction="sum").item()
        count += int((targets != -100).sum())
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------
# Importance


class _Layers:
    """Temporarily run the model with only some of its decoder layers (in the given order)."""

    def __init__(self, model: Any, keep: Sequence[int]):
        self.model, self.keep = model, list(keep)

    def __enter__(self) -> Any:
        inner = self.model.model
        self._layers, self._count = inner.layers, self.model.config.num_hidden_layers
        inner.layers = torch.nn.ModuleList([self._layers[i] for i in self.keep])
        self.model.config.num_hidden_layers = len(self.keep)
        return self.model

    def __exit__(self, *exc: Any) -> None:
        self.model.model.layers = self._layers
        self.model.config.num_hidden_layers = self._count


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def _forward_all(model: Any, sequences: Calibration, state: dict[str, Any], handles: list, *,
                 batch_size: int, pad_id: int) -> int:
    """Run every calibration batch through `model` for its hooks (`state["mask"]` marks the real
    tokens of the batch in flight), then remove the hooks; returns how many tokens went through."""
    tokens = 0
    try:
        device = next(model.parameters()).device
        for ids, mask, _ in _batches(sequences, pad_id, batch_size, device):
            state["mask"] = mask.float()
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            tokens += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
    return tokens


@torch.no_grad()
def layer_importance(model: Any, sequences: Calibration, *, metric: str = "cosine",
                     batch_size: int = 8, pad_id: int = 0) -> list[float]:
    """One score per decoder layer; higher means more important (see the module docstring)."""
    if metric not in LAYER_METRICS:
        raise ConfigError(f"--layer-metric {metric!r}: choose one of {', '.join(LAYER_METRICS)}")
    count = model.config.num_hidden_layers
    if metric == "loss":
        base = calibration_loss(model, sequences, batch_size=batch_size, pad_id=pad_id)
        scores = []
        for skipped in range(count):
            with _Layers(model, [i for i in range(count) if i != skipped]):
                scores.append(calibration_loss(model, sequences, batch_size=batch_size, pad_id=pad_id) - base)
        return scores

    sums = [0.0] * count
    state: dict[str, Any] = {}
    handles = []

    def hook(index: int) -> Callable:
        def record(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = _first_tensor(output)
            distance = 1.0 - F.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            sums[index] += float((distance * state["mask"]).sum())
        return record

    for index, layer in enumerate(model.model.layers[:count]):
        handles.append(layer.register_forward_hook(hook(index), with_kwargs=True))
    tokens = _forward_all(model, sequences, state, handles, batch_size=batch_size, pad_id=pad_id)
    return [s / max(tokens, 1) for s in sums]


@dataclass
class WidthScores:
    """Activation importance of the width axes (higher is more important)."""

    hidden: torch.Tensor  # (hidden,)
    heads: list[torch.Tensor] = field(default_factory=list)  # per layer, (num_attention_heads,)
    neurons: list[torch.Tensor] = field(default_factory=list)  # per layer, (intermediate,)


@torch.no_grad()
def width_importance(model: Any, sequences: Calibration, *, batch_size: int = 8,
                     pad_id: int = 0) -> WidthScores:
    """Minitron's activation importance of hidden channels, heads and MLP neurons."""
    config = model.config
    shape = StudentShape.of(config)
    layers = list(model.model.layers[:config.num_hidden_layers])
    hidden = torch.zeros(shape.hidden, dtype=torch.float64)
    heads = [torch.zeros(shape.heads, dtype=torch.float64) for _ in layers]
    neurons = [torch.zeros(shape.intermediate, dtype=torch.float64) for _ in layers]
    state: dict[str, Any] = {}
    handles = []

    def masked_sum(values: torch.Tensor) -> torch.Tensor:  # (B, S, X) -> (X,), padding excluded
        return (values.float() * state["mask"].unsqueeze(-1)).sum(dim=(0, 1)).double().cpu()

    def norm_hook(module, args, output):
        hidden.add_(masked_sum(_first_tensor(output).abs()))

    def head_hook(index: int, o_proj: torch.nn.Module) -> Callable:
        def record(module, args):
            x = args[0]  # (B, S, heads * head_dim): the heads' outputs, concatenated
            weight = o_proj.weight  # (hidden, heads * head_dim)
            # Each head's contribution to the residual stream: its output through its o_proj slice
            # (one head at a time: all at once would hold heads x hidden floats per token).
            norms = []
            for head in range(shape.heads):
                part = slice(head * shape.head_dim, (head + 1) * shape.head_dim)
                norms.append((x[..., part].float() @ weight[:, part].float().T).norm(dim=-1))
            heads[index].add_(masked_sum(torch.stack(norms, dim=-1)))
        return record

    def neuron_hook(index: int) -> Callable:
        def record(module, args):
            neurons[index].add_(masked_sum(args[0].abs()))
        return record

    for index, layer in enumerate(layers):
        handles.append(layer.input_layernorm.register_forward_hook(norm_hook))
        handles.append(layer.post_attention_layernorm.register_forward_hook(norm_hook))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(head_hook(index, layer.self_attn.o_proj)))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(neuron_hook(index)))
    handles.append(model.model.norm.register_forward_hook(norm_hook))
    tokens = _forward_all(model, sequences, state, handles, batch_size=batch_size, pad_id=pad_id)
    scale = 1.0 / max(tokens, 1)
    return WidthScores(hidden * scale, [h * scale for h in heads], [n * scale for n in neurons])


# ---------------------------------------------------------------------------------------------
# Selection and slicing


def top_indices(scores: Sequence[float] | torch.Tensor, k: int) -> list[int]:
    """The `k` highest-scoring indices, in ascending order (ties go to the lower index)."""
    values = torch.as_tensor(scores, dtype=torch.float64)
    # A stable sort on the negated scores keeps the lower index first among equals.
    order = torch.sort(-values, stable=True).indices[:k]
    return sorted(int(i) for i in order)


def select_heads(scores: torch.Tensor, source: StudentShape, heads: int, kv_heads: int) -> tuple[list[int], list[int]]:
    """(query heads, key/value heads) to keep in one layer, consistent under grouped-query attention.

    Key/value group g serves query heads g*G .. g*G+G-1 (G = heads per group in the source). The
    `kv_heads` groups whose query heads matter most are kept, and in each the best
    `heads / kv_heads` query heads, so new query head j reads new key/value head j // (heads/kv_heads).
    """
    group = source.heads // source.kv_heads
    per_group = heads // kv_heads
    by_group = scores.view(source.kv_heads, group)
    kept_groups = top_indices(by_group.sum(dim=1), kv_heads)
    query = []
    for g in kept_groups:
        query += [g * group + i for i in top_indices(by_group[g], per_group)]
    return query, kept_groups


@dataclass
class PrunePlan:
    """What is kept, by index into the source model."""

    layers: list[int]
    hidden: list[int]
    heads: list[list[int]]  # per kept layer, query heads
    kv_heads: list[list[int]]  # per kept layer, key/value heads
    neurons: list[list[int]]  # per kept layer

    def summary(self) -> dict[str, Any]:
        return {"layers": self.layers, "heads": self.heads, "kv_heads": self.kv_heads,
                "hidden_kept": len(self.hidden), "neurons_kept": [len(n) for n in self.neurons]}


def plan_pruning(shape: StudentShape, source: StudentShape, layers: Sequence[int], scores: WidthScores) -> PrunePlan:
    """Choose what to keep from the scores of the depth-pruned model (`scores` per kept layer)."""
    heads, kv_heads = [], []
    for layer_scores in scores.heads:
        q, kv = select_heads(layer_scores, source, shape.heads, shape.kv_heads)
        heads.append(q)
        kv_heads.append(kv)
    return PrunePlan(
        layers=list(layers),
        hidden=top_indices(scores.hidden, shape.hidden),
        heads=heads,
        kv_heads=kv_heads,
        neurons=[top_indices(n, shape.intermediate) for n in scores.neurons],
    )


def _rows(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    return torch.tensor([h * head_dim + d for h in heads for d in range(head_dim)], dtype=torch.long)


def _pruned_config(config: Any, shape: StudentShape, plan: PrunePlan) -> Any:
    new = copy.deepcopy(config)
    new.num_hidden_layers = shape.layers
    new.hidden_size = shape.hidden
    new.intermediate_size = shape.intermediate
    new.num_attention_heads = shape.heads
    new.num_key_value_heads = shape.kv_heads
    new.head_dim = shape.head_dim  # written explicitly: hidden / heads no longer gives it
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == config.num_hidden_layers:
        new.layer_types = [layer_types[i] for i in plan.layers]
    return new


def _slice(name: str, tensor: torch.Tensor, plan: PrunePlan, source: StudentShape) -> torch.Tensor:
    """The part of a source parameter the student keeps. `name` is the student's parameter name."""
    hidden = torch.tensor(plan.hidden, dtype=torch.long)
    parts = name.split(".")
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return tensor[:, hidden]
    if name == "lm_head.bias":
        return tensor
    if name == "model.norm.weight":
        return tensor[hidden]
    if parts[:2] != ["model", "layers"]:
        raise ConfigError(f"student init does not know how to prune parameter {name!r}")
    layer = int(parts[2])
    rest = ".".join(parts[3:])
    q_rows = _rows(plan.heads[layer], source.head_dim)
    kv_rows = _rows(plan.kv_heads[layer], source.head_dim)
    neurons = torch.tensor(plan.neurons[layer], dtype=torch.long)
    # module: (index kept along its outputs, index kept along its inputs); a bias takes the first.
    axes: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {
        "input_layernorm": (hidden, None),
        "post_attention_layernorm": (hidden, None),
        "self_attn.q_proj": (q_rows, hidden),
        "self_attn.k_proj": (kv_rows, hidden),
        "self_attn.v_proj": (kv_rows, hidden),
        "self_attn.o_proj": (hidden, q_rows),
        "self_attn.q_norm": (None, None),  # per head_dim (Qwen3), which is never pruned
        "self_attn.k_norm": (None, None),
        "mlp.gate_proj": (neurons, hidden),
        "mlp.up_proj": (neurons, hidden),
        "mlp.down_proj": (hidden, neurons),
    }
    module, _, kind = rest.rpartition(".")
    if module not in axes or kind not in ("weight", "bias"):
        raise ConfigError(f"student init does not know how to prune parameter {name!r}")
    outputs, inputs = axes[module]
    if outputs is not None:
        tensor = tensor[outputs]
    if kind == "weight" and inputs is not None:
        tensor = tensor[:, inputs]
    return tensor


def prune_model(model: Any, shape: StudentShape, plan: PrunePlan) -> Any:
    """A new model of `shape` holding the kept slices of `model`'s weights (the source is untouched)."""
    from transformers import AutoModelForCausalLM

    source = StudentShape.of(model.config)
    config = _pruned_config(model.config, shape, plan)
    dtype = next(model.parameters()).dtype
    with torch.random.fork_rng(devices=[]):  # the fresh weights are all overwritten; keep the caller's RNG
        student = AutoModelForCausalLM.from_config(config, dtype=dtype)
    old = model.state_dict()
    new_state = {}
    for name, target in student.state_dict().items():
        parts = name.split(".")
        source_name = name
        if parts[:2] == ["model", "layers"]:
            source_name = ".".join(["model", "layers", str(plan.layers[int(parts[2])]), *parts[3:]])
        if source_name not in old:
            raise ConfigError(f"the source model has no parameter {source_name!r} for the student's {name!r}")
        value = _slice(name, old[source_name], plan, source)
        if value.shape != target.shape:  # pragma: no cover - a slicing rule out of step with the config
            raise ConfigError(f"{name}: sliced to {tuple(value.shape)}, the student expects {tuple(target.shape)}")
        new_state[name] = value.clone()
    student.load_state_dict(new_state, strict=True)
    if getattr(model, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(model.generation_config)
    return student.to(next(model.parameters()).device).eval()


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
    from distillery.distill.trainer import load_model_and_tokenizer

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
