"""Where the teacher's training targets come from, decoupled from the losses that use them.

A signal decides what the trainer puts next to the student's logits:

- `SequenceSignal`: nothing. The student is fine-tuned on the teacher's text (sequence-level KD,
  Kim & Rush 2016). The only choice when the teacher is a black box such as Claude.
- `OnlineTeacherSignal`: a local teacher with the same tokenizer runs a no-grad forward over the
  same `input_ids`; its dense logits are the soft targets.
- `SparseTopKSignal`: the teacher's top-k log-probabilities per token, computed once and stored in
  a Parquet sidecar (what vLLM's `logprobs`/`prompt_logprobs` give, or `write_teacher_topk`).
- `ActionSignal`: per assistant step, the teacher's distribution over canonical actions
  (estimated from k samples); the loss is sum_a p_T(a) * NLL_S(a).

Signals travel through TRL's data pipeline as one integer column, `kd_row` (the example's row
in the original dataset). TRL tokenizes, filters and shuffles rows as it likes; the collator then
looks up each row's targets by `kd_row`, so sidecar data can never be attached to the wrong
example.

Positions. Every per-token target here is indexed like the labels: the sidecar's `positions[i]`
is the index in `input_ids` of the token whose distribution `topk_*[i]` describes (the teacher
saw `input_ids[:p]` and predicted token p). That is how vLLM indexes `prompt_logprobs` too. The
collator moves them to the model's convention (logits at t predict token t+1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distillery.errors import ConfigError

KD_ROW = "kd_row"  # the one column signals keep through TRL's dataset preparation


def attach_row_ids(dataset):
    """Add the `kd_row` column (0..n-1) that ties each tokenized example back to its source row."""
    if KD_ROW in dataset.column_names:
        return dataset
    return dataset.add_column(KD_ROW, list(range(len(dataset))))


def tokenize_chat(tokenizer, messages: list[dict], tools: Any = None) -> dict[str, list[int]]:
    """Token ids and assistant mask of one conversation, exactly as TRL's SFTTrainer tokenizes it."""
    tools = json.loads(tools) if isinstance(tools, str) else tools
    out = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return {"input_ids": list(out["input_ids"]), "assistant_masks": list(out["assistant_masks"])}


def same_vocabulary(tokenizer_a, tokenizer_b) -> bool:
    """True when two tokenizers map every token string to the same id (special tokens included)."""
    return tokenizer_a is tokenizer_b or tokenizer_a.get_vocab() == tokenizer_b.get_vocab()


class TeacherSignal:
    """Base class: a signal that adds nothing (subclasses override what they need)."""

    kind = "sequence"  # "sequence" | "dense" | "sparse" | "action"
    name = "sequence"

    def collate(self, batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
        """Add this signal's tensors for the examples `rows` to a collated batch."""
        return batch

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
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher logits (B, T, V) over the same tokens the student sees, without a graph."""
        self.model.eval()  # the Trainer may have switched every module to train mode
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def describe(self) -> dict[str, Any]:
        config = self.model.config
        return {"signal": self.name, "teacher": getattr(config, "_name_or_path", "") or type(self.model).__name__}


# ---------------------------------------------------------------------------------------------
# Sparse top-k sidecar.

SIDECAR_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),  # row of the dataset the targets belong to
        ("positions", pa.list_(pa.int32())),  # index in input_ids of each predicted token
        ("token_ids", pa.list_(pa.int32())),  # input_ids[position], to check alignment when read
        ("topk_ids", pa.list_(pa.list_(pa.int32()))),  # (n, k) teacher's top-k token ids
        ("topk_logprobs", pa.list_(pa.list_(pa.float16()))),  # (n, k) their log-probabilities at T = 1
    ]
)


def write_topk_sidecar(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write sparse teacher targets: one record per example, with the fields of `SIDECAR_SCHEMA`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(records), schema=SIDECAR_SCHEMA)
    pq.write_table(table, path)
    return path


def read_topk_sidecar(path: str | Path) -> dict[int, dict[str, Any]]:
    """Read a sidecar into {row: {"positions", "token_ids", "topk_ids", "topk_logprobs"}} (tensors)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such top-k sidecar file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file: {exc}") from None
    missing = {"positions", "topk_ids", "topk_logprobs"} - set(table.column_names)
    if missing:
        raise ConfigError(f"{path}: sidecar lacks column(s) {', '.join(sorted(missing))}")
    records = table.to_pylist()
    out: dict[int, dict[str, Any]] = {}
    for index, record in enumerate(records):
        row = record.get("row", index)
        row = index if row is None else int(row)
        positions = torch.tensor(record["positions"] or [], dtype=torch.long)
        ids = torch.tensor(record["topk_ids"] or [], dtype=torch.long)
        logprobs = torch.tensor(record["topk_logprobs"] or [], dtype=torch.float32)
        if ids.shape != logprobs.shape or ids.size(0) != positions.numel():
            raise ConfigError(
                f"{path}: row {row}: {positions.numel()} positions but top-k arrays of shape "
                f"{tuple(ids.shape)} and {tuple(logprobs.shape)}"
            )
        token_ids = record.get("token_ids")
        out[row] = {
            "positions": positions,
            "token_ids": None if token_ids is None else torch.tensor(token_ids, dtype=torch.long),
            "topk_ids": ids,
            "topk_logprobs": logprobs,
        }
    return out


class SparseTopKSignal(TeacherSignal):
    """Top-k teacher log-probabilities from a sidecar, padded into (B, T, k) tensors per batch.

    Tokens that carry a label but have no teacher entry (a sidecar that only covers some turns)
    are marked in `kd_mask`; the trainer trains them on the hard label alone.
    """

    kind = "sparse"
    name = "sparse"

    def __init__(self, sidecar: str | Path | dict[int, dict[str, Any]]):
        self.source = str(sidecar) if not isinstance(sidecar, dict) else "<memory>"
        self.targets = read_topk_sidecar(sidecar) if not isinstance(sidecar, dict) else sidecar
        ks = {t["topk_ids"].size(1) for t in self.targets.values() if t["topk_ids"].numel()}
        if len(ks) > 1:
            raise ConfigError(f"{self.source}: every position needs the same k; found k in {sorted(ks)}")
        self.k = ks.pop() if ks else 1

    def collate(self, batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
        input_ids = batch["input_ids"]
        batch_size, length = input_ids.shape
        ids = torch.zeros(batch_size, length, self.k, dtype=torch.long)
        # Filler for positions without targets: a uniform teacher (finite, and never used, since
        # those tokens are trained with alpha = 1).
        logprobs = torch.full((batch_size, length, self.k), -math.log(self.k) if self.k > 1 else 0.0)
        mask = torch.zeros(batch_size, length, dtype=torch.bool)
        for b, row in enumerate(rows):
            target = self.targets.get(int(row))
            if target is None or target["positions"].numel() == 0:
                continue
            positions = target["positions"]
            inside = (positions >= 1) & (positions < length)  # truncated tails are dropped
            positions = positions[inside]
            if target["token_ids"] is not None:
                expected = target["token_ids"][inside]
                actual = input_ids[b, positions]
                if not torch.equal(expected, actual):
                    where = int(positions[(expected != actual).nonzero()[0, 0]])
                    raise ConfigError(
                        f"{self.source}: row {row}: sidecar token at position {where} does not match the dataset; "
                        "was it built with another tokenizer or chat template?"
                    )
            # The distribution over token p comes out of position p - 1 (model convention).
            ids[b, positions - 1] = target["topk_ids"][inside]
            logprobs[b, positions - 1] = target["topk_logprobs"][inside]
            mask[b, positions - 1] = True
        batch["kd_topk_ids"], batch["kd_topk_logprobs"], batch["kd_mask"] = ids, logprobs, mask
        return batch

    def describe(self) -> dict[str, Any]:
        return {"signal": self.name, "sidecar": self.source, "k": self.k}


@torch.no_grad()
def teacher_topk_records(
    teacher_model,
    tokenized_rows: Sequence[dict[str, Any]],
    *,
    k: int = 20,
    batch_size: int = 8,
    vocab_size: int | None = None,
) -> list[dict[str, Any]]:
    """Top-k teacher log-probabilities at every label position of already tokenized rows.

    `tokenized_rows` carry `input_ids`, `labels` (-100 where no loss) and optionally `kd_row`.
    This is what an OpenAI-compatible server returns as `prompt_logprobs`, computed locally; it is
    how the offline sparse signal is produced from a local teacher.
    """
    teacher_model.eval()
    device = next(teacher_model.parameters()).device
    records = []
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
            labels = torch.tensor(r["labels"])
            positions = (labels != -100).nonzero().squeeze(1)
            positions = positions[positions >= 1]
            logprobs = torch.log_softmax(logits[b, positions - 1], dim=-1)
            top = logprobs.topk(min(k, logprobs.size(-1)), dim=-1)
            records.append(
                {
                    "row": int(r.get(KD_ROW, start + b)),
                    "positions": positions.tolist(),
                    "token_ids": [r["input_ids"][p] for p in positions.tolist()],
                    "topk_ids": top.indices.cpu().tolist(),
                    "topk_logprobs": top.values.cpu().tolist(),
                }
            )
    return records


# ---------------------------------------------------------------------------------------------
# Action distributions.


def _action_message(action: str) -> dict[str, Any]:
    """The assistant message that takes a canonical action (a ToolCall.canonical() string or an answer)."""
    try:
        payload = json.loads(action)
    except json.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("name"), str):
        arguments = payload.get("arguments", payload.get("raw_arguments", {}))
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        call = {"id": "call_0", "type": "function", "function": {"name": payload["name"], "arguments": arguments}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    return {"role": "assistant", "content": action}


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

    def _states(self, row: int) -> list[tuple[list[dict], dict[str, float]]]:
        example = self.dataset[int(row)]
        distributions = example["action_distributions"]
        if isinstance(distributions, str):
            distributions = json.loads(distributions)
        if not distributions:
            return []
        messages = example["messages"]
        assistant_at = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        states = []
        for index, distribution in zip(assistant_at, distributions, strict=False):
            if distribution:
                states.append((messages[:index], distribution))
        return states

    def collate(self, batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
        sequences, labels, state_of, probs = [], [], [], []
        tools_column = "tools" in self.dataset.column_names
        num_states = 0
        for row in rows:
            tools = self.dataset[int(row)]["tools"] if tools_column else None
            for prefix, distribution in self._states(row):
                top = sorted(distribution.items(), key=lambda kv: -kv[1])[: self.max_actions]
                prefix_ids = tokenize_chat(self.tokenizer, prefix, tools)["input_ids"] if prefix else []
                for action, p in top:
                    full = tokenize_chat(self.tokenizer, [*prefix, _action_message(action)], tools)
                    ids, mask = full["input_ids"], full["assistant_masks"]
                    # Only the new assistant turn counts: earlier assistant turns are context here.
                    seq_labels = [t if (m and i >= len(prefix_ids)) else -100 for i, (t, m) in enumerate(zip(ids, mask))]
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
