"""Before a hosted fine-tuning job is started: hyperparameter checks, file validation, cost estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from distillery.errors import ConfigError

MAX_SUFFIX_CHARS = 64  # OpenAI's documented limit for `suffix`


def check_hyperparameters(
    *,
    suffix: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate_multiplier: float | None = None,
) -> None:
    """Refuse values the API would reject, before anything is uploaded or billed."""
    if suffix is not None and not (0 < len(suffix) <= MAX_SUFFIX_CHARS):
        raise ConfigError(f"--suffix: must be 1 to {MAX_SUFFIX_CHARS} characters, got {len(suffix)}")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs: must be at least 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1, got {batch_size}")
    if learning_rate_multiplier is not None and not learning_rate_multiplier > 0:
        raise ConfigError(f"--lr-multiplier: must be positive, got {learning_rate_multiplier}")


# --- before uploading: validation and cost -------------------------------------------------------

# OpenAI's cookbook heuristic for `n_epochs: "auto"` (its "Data preparation and analysis for chat
# model fine-tuning" notebook): 3 epochs, raised so that small files see ~100 examples in total and
# lowered so that large ones see ~25,000. The service's real choice is reported on the job.
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MAX_AUTO_EPOCHS = 3, 100, 25_000, 25


def auto_epochs(examples: int) -> int:
    """The epochs "auto" is expected to pick for this many training examples (an estimate)."""
    if examples <= 0:
        return TARGET_EPOCHS
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / examples))
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


@dataclass
class Preflight:
    """What we know before uploading: the files are valid, and what training will roughly cost."""

    examples: int
    training_tokens: int  # per epoch, estimated
    epochs: int
    epochs_estimated: bool  # True when epochs is our guess at "auto"
    price_per_mtok: float | None
    token_method: str
    validated: bool

    @property
    def cost_usd(self) -> float | None:
        if self.price_per_mtok is None:
            return None
        return self.training_tokens * self.epochs * self.price_per_mtok / 1_000_000

    def describe(self, model: str) -> str:
        epochs = f"{self.epochs} epochs" + (" (our guess at 'auto')" if self.epochs_estimated else "")
        if self.cost_usd is None:
            cost = f"no training price for {model} in prices.toml [training.*]"
        else:
            cost = f"about ${self.cost_usd:,.2f} at ${self.price_per_mtok:g}/M training tokens (prices.toml list price)"
        return (
            f"{self.examples:,} examples, ~{self.training_tokens:,} tokens per epoch x {epochs}: {cost}; "
            f"tokens {self.token_method}"
        )


def preflight(
    train_jsonl: str | Path,
    model: str,
    *,
    validation_jsonl: str | Path | None = None,
    epochs: int | None = None,
    validate: bool = True,
) -> Preflight:
    """Check the files with the dataset builder's validator and estimate the training cost.

    Tokens are estimated by the builder's `TokenCounter` without a tokenizer: characters / 4 of
    each example's JSON (messages and tools). OpenAI counts with its own tokenizer and bills
    `trained_tokens` (tokens per epoch x epochs), which the job reports when it finishes. Only the
    training file is priced. With `validate=False` the validator is skipped and tokens are still
    estimated the same way.
    """
    from distillery.dataset.stats import CHARS_PER_TOKEN, TokenCounter
    from distillery.dataset.validate import validate_openai_jsonl
    from distillery.pricing import training_price_per_mtok

    counter = TokenCounter()
    paths = [Path(train_jsonl)] + ([Path(validation_jsonl)] if validation_jsonl else [])
    reports = []
    for position, path in enumerate(paths):
        # OpenAI asks for at least 10 training examples; a validation file may be smaller.
        report = validate_openai_jsonl(path, counter=counter, min_examples=10 if position == 0 else 1)
        if validate and not report.ok:
            lines = report.lines()
            more = f" (and {len(lines) - 1} more; see `distillery build validate {path}`)" if len(lines) > 1 else ""
            raise ConfigError(lines[0] + more)
        reports.append(report)
    train = reports[0]
    chosen = epochs or auto_epochs(train.examples)
    return Preflight(
        examples=train.examples,
        training_tokens=sum(train.token_counts),
        epochs=chosen,
        epochs_estimated=epochs is None,
        price_per_mtok=training_price_per_mtok(model),
        # Not counter.method: that one points at a --tokenizer option this path does not have.
        token_method=f"estimated as characters / {CHARS_PER_TOKEN} of each example's JSON",
        validated=validate,
    )


# --- one call ------------------------------------------------------------------------------------
