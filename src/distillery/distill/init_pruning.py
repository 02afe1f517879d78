"""The student's shape, and slicing a teacher down to it: which layers, heads, neurons and channels
are kept (from importance scores, `init_scoring.py`) and the pruned model built from those slices.

Supported: Llama-family decoders with the Llama module layout; see `distillery.distill.init`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from distillery.errors import ConfigError

if TYPE_CHECKING:
    from distillery.distill.init_scoring import WidthScores

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


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
