"""Where the teacher's training targets come from, decoupled from the losses that use them.

A signal decides what the trainer puts next to the student's logits:

- `SequenceSignal`: nothing. The student is fine-tuned on the teacher's text (sequence-level KD,
  Kim & Rush 2016). The only choice when the teacher is a black box such as Claude.
- `OnlineTeacherSignal`: a local teacher with the same tokenizer runs a no-grad forward over the
  same `input_ids`; its dense logits are the soft targets.
- `SparseTopKSignal`: the teacher's top-k log-probabilities per token, computed once and stored in
  a Parquet sidecar (`distillery build --sidecar topk` from collected logprobs, or
  `teacher_topk` + `write_teacher_topk` from a local teacher).
- `ActionSignal`: per assistant step, the teacher's distribution over canonical actions
  (estimated from k samples); the loss is sum_a p_T(a) * NLL_S(a).

Signals travel through TRL's data pipeline as one integer column, `kd_row`: the number of the
training sequence (`distillery.chat_tokens` tokenizes each conversation into one sequence, or
several where its history re-tokenizes differently, in row order). TRL truncates, filters and
shuffles sequences as it likes; the collator then looks up each sequence's targets by `kd_row`,
so sidecar data can never be attached to the wrong example.

Positions. Every per-token target here is indexed like the labels: the sidecar's row t is the
teacher's distribution for the token at position t of `input_ids` (the teacher saw
`input_ids[:t]`). That is how vLLM indexes `prompt_logprobs` too. The collator moves them to the
model's convention (logits at t predict token t+1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distillery.chat_tokens import completion_text, encode, template_message, tokenize_rows
from distillery.errors import ConfigError

KD_ROW = "kd_row"  # the one column signals keep through TRL's dataset preparation


def tokenize_rows_dataset(dataset, tokenizer):
    """Chat rows (`messages`, `tools`) -> training sequences, as `chat_tokens.tokenize_rows` makes
    them: `input_ids`, `labels`, `source_row`, `turns`, and `kd_row` (the sequence's number, the
    key signals look their targets up by)."""
    from datasets import Dataset

    sequences = tokenize_rows(tokenizer, dataset.to_list())
    for number, sequence in enumerate(sequences):
        sequence[KD_ROW] = number
    return Dataset.from_list(sequences)


def same_vocabulary(tokenizer_a, tokenizer_b) -> bool:
    """True when two tokenizers map every token string to the same id (special tokens included)."""
    return tokenizer_a is tokenizer_b or tokenizer_a.get_vocab() == tokenizer_b.get_vocab()


class TeacherSignal:
    """Base class: a signal that adds nothing (subclasses override what they need)."""

    kind = "sequence"  # "sequence" | "dense" | "sparse" | "action"
    name = "sequence"

    def collate(self, batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
        """Add this signal's tensors for the training sequences `rows` (their `kd_row`) to a batch."""
        return batch

    def bind_sequences(self, sequences) -> None:
        """Told which conversation and turns each training sequence holds (`source_row`, `turns`)."""

    def describe(self) -> dict[str, Any]:
        return {"signal": self.name}


class SequenceSignal(TeacherSignal):
    """SFT on the teacher's text: the hard labels are the only target."""


class OnlineTeacherSignal(TeacherSignal):
    """A local teacher's dense logits, computed on the fly with a no-grad forward per batch.

    The teacher must share the student's tokenizer (checked when both are given): KD over logits
    compares distributions token id by token id. Vocabulary sizes of the two *models* may differ
    (embedding matrices are often padded to a multiple of 64); both are cut to the tokenizer's
    size, which no real token id exceeds.
    """

    kind = "dense"
    name = "online"

    def __init__(self, teacher_model, *, teacher_tokenizer=None, student_tokenizer=None):
        if teacher_tokenizer is not None and student_tokenizer is not None:
            if not same_vocabulary(teacher_tokenizer, student_tokenizer):
                raise ConfigError(
                    "online KD needs the teacher and student to share a tokenizer, but their vocabularies differ "
                    f"({len(teacher_tokenizer)} vs {len(student_tokenizer)} tokens); use --signal sequence or sparse"
                )
        self.model = teacher_model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.vocab_size = len(student_tokenizer) if student_tokenizer is not None else None

    def to(self, device) -> OnlineTeacherSignal:
        self.model.to(device)
        return self

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, keep=None) -> torch.Tensor:
        """Teacher logits over the same tokens the student sees, without a graph.

        (B, T, V); or, with `keep` a (B, T) bool mask, (N, V) for just the kept positions (the LM
        head then runs on those rows only).
        """
        self.model.eval()  # the Trainer may have switched every module to train mode
        extra = {} if keep is None else {"logits_to_keep": keep}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra).logits

    def describe(self) -> dict[str, Any]:
        config = self.model.config
        return {"signal": self.name, "teacher": getattr(config, "_name_or_path", "") or type(self.model).__name__}


# ---------------------------------------------------------------------------------------------
# Sparse top-k sidecar, in the dataset builder's format (`distillery.dataset.sidecar`):
# `<split>.topk.parquet` + `<split>.topk.json`, one row per example, read back as dense
# (T, k) tensors where row t is the teacher's distribution for the token at position t.

# Logprob given to padding slots (a position with fewer than k alternatives). -inf would make
# reverse KL infinite wherever the student puts any mass; exp(-30) ~ 1e-13 is "impossible"
# without that.
PAD_LOGPROB = -30.0


def _unused_ids(row_ids: torch.Tensor, count: int) -> torch.Tensor:
    """`count` token ids that do not appear in `row_ids` (fillers for padding slots)."""
    taken = set(row_ids.tolist())
    fillers, candidate = [], 0
    while len(fillers) < count:
        if candidate not in taken:
            fillers.append(candidate)
        candidate += 1
    return torch.tensor(fillers, dtype=torch.long)


class SparseTopKSignal(TeacherSignal):
    """Top-k teacher log-probabilities from a sidecar, laid out as (B, T, k) tensors per batch.

    `sidecar` is a path to a `.topk.parquet` written by `distillery build --sidecar topk` or by
    `write_teacher_topk`, a `TopKSidecar`, or a mapping `{row: (ids, logprobs, has_target)}`
    with the reader's dense tensors. Tokens that carry a label but have no teacher entry (the
    builder only targets tokens the teacher actually generated) are marked False in `kd_mask`;
    the trainer trains them on the hard label alone.
    """

    kind = "sparse"
    name = "sparse"

    def __init__(self, sidecar, *, student_tokenizer=None):
        if isinstance(sidecar, (str, Path)):
            from distillery.dataset.sidecar import TopKSidecar, tokenizer_fingerprint

            self.source = str(sidecar)
            sidecar = TopKSidecar(sidecar)
            expected = sidecar.header.get("tokenizer_fingerprint")
            if student_tokenizer is not None and expected and expected != tokenizer_fingerprint(student_tokenizer):
                raise ConfigError(
                    f"{self.source}: the sidecar was built for another tokenizer than the student's; "
                    "its token ids would mean different text"
                )
            self.k = sidecar.k
        else:
            self.source = getattr(sidecar, "path", "<memory>")
            first = next(iter(sidecar.values()), None) if isinstance(sidecar, dict) else None
            self.k = getattr(sidecar, "k", None) or (first[0].size(1) if first is not None else 1)
        self.sidecar = sidecar

    def _lookup(self, row: int):
        try:
            return self.sidecar[row]
        except KeyError:
            return None

    def collate(self, batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
        input_ids = batch["input_ids"]
        batch_size, width = input_ids.shape
        lengths = batch["attention_mask"].sum(1) if "attention_mask" in batch else torch.full((batch_size,), width)
        ids = torch.zeros(batch_size, width, self.k, dtype=torch.long)
        # Filler where there is no target: a uniform teacher (finite, and unused: alpha is 1 there).
        logprobs = torch.full((batch_size, width, self.k), -math.log(self.k) if self.k > 1 else 0.0)
        mask = torch.zeros(batch_size, width, dtype=torch.bool)
        for b, row in enumerate(rows):
            found = self._lookup(int(row))
            if found is None:
                continue
            row_ids, row_logprobs, has_target = found
            length = int(lengths[b])
            # A sidecar row describes the untruncated sequence: it may be longer (truncated by
            # max_length) but never shorter than what the trainer tokenized.
            if row_ids.size(0) < length:
                raise ConfigError(
                    f"{self.source}: row {row} has {row_ids.size(0)} positions but the dataset row tokenizes to "
                    f"{length} tokens; was the sidecar built with another tokenizer, chat template or data file?"
                )
            n = min(length, row_ids.size(0))
            # Targets for token t pair with the logits at t - 1 (the model's convention).
            target_ids, target_logprobs = row_ids[1:n].clone(), row_logprobs[1:n].clone()
            padded = target_ids < 0
            if padded.any():
                for t in padded.any(1).nonzero().squeeze(1).tolist():
                    slots = padded[t]
                    target_ids[t, slots] = _unused_ids(target_ids[t, ~slots], int(slots.sum()))
                    target_logprobs[t, slots] = PAD_LOGPROB
            ids[b, : n - 1] = target_ids
            logprobs[b, : n - 1] = target_logprobs
            mask[b, : n - 1] = has_target[1:n]
        batch["kd_topk_ids"], batch["kd_topk_logprobs"], batch["kd_mask"] = ids, logprobs, mask
        return batch

    def describe(self) -> dict[str, Any]:
        return {"signal": self.name, "sidecar": self.source, "k": self.k}


@torch.no_grad()
def teacher_topk(
    teacher_model,
    tokenized_rows: Sequence[dict[str, Any]],
    *,
    k: int = 20,
    batch_size: int = 8,
    vocab_size: int | None = None,
) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The teacher's top-k log-probabilities at every label position of already tokenized rows.

    `tokenized_rows` carry `input_ids`, `labels` (-100 where no loss) and optionally `kd_row`.
    This is what an OpenAI-compatible server returns as `prompt_logprobs`, computed locally: the
    offline sparse signal from a local teacher. Returns `{row: (ids, logprobs, has_target)}` with
    dense (T, k) tensors, the layout `TopKSidecar` reads back.
    """
    teacher_model.eval()
    device = next(teacher_model.parameters()).device
    out = {}
    for start in range(0, len(tokenized_rows), batch_size):
        chunk = [tokenized_rows[i] for i in range(start, min(start + batch_size, len(tokenized_rows)))]
        width = max(len(r["input_ids"]) for r in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
        attention = torch.zeros(len(chunk), width, dtype=torch.long)
        for b, r in enumerate(chunk):
            input_ids[b, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            attention[b, : len(r["input_ids"])] = 1
        logits = teacher_model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
        if vocab_size is not None:
            logits = logits[..., :vocab_size]
        for b, r in enumerate(chunk):
            length = len(r["input_ids"])
            labels = torch.tensor(r["labels"])
            has_target = labels != -100
            has_target[0] = False  # nothing predicts the first token
            ids = torch.full((length, k), -1, dtype=torch.long)
            values = torch.full((length, k), float("-inf"))
            positions = has_target.nonzero().squeeze(1)
            top = torch.log_softmax(logits[b, positions - 1], dim=-1).topk(min(k, logits.size(-1)), dim=-1)
            ids[positions, : top.indices.size(1)] = top.indices.cpu()
            # Rounded to float16 as the sidecar stores them, so in-memory and on-disk runs agree.
            values[positions, : top.values.size(1)] = top.values.cpu().half().float()
            out[int(r.get(KD_ROW, start + b))] = (ids, values, has_target)
    return out


def write_teacher_topk(path: str | Path, targets: dict, *, tokenizer, k: int) -> Path:
    """Write `teacher_topk` output as a sidecar in the dataset builder's format (+ its JSON header)."""
    import numpy as np

    from distillery.dataset.sidecar import TOPK_FORMAT, TOPK_SCHEMA, tokenizer_fingerprint, topk_header_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list] = {name: [] for name in TOPK_SCHEMA.names}
    targeted = 0
    for row in sorted(targets):
        ids, values, has_target = targets[row]
        positions = has_target.nonzero().squeeze(1)
        columns["example"].append(row)
        columns["seq_len"].append(ids.size(0))
        columns["positions"].append(positions.numpy().astype(np.int32))
        columns["ids"].append(ids[positions].reshape(-1).numpy().astype(np.int32))
        columns["logprobs"].append(values[positions].reshape(-1).numpy().astype(np.float16))
        targeted += positions.numel()
    pq.write_table(pa.Table.from_pydict(columns, schema=TOPK_SCHEMA), path, compression="zstd")
    header = {
        "format": TOPK_FORMAT,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "k": k,
        "alignment": "teacher-forward",  # every assistant token, from a local teacher's forward pass
        "examples": len(targets),
        "target_positions": targeted,
        "assistant_tokens": targeted,
        "coverage": 1.0,
        "positions": "row t holds the teacher's top-k for the token at position t (pairs with logits at t-1)",
    }
    topk_header_path(path).write_text(json.dumps(header, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Action distributions.


def _call(payload: dict[str, Any], index: int) -> dict[str, Any]:
    arguments = payload.get("arguments", payload.get("raw_arguments", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)  # what the template's tojson writes
    return {"id": f"call_{index}", "type": "function", "function": {"name": payload["name"], "arguments": arguments}}


def _action_message(action: str) -> dict[str, Any]:
    """The assistant message that takes a canonical action, as `distillery.dataset.sidecar.action_key`
    writes them: one `ToolCall.canonical()`, a JSON list of them, or `{"final_answer": text}`."""
    try:
        payload = json.loads(action)
    except json.JSONDecodeError:
        payload = action
    if isinstance(payload, dict) and "final_answer" in payload:
        return {"role": "assistant", "content": str(payload["final_answer"])}
    if isinstance(payload, dict) and isinstance(payload.get("name"), str):
        payload = [payload]
    if isinstance(payload, list) and payload and all(isinstance(p, dict) and "name" in p for p in payload):
        return {"role": "assistant", "content": "", "tool_calls": [_call(p, i) for i, p in enumerate(payload)]}
    return {"role": "assistant", "content": str(payload)}


class ActionSignal(TeacherSignal):
    """The teacher's distribution over actions at each assistant step, from k samples per state.

    The dataset row carries `action_distributions`: one `{canonical_action: probability}` per
    assistant message (JSON, or a list of dicts; `null` for steps without one). For each state and
    each action the collator renders the conversation up to that step followed by the action, and
    marks the action's tokens; the trainer scores them with the student (`sequence_logprob`) and
    applies `action_distribution_loss`. Cost: one extra student forward per (state, action) pair.
    """

    kind = "action"
    name = "action"

    def __init__(self, dataset, tokenizer, *, max_actions_per_state: int = 8, max_length: int | None = None):
        if "action_distributions" not in dataset.column_names:
            raise ConfigError("signal 'action' needs an 'action_distributions' column in the dataset")
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.max_actions = max_actions_per_state
        self.max_length = max_length
        self.sequences: dict[int, tuple[int, set[int]]] | None = None  # kd_row -> (source row, turns)

    def bind_sequences(self, sequences) -> None:
        self.sequences = {int(row): (int(source), set(turns)) for row, source, turns in
                          zip(sequences[KD_ROW], sequences["source_row"], sequences["turns"])}

    def _states(self, row: int) -> list[tuple[list[dict], dict[str, float]]]:
        """(conversation before the turn, the teacher's action distribution) for each turn that
        training sequence `row` trains and that has a distribution."""
        source, turns = self.sequences[int(row)] if self.sequences is not None else (int(row), None)
        example = self.dataset[source]
        distributions = example["action_distributions"]
        if isinstance(distributions, str):
            distributions = json.loads(distributions)
        if not distributions:
            return []
        messages = [template_message(m) for m in example["messages"]]
        assistant_at = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        states = []
        for index, distribution in zip(assistant_at, distributions, strict=False):
            if distribution and (turns is None or index in turns):
                states.append((messages[:index], distribution))
        return states

    def collate(self, batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
        sequences, labels, state_of, probs = [], [], [], []
        tools_column = "tools" in self.dataset.column_names
        num_states = 0
        for row in rows:
            source = self.sequences[int(row)][0] if self.sequences is not None else int(row)
            tools = self.dataset[source]["tools"] if tools_column else None
            for prefix, distribution in self._states(row):
                top = sorted(distribution.items(), key=lambda kv: -kv[1])[: self.max_actions]
                for action, p in top:
                    # The action's tokens after the state's inference prompt, as the trainer
                    # tokenizes every turn (`distillery.chat_tokens`).
                    conversation = [*prefix, _action_message(action)]
                    prompt, completion = completion_text(self.tokenizer, conversation, len(prefix), tools)
                    prompt_ids, completion_ids = encode(self.tokenizer, prompt), encode(self.tokenizer, completion)
                    ids = prompt_ids + completion_ids
                    seq_labels = [-100] * len(prompt_ids) + completion_ids
                    if self.max_length is not None:
                        ids, seq_labels = ids[-self.max_length :], seq_labels[-self.max_length :]
                    sequences.append(ids)
                    labels.append(seq_labels)
                    state_of.append(num_states)
                    probs.append(float(p))
                num_states += 1
        if not sequences:
            return batch
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id or 0
        batch["action_input_ids"] = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
        batch["action_attention_mask"] = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
        batch["action_labels"] = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
        batch["action_state"] = torch.tensor(state_of)
        batch["action_prob"] = torch.tensor(probs)
        return batch
