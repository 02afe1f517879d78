"""Importance scores for pruning a teacher into a student: calibration sequences from the training
conversations, the calibration loss, and the depth (per layer) and width (heads, neurons, channels)
importance the module docstring of `distillery.distill.init` describes."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from distillery.distill.init_pruning import StudentShape
from distillery.errors import ConfigError

LAYER_METRICS = ("cosine", "loss")


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
    from distillery.distill.training_data import load_training_data

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
