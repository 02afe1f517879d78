"""Token counts, their distribution, and what fine-tuning on them would cost.

Tokens are counted with the student's tokenizer when one is given, by rendering the example
through its chat template with the tools, exactly as training will. Without a tokenizer the count
is an estimate, characters / 4 of the rendered text (a common rule of thumb for English and JSON
with BPE vocabularies); every report says which one it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.errors import ConfigError
from distillery.pricing import training_price_per_mtok

CHARS_PER_TOKEN = 4


def load_tokenizer(path: str | Path) -> Any:
    """A local tokenizer directory (never the hub): `AutoTokenizer.from_pretrained(dir)`."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"--tokenizer: {path} is not a directory with a saved tokenizer")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--tokenizer: cannot load a tokenizer from {path}: {str(exc).splitlines()[0]}") from None


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages with arguments as objects or JSON strings -> what chat templates take."""
    out = []
    for m in messages:
        item = {k: v for k, v in m.items() if k != "weight" and v is not None}
        item.setdefault("content", "")
        if m.get("tool_calls"):
            item["tool_calls"] = [
                {**c, "function": {**c["function"], "arguments": _as_object(c["function"].get("arguments"))}}
                for c in m["tool_calls"]
            ]
        out.append(item)
    return out


def _as_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


class TokenCounter:
    """Counts an example's tokens with a tokenizer's chat template, or estimates them without one."""

    def __init__(self, tokenizer: Any = None):
        self.tokenizer = tokenizer

    @property
    def method(self) -> str:
        if self.tokenizer is None:
            return f"estimated (characters / {CHARS_PER_TOKEN}; pass --tokenizer for exact counts)"
        name = getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
        return f"counted with the student tokenizer's chat template ({name})"

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(template_messages(messages), tools=tools or None, tokenize=False)
        return json.dumps({"messages": messages, "tools": tools or []}, ensure_ascii=False)

    def count(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
        if self.tokenizer is None:
            return math.ceil(len(self.render(messages, tools)) / CHARS_PER_TOKEN)
        if getattr(self.tokenizer, "chat_template", None):
            encoded = self.tokenizer.apply_chat_template(
                template_messages(messages), tools=tools or None, tokenize=True, return_dict=True
            )
            return len(encoded["input_ids"])
        return len(self.tokenizer(self.render(messages, tools))["input_ids"])


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100), 0 for an empty list."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class TokenStats:
    examples: int
    total: int
    p50: int
    p95: int
    max: int
    method: str

    @classmethod
    def of(cls, counts: list[int], method: str) -> TokenStats:
        return cls(len(counts), sum(counts), percentile(counts, 50), percentile(counts, 95), max(counts, default=0), method)


@dataclass
class CostEstimate:
    model: str
    epochs: int
    training_tokens: int
    price_per_mtok: float | None

    @property
    def usd(self) -> float | None:
        if self.price_per_mtok is None:
            return None
        return self.training_tokens * self.epochs * self.price_per_mtok / 1_000_000

    def describe(self) -> str:
        if self.usd is None:
            return f"no training price for {self.model} in the price table (prices.toml [training.*])"
        return (
            f"${self.usd:,.2f} = {self.training_tokens:,} tokens x {self.epochs} epochs x "
            f"${self.price_per_mtok:g}/M ({self.model}, list price from prices.toml)"
        )


def estimate_cost(total_tokens: int, *, epochs: int, model: str) -> CostEstimate:
    """Hosted fine-tuning bills every token of the training file once per epoch."""
    return CostEstimate(model, epochs, total_tokens, training_price_per_mtok(model))
