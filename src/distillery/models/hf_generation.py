"""What `HFModel`'s generation runs with: the early-reject stopping criterion, argument checks,
per-call thread and seed scopes, and splitting a reasoning model's `<think>` block off its text."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria

from distillery.errors import ConfigError
from distillery.trajectory import ThinkingBlock, ToolSpec

if TYPE_CHECKING:
    from distillery.models.hf import HFModel

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class _EarlyReject(StoppingCriteria):
    """Stops each row of a greedy batch once a min-logprob scorer must reject what it wrote.

    Per step it takes the chosen token's temperature-1 logprob from the raw logits transformers
    passes in, splits the text so far with `HFModel.token_pieces` (the split the scorer will use)
    and asks `surely_rejected_by_min`. `stopped` maps a row to the number of tokens it had.
    """

    def __init__(self, model: HFModel, threshold: float, prompt_width: int):
        self.model = model
        self.threshold = threshold
        self.width = prompt_width
        self.bound = math.log(threshold) if threshold > 0 else float("-inf")
        self.logprobs: dict[int, list[float]] = {}
        self.doubtful: set[int] = set()  # rows with a token below the threshold so far
        self.stopped: dict[int, int] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        from distillery.routing.action_tokens import surely_rejected_by_min

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        chosen = input_ids[:, -1]
        last = scores[-1] if isinstance(scores, tuple) else scores  # transformers passes every step's so far
        step_logprobs = last.float().log_softmax(-1).gather(1, chosen[:, None])[:, 0].tolist()
        for row, logprob in enumerate(step_logprobs):
            if row in self.stopped:
                done[row] = True
                continue
            self.logprobs.setdefault(row, []).append(logprob)
            tokens = input_ids[row, self.width:].tolist()
            if any(token in self.model.stop_token_ids for token in tokens):
                continue  # finished on its own (later positions are padding)
            # The full check decodes the whole text; run it only once some token is doubtful and
            # this one is doubtful too or may close a name or an argument object. Skipping a check
            # only means stopping later, never a different decision.
            if logprob < self.bound:
                self.doubtful.add(row)
            elif row not in self.doubtful or not any(c in self.model._decode([tokens[-1]]) for c in '"}'):
                continue
            if row in self.doubtful and surely_rejected_by_min(self.model.token_pieces(tokens), self.logprobs[row],
                                                               self.threshold):
                self.stopped[row] = len(tokens)
                done[row] = True
        return done



def _tools_per_conversation(tools: Any, count: int) -> list[list[ToolSpec] | None]:
    if not tools:
        return [None] * count
    if all(isinstance(spec, ToolSpec) for spec in tools):
        return [list(tools)] * count
    if len(tools) != count:
        raise ConfigError(f"generate_many: {len(tools)} tool lists for {count} conversations")
    return [list(t) if t else None for t in tools]


def _split_thinking(text: str) -> tuple[list[ThinkingBlock], str]:
    """A leading `<think>...</think>` block (Qwen3 and other reasoning models) becomes a ThinkingBlock."""
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return [], text
    end = stripped.find(THINK_CLOSE)
    if end < 0:  # cut off while thinking
        return [ThinkingBlock(thinking=stripped[len(THINK_OPEN) :].strip())], ""
    thought = stripped[len(THINK_OPEN) : end].strip()
    return [ThinkingBlock(thinking=thought)] if thought else [], stripped[end + len(THINK_CLOSE) :]


def _check_arguments(*, n: int, temperature: float, top_logprobs: int, max_tokens: int | None) -> None:
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if top_logprobs < 0:
        raise ConfigError(f"top_logprobs must be >= 0, got {top_logprobs}")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")


class _threads:
    """Run with `count` intra-op threads, then restore torch's previous setting (None: leave it)."""

    def __init__(self, count: int | None):
        self.count = count
        self._previous: int | None = None

    def __enter__(self) -> None:
        if self.count is not None and torch.get_num_threads() != self.count:
            self._previous = torch.get_num_threads()
            torch.set_num_threads(self.count)

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            torch.set_num_threads(self._previous)
            self._previous = None


class _seeded:
    """Seed torch's RNG for one call and restore the previous state afterwards (None: do nothing)."""

    def __init__(self, seed: int | None, device: torch.device):
        self.seed = seed
        self.device = torch.device(device)
        self._fork = None

    def __enter__(self) -> None:
        if self.seed is not None:
            on_cpu = self.device.type == "cpu"
            self._fork = torch.random.fork_rng(
                devices=[] if on_cpu else [self.device], device_type="cuda" if on_cpu else self.device.type
            )
            self._fork.__enter__()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)
            self._fork = None
