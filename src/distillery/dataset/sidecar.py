"""Teacher-signal sidecars for knowledge distillation, written next to a split's training file.

Top-k logprobs (`<split>.topk.parquet` + `<split>.topk.json`)
    Sparse soft targets: at each assistant token of the training sequence, the teacher's top-k
    alternatives and their logprobs. They are only meaningful when teacher and student share a
    vocabulary (same vocab, merges and added tokens), so the builder compares tokenizer
    fingerprints and refuses otherwise.

    Alignment. The example is tokenized with the student tokenizer exactly as the trainer does it
    (`distillery.chat_tokens`: each assistant turn after its own inference prompt). For each step, the teacher's generated
    token ids are compared with the ids of that span, and only positions where they agree get a
    target ("exact": only while the whole context so far is what the teacher generated; "matched":
    any shared token, see `align_topk`). Positions where the training text differs from what the
    teacher generated (dropped reasoning, re-rendered JSON) have no target, and the coverage says
    how many assistant tokens got one.

    Layout. One Parquet row per training sequence: `example` (the sequence's number when the split
    file is tokenized in order; usually one per line, more where a conversation splits, int32), `seq_len`
    (int32), `positions` (list<int32>), `ids` (list<int32>, positions x k, -1 = no alternative)
    and `logprobs` (list<float16>, positions x k, -inf for padding). Row t's targets are the
    teacher's distribution for the token *at* position t, so they pair with the student's logits
    at position t - 1. `read_topk` returns them dense, as `(T, k)` tensors.

Action distributions (`<split>.actions.jsonl`)
    From n teacher samples per task, the empirical distribution over canonical actions at each
    state. A state is the task plus the actions taken and the tool results seen so far (not the
    reasoning text, which differs between samples even when the actions agree). An action is the
    step's tool call as sorted-key JSON (`ToolCall.canonical()`), a sorted JSON list of them for
    parallel calls, or `{"final_answer": text}`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillery.chat_tokens import tokenize_conversation, trained_spans
from distillery.dataset.sources import Example
from distillery.dataset.stats import template_messages
from distillery.errors import ConfigError
from distillery.formats.hermes import to_hf_tools
from distillery.trajectory import Step, Trajectory, canonical_json

# /2: one row per training sequence (`chat_tokens`), tokenized turn by turn as inference does.
TOPK_FORMAT = "distillery.topk/2"
TOPK_SCHEMA = pa.schema(
    [
        ("example", pa.int32()),
        ("seq_len", pa.int32()),
        ("positions", pa.list_(pa.int32())),
        ("ids", pa.list_(pa.int32())),
        ("logprobs", pa.list_(pa.float16())),
    ]
)


class SidecarError(ConfigError):
    """A KD sidecar cannot be built from this input (no logprobs, different vocabularies, ...)."""


# -- tokenizer identity ----------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 over the vocabulary, the BPE merges and the added tokens: equal iff ids mean the same text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        model = spec.get("model", {})
        identity = {
            "type": model.get("type"),
            "vocab": model.get("vocab"),
            "merges": model.get("merges"),
            "added": sorted((t["id"], t["content"]) for t in spec.get("added_tokens", [])),
        }
    else:
        identity = {"vocab": sorted(tokenizer.get_vocab().items())}
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def check_shared_vocabulary(teacher_tokenizer: Any, student_tokenizer: Any) -> str:
    """The shared fingerprint, or a `SidecarError` explaining why top-k targets cannot be used."""
    teacher, student = tokenizer_fingerprint(teacher_tokenizer), tokenizer_fingerprint(student_tokenizer)
    if teacher != student:
        raise SidecarError(
            f"--sidecar topk: teacher and student tokenizers differ (vocab/merges hash {teacher[:12]} vs "
            f"{student[:12]}); sparse logit targets need a shared vocabulary, so use sequence-level KD "
            "(train on the teacher's text) for this pair"
        )
    return student


# -- top-k alignment ---------------------------------------------------------------------------


def _token_id(entry: Any) -> int | None:
    """A logprob entry's token id; vLLM's `return_tokens_as_token_ids` spells it "token_id:123"."""
    if entry.token_id is not None:
        return entry.token_id
    if isinstance(entry.token, str) and entry.token.startswith("token_id:"):
        try:
            return int(entry.token.partition(":")[2])
        except ValueError:
            return None
    return None


@dataclass
class AlignedTargets:
    seq_len: int
    positions: list[int]
    ids: np.ndarray  # (P, k) int32
    logprobs: np.ndarray  # (P, k) float16
    assistant_tokens: int


ALIGNMENTS = ("exact", "matched")


def _common_prefix(a: list[int | None], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def align_topk(example: Example, tokenizer: Any, k: int, alignment: str = "exact") -> list[AlignedTargets]:
    """Attach the teacher's top-k to the positions of the student's training sequences for `example`.

    The sequences are `chat_tokens.tokenize_conversation`'s pieces, exactly what the trainer
    trains on (usually one; more where the history re-tokenizes differently), one result each.
    "exact": a position gets a target only when everything before it is what the teacher saw and
    generated, so the target is the teacher's distribution in the student's very context: within
    each step, the prefix the teacher's tokens share with the training text; after the first step
    that differs (dropped reasoning, re-rendered JSON), nothing. "matched": every token the two
    streams share (longest matching blocks), even after a difference; the teacher's distribution
    there was conditioned on a slightly different context, so treat it as an approximation.
    """
    if alignment not in ALIGNMENTS:
        raise ConfigError(f"unknown top-k alignment {alignment!r}; choose one of {', '.join(ALIGNMENTS)}")
    tools = to_hf_tools(example.sample.tools)
    messages = template_messages(example.messages)
    pieces = tokenize_conversation(tokenizer, messages, tools)
    steps: list[Step] = example.trajectory.steps if example.trajectory is not None else []
    assistant_turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    # Otherwise the rendering merged or split steps: no safe alignment.
    step_of_turn = dict(zip(assistant_turns, steps)) if len(assistant_turns) == len(steps) else {}
    context_intact = True  # exact: every earlier assistant span is what the teacher generated
    out = []
    for piece in pieces:
        positions: list[int] = []
        rows_ids: list[list[int]] = []
        rows_lp: list[list[float]] = []
        for (start, end), turn in zip(trained_spans(piece.loss_mask), piece.turns):
            step = step_of_turn.get(turn)
            if step is None or (alignment == "exact" and not context_intact):
                continue
            if not step.logprobs:
                context_intact = False  # unknown teacher text: later contexts cannot be vouched for
                continue
            teacher_ids = [_token_id(entry) for entry in step.logprobs]
            span_ids = piece.input_ids[start:end]
            if alignment == "exact":
                shared = _common_prefix(teacher_ids, span_ids)
                blocks = [(0, 0, shared)]
                # The next step's context is still the teacher's when one stream is a prefix of the
                # other (servers differ in whether the end-of-turn token gets a logprob).
                context_intact = shared == min(len(teacher_ids), len(span_ids))
            else:
                matcher = difflib.SequenceMatcher(None, teacher_ids, span_ids, autojunk=False)
                blocks = matcher.get_matching_blocks()
            for a, b, size in blocks:
                for offset in range(size):
                    entry = step.logprobs[a + offset]
                    if teacher_ids[a + offset] is None:
                        continue
                    alternatives = [(t.token_id, t.logprob) for t in entry.top if t.token_id is not None]
                    if not alternatives:  # no top list: the sampled token is a (top-1) target
                        alternatives = [(teacher_ids[a + offset], entry.logprob)]
                    alternatives = sorted(alternatives, key=lambda pair: -pair[1])[:k]
                    pad = k - len(alternatives)
                    positions.append(start + b + offset)
                    rows_ids.append([i for i, _ in alternatives] + [-1] * pad)
                    rows_lp.append([lp for _, lp in alternatives] + [float("-inf")] * pad)
        out.append(AlignedTargets(
            seq_len=len(piece.input_ids),
            positions=positions,
            ids=np.array(rows_ids, dtype=np.int32).reshape(-1, k),
            logprobs=np.array(rows_lp, dtype=np.float16).reshape(-1, k),
            assistant_tokens=sum(piece.loss_mask),
        ))
    return out


@dataclass
class TopKReport:
    path: Path
    k: int
    examples: int
    target_positions: int
    assistant_tokens: int
    bytes: int

    @property
    def coverage(self) -> float:
        return self.target_positions / self.assistant_tokens if self.assistant_tokens else 0.0

    @property
    def bytes_per_token(self) -> float:
        """File bytes per assistant token that has a target."""
        return self.bytes / self.target_positions if self.target_positions else 0.0


def build_topk_sidecar(
    examples: list[Example], path: str | Path, *, tokenizer: Any, k: int, fingerprint: str, alignment: str = "exact"
) -> tuple[pa.Table, dict[str, Any], TopKReport]:
    """The sidecar's table and JSON header for `examples`; the caller writes them (atomically).

    `report.bytes` is filled in by `finish_topk_report` once the file exists.
    """
    if k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {k}")
    rows: dict[str, list[Any]] = {name: [] for name in TOPK_SCHEMA.names}
    targeted = assistant = 0
    sequences = 0
    for example in examples:
        for aligned in align_topk(example, tokenizer, k, alignment):
            # Rows are numbered by training sequence, in the order the trainer tokenizes the split.
            rows["example"].append(sequences)
            sequences += 1
            rows["seq_len"].append(aligned.seq_len)
            rows["positions"].append(np.array(aligned.positions, dtype=np.int32))
            rows["ids"].append(aligned.ids.reshape(-1))
            rows["logprobs"].append(aligned.logprobs.reshape(-1))
            targeted += len(aligned.positions)
            assistant += aligned.assistant_tokens
    table = pa.Table.from_pydict(rows, schema=TOPK_SCHEMA)
    report = TopKReport(Path(path), k, len(examples), targeted, assistant, 0)
    header = {
        "format": TOPK_FORMAT,
        "tokenizer_fingerprint": fingerprint,
        "k": k,
        "alignment": alignment,
        "examples": len(examples),
        "sequences": sequences,
        "target_positions": targeted,
        "assistant_tokens": assistant,
        "coverage": round(report.coverage, 6),
        "values": "float16 logprobs; ids int32, -1 and -inf pad rows with fewer than k alternatives",
        "positions": "row t holds the teacher's top-k for the token at position t (pairs with logits at t-1)",
    }
    return table, header, report


def topk_parquet_bytes(table: pa.Table) -> bytes:
    """The sidecar file's bytes, serialised in memory so its size is known before anything is written."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def topk_header_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


class TopKSidecar:
    """Reads a top-k sidecar back: `sidecar[i]` -> dense `(ids, logprobs, has_target)` for example i.

    `ids` is a `(T, k)` int64 tensor (-1 where there is no alternative), `logprobs` a `(T, k)`
    float32 tensor (-inf there), `has_target` a `(T,)` bool tensor; T is the example's sequence
    length under the student tokenizer.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header_path = topk_header_path(self.path)
        try:
            self.header = json.loads(header_path.read_text(encoding="utf-8"))
            self.table = pq.read_table(self.path)
        except FileNotFoundError as exc:
            raise ConfigError(f"{exc.filename}: top-k sidecar file not found") from None
        if self.header.get("format") != TOPK_FORMAT:
            raise ConfigError(f"{header_path}: format {self.header.get('format')!r} is not {TOPK_FORMAT}")
        self.k = int(self.header["k"])
        self._row_of = {int(e): row for row, e in enumerate(self.table.column("example").to_pylist())}

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, example: int):
        import torch

        if example not in self._row_of:
            raise KeyError(f"{self.path}: no example {example}")
        row = self.table.slice(self._row_of[example], 1).to_pylist()[0]
        seq_len, k = row["seq_len"], self.k
        positions = torch.tensor(row["positions"], dtype=torch.long)
        ids = torch.full((seq_len, k), -1, dtype=torch.long)
        values = torch.full((seq_len, k), float("-inf"), dtype=torch.float32)
        has_target = torch.zeros(seq_len, dtype=torch.bool)
        if len(positions):
            ids[positions] = torch.tensor(row["ids"], dtype=torch.long).view(-1, k)
            raw = np.array(row["logprobs"], dtype=np.float16).astype(np.float32)
            values[positions] = torch.from_numpy(raw).view(-1, k)
            has_target[positions] = True
        return ids, values, has_target


def read_topk(path: str | Path, example: int):
    """Dense `(ids, logprobs, has_target)` tensors for one example of a top-k sidecar."""
    return TopKSidecar(path)[example]


# -- action distributions ------------------------------------------------------------------------


def action_key(step: Step) -> str:
    """A step's action, canonicalised so that equal actions compare equal across samples."""
    if step.tool_calls:
        calls = sorted(call.canonical() for call in step.tool_calls)
        return calls[0] if len(calls) == 1 else "[" + ",".join(calls) + "]"
    return canonical_json({"final_answer": step.text.strip()})


def state_keys(trajectory: Trajectory) -> list[str]:
    """One key per step: the task and the actions and observations before it."""
    keys, history = [], []
    for step in trajectory.steps:
        keys.append(canonical_json([trajectory.task_id, trajectory.query, history]))
        history = history + [[action_key(step), [r.content for r in step.tool_results]]]
    return keys


def action_distributions(trajectories: list[Trajectory]) -> dict[tuple[str, str], tuple[int, dict[str, float]]]:
    """`{(model, state key): (n, {action: probability})}` over every trajectory given."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for t in trajectories:
        for key, step in zip(state_keys(t), t.steps):
            counts[(t.model, key)][action_key(step)] += 1
    out = {}
    for state, counter in counts.items():
        n = sum(counter.values())
        out[state] = (n, {action: c / n for action, c in sorted(counter.items())})
    return out


def attach_action_distributions(examples: list[Example], population: list[Trajectory]) -> int:
    """Set `sample.action_distributions` for every example with a trajectory; returns how many got one."""
    table = action_distributions(population)
    attached = 0
    for e in examples:
        if e.trajectory is None:
            continue
        found = [table.get((e.trajectory.model, key), (0, {})) for key in state_keys(e.trajectory)]
        e.sample.action_distributions = [dist for _, dist in found]
        e.action_samples = [n for n, _ in found]
        attached += 1
    return attached


def action_rows(examples: list[Example]) -> list[dict[str, Any]]:
    rows = []
    for index, e in enumerate(examples):
        if e.sample.action_distributions is None:
            continue
        samples = e.action_samples or []
        for step, dist in enumerate(e.sample.action_distributions):
            rows.append(
                {
                    "example": index,
                    "task_id": e.sample.task_id,
                    "trajectory_id": e.sample.trajectory_id,
                    "step": step,
                    "n": samples[step] if step < len(samples) else None,
                    "distribution": dist,
                }
            )
    return rows
