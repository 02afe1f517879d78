"""How sure is the student of the action it just proposed? Scores in [0, 1]; low means "likely wrong".

Confidence comes from the tokens of the *action*, never from the whole text: the reasoning a model
writes before a tool call is free-form and its token probabilities say little about whether the
call is right. For a tool call the action tokens are the tool name and the argument JSON inside
`<tool_call>...</tool_call>` (the `{"name": "` scaffolding is excluded: it is near-certain and would
only dilute the statistics); for a final answer they are the answer text.

    scorer = get_scorer("logprob-mean")          # or "logprob-min", "logprob-q10", "agreement:5",
    confidence = scorer(turn, tools=specs)       #    "schema", "learned:path/to/scorer.json"

Every scorer gives zero confidence to an invalid action (unparseable or schema-violating tool call,
unknown tool, tool-call markup in an answer, empty answer): escalating it is always right. The gate
is applied once, in `score_action`, for every scorer (the random-router baseline alone opts out). Scorers are registered by name so a
cascade config can name them; `ConfidenceScorer` has one abstract method, `score`.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jsonschema

from distillery.formats.hermes import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from distillery.errors import ConfigError, DistilleryError, read_json_file
from distillery.routing.action_tokens import (
    NoActionLogprobs,
    action_token_logprobs,
    logprob_features,
    quantile,
)
from distillery.tasks import normalize_text
from distillery.trajectory import ToolSpec, Turn, canonical_json

# --------------------------------------------------------------------------------------------------
# Locating the action tokens: routing/action_tokens.py
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Validity and agreement
# --------------------------------------------------------------------------------------------------


def action_key(turn: Turn) -> str:
    """What two samples must share to "agree": the canonical tool calls, or the normalised answer."""
    if turn.tool_calls:
        return "calls:" + "|".join(sorted(call.canonical() for call in turn.tool_calls))
    return "answer:" + normalize_text(turn.text or "")


def invalid_reason(turn: Turn, tools: Sequence[ToolSpec] | None = None) -> str | None:
    """Why the turn's action cannot be right (None when it is well-formed).

    Invalid: an error, `max_tokens` or refusal stop; an empty final answer; tool-call markup
    (`<tool_call>`, `</tool_call>`) left in the visible text, i.e. a broken call the parser could
    not recover (a final answer that is really a garbled call); a tool call that did not parse;
    and, when `tools` is given (the schemas offered, possibly none), a call to a tool not offered
    or with arguments that violate that tool's JSON schema. `tools=None` means "not known": names
    and arguments are then not checked.
    """
    if turn.stop_reason in ("error", "max_tokens", "refusal", "early_reject"):
        return f"stop_reason={turn.stop_reason}"
    text = turn.text or ""
    markup = next((tag for tag in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE) if tag in text), None)
    if markup is not None:
        kind = "answer" if not turn.tool_calls else "text before the tool call"
        return f"tool-call markup {markup} in the {kind} (a tool call that did not parse)"
    if not turn.tool_calls:
        return None if text.strip() else "empty answer"
    by_name = {spec.name: spec for spec in tools or []}
    for call in turn.tool_calls:
        if call.parse_error is not None:
            return f"tool call {call.name or '?'}: {call.parse_error}"
        if tools is None:
            continue
        spec = by_name.get(call.name)
        if spec is None:
            offered = ", ".join(sorted(by_name)) or "none"
            return f"unknown tool {call.name!r} (offered: {offered})"
        try:
            error = jsonschema.exceptions.best_match(_validator(canonical_json(spec.parameters)).iter_errors(call.arguments))
        except jsonschema.exceptions.SchemaError:
            continue  # a broken schema is the tool's fault, not the action's (ToolBox refuses such tools)
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path)
            return f"tool call {call.name}: arguments{'.' + where if where else ''}: {error.message}"
    return None


@functools.lru_cache(maxsize=512)
def _validator(parameters_json: str) -> jsonschema.Draft202012Validator:
    """The validator of a tool's parameters schema, the dialect `Tool` validates calls with (cached:
    agents offer the same tools at every step)."""
    return jsonschema.Draft202012Validator(json.loads(parameters_json))


def score_action(scorer: ConfidenceScorer, turn: Turn, *, tools: Sequence[ToolSpec] | None = None,
                 samples: Sequence[Turn] = ()) -> tuple[float, str | None]:
    """The one place a proposal is scored: (confidence in [0, 1], why the action is invalid or None).

    The validity gate lives here, not in the scorers: an invalid action (see `invalid_reason`)
    scores 0 whatever the scorer would have said, the learned scorer and any registered one
    included, and the scorer is not consulted. Only a scorer with `checks_validity = False` (the
    random-router baseline, which must ignore the action) is asked anyway.
    """
    reason = invalid_reason(turn, tools)
    if reason is not None and scorer.checks_validity:
        return 0.0, reason
    return min(1.0, max(0.0, float(scorer.score(turn, tools=tools, samples=samples)))), reason


# --------------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------------


class ConfidenceScorer(ABC):
    """Scores one proposed turn. Subclasses implement `score`; calling the scorer adds the validity gate.

    `needs_logprobs` asks the router to request token logprobs; `samples_needed` asks it for that
    many extra samples (at `sample_temperature`) of the same step, passed in as `samples`.
    """

    name: str = "scorer"
    needs_logprobs: bool = False
    samples_needed: int = 0
    sample_temperature: float = 1.0
    checks_validity: bool = True  # False only for baselines that must ignore the action (random)

    @abstractmethod
    def score(self, turn: Turn, *, tools: Sequence[ToolSpec] | None = None, samples: Sequence[Turn] = ()) -> float:
        """Confidence in [0, 1] that `turn`'s action is right."""

    def __call__(self, turn: Turn, *, tools: Sequence[ToolSpec] | None = None, samples: Sequence[Turn] = ()) -> float:
        return score_action(self, turn, tools=tools, samples=samples)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class LogprobScorer(ConfidenceScorer):
    """exp(statistic of the action-token logprobs): min, mean (geometric-mean probability) or a quantile."""

    needs_logprobs = True

    def __init__(self, statistic: str = "mean", q: float | None = None):
        if statistic not in ("min", "mean", "quantile"):
            raise ConfigError(f"logprob scorer: unknown statistic {statistic!r}; use min, mean or quantile")
        if statistic == "quantile" and (q is None or not 0.0 <= q <= 1.0):
            raise ConfigError(f"logprob quantile scorer: q must be in [0, 1], got {q!r}")
        self.statistic = statistic
        self.q = q
        self.name = f"logprob-q{round(q * 100):02d}" if statistic == "quantile" else f"logprob-{statistic}"

    def score(self, turn, *, tools=None, samples=()):
        values = action_token_logprobs(turn)
        if self.statistic == "min":
            value = min(values)
        elif self.statistic == "mean":
            value = sum(values) / len(values)
        else:
            value = quantile(values, self.q)
        return math.exp(value)


class AgreementScorer(ConfidenceScorer):
    """The fraction of k sampled turns whose canonical action equals the proposal's (self-consistency)."""

    def __init__(self, k: int = 5, temperature: float = 1.0):
        if k < 1:
            raise ConfigError(f"agreement scorer: k must be at least 1, got {k}")
        self.samples_needed = k
        self.sample_temperature = temperature
        self.name = f"agreement:{k}"

    def score(self, turn, *, tools=None, samples=()):
        if not samples:
            raise DistilleryError(f"scorer {self.name}: no samples were generated for this step")
        key = action_key(turn)
        return sum(action_key(sample) == key for sample in samples) / len(samples)


class SchemaScorer(ConfidenceScorer):
    """1 for a well-formed action, 0 otherwise (the gate alone): escalates only broken calls."""

    name = "schema"

    def score(self, turn, *, tools=None, samples=()):
        return 1.0


class RandomScorer(ConfidenceScorer):
    """Uniform random confidence: with threshold p it escalates a fraction p of steps at random.

    The baseline router: a real scorer must beat it at the same escalation rate.
    """

    checks_validity = False  # no validity gate: the random router ignores the action entirely

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.name = f"random:{seed}"
        self._rng = random.Random(seed)

    def score(self, turn, *, tools=None, samples=()):
        return self._rng.random()


# Features the learned scorer may use, in a fixed order.
LOGPROB_FEATURES = ["lp_min", "lp_mean", "lp_q10", "lp_q25", "lp_q50", "n_action_tokens"]
ALL_FEATURES = [*LOGPROB_FEATURES, "is_answer", "agreement"]


def step_features(turn: Turn, *, samples: Sequence[Turn] = ()) -> dict[str, float]:
    """Every feature a learned scorer can use for one proposed turn (logprob stats need logprobs)."""
    features = dict(logprob_features(turn))
    features["is_answer"] = 0.0 if turn.tool_calls else 1.0
    if samples:
        key = action_key(turn)
        features["agreement"] = sum(action_key(s) == key for s in samples) / len(samples)
    return features


class LearnedScorer(ConfidenceScorer):
    """Logistic regression over action features, fitted post hoc on validation steps labelled right/wrong.

    Saved as JSON (feature names, standardisation, coefficients) so a cascade config can point at it.
    """

    needs_logprobs = True

    def __init__(self, features: Sequence[str], coef: Sequence[float], intercept: float,
                 mean: Sequence[float], scale: Sequence[float], path: str | None = None):
        unknown = [f for f in features if f not in ALL_FEATURES]
        if unknown:
            raise ConfigError(f"learned scorer: unknown feature(s) {unknown}; known: {ALL_FEATURES}")
        self.features = list(features)
        self.coef = [float(c) for c in coef]
        self.intercept = float(intercept)
        self.mean = [float(m) for m in mean]
        self.scale = [float(s) or 1.0 for s in scale]
        self.samples_needed = 5 if "agreement" in self.features else 0
        self.name = f"learned:{path}" if path else "learned"

    @classmethod
    def fit(cls, rows: Sequence[dict[str, float]], wrong: Sequence[bool], *,
            features: Sequence[str] = (*LOGPROB_FEATURES, "is_answer"), c: float = 1.0) -> LearnedScorer:
        """Fit on feature rows and labels (True = the step was wrong). Needs both labels present."""
        from sklearn.linear_model import LogisticRegression

        if len(set(wrong)) < 2:
            raise DistilleryError("learned scorer: the validation steps are all right or all wrong; cannot fit")
        matrix = [[row[f] for f in features] for row in rows]
        columns = list(zip(*matrix))
        mean = [sum(col) / len(col) for col in columns]
        scale = [math.sqrt(sum((v - m) ** 2 for v in col) / len(col)) or 1.0 for col, m in zip(columns, mean)]
        standardised = [[(v - m) / s for v, m, s in zip(row, mean, scale)] for row in matrix]
        model = LogisticRegression(C=c).fit(standardised, [0 if w else 1 for w in wrong])  # 1 = right
        return cls(features, model.coef_[0].tolist(), float(model.intercept_[0]), mean, scale)

    def probability(self, features: dict[str, float]) -> float:
        z = self.intercept + sum(
            c * (features[f] - m) / s for f, c, m, s in zip(self.features, self.coef, self.mean, self.scale)
        )
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def score(self, turn, *, tools=None, samples=()):
        return self.probability(step_features(turn, samples=samples))

    def save(self, path: str | Path) -> None:
        data = {"kind": "distillery.learned_scorer", "features": self.features, "coef": self.coef,
                "intercept": self.intercept, "mean": self.mean, "scale": self.scale}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LearnedScorer:
        path = Path(path)
        data = read_json_file(path, what="learned-scorer file",
                              missing_hint=" (fit one with `distillery calibrate --fit-scorer`)")
        for field in ("features", "coef", "intercept", "mean", "scale"):
            if field not in data:
                raise ConfigError(f"{path}: learned scorer has no {field!r} field")
        return cls(data["features"], data["coef"], data["intercept"], data["mean"], data["scale"], path=str(path))


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

# name -> factory(argument or None) -> scorer. The argument is what follows the first ':' in a spec.
SCORERS: dict[str, Callable[[str | None], ConfidenceScorer]] = {}


def register_scorer(name: str) -> Callable[[Callable[[str | None], ConfidenceScorer]], Callable[[str | None], ConfidenceScorer]]:
    def wrap(factory):
        SCORERS[name] = factory
        return factory

    return wrap


def _number(spec: str, argument: str, kind: type) -> Any:
    try:
        return kind(argument)
    except ValueError:
        raise ConfigError(f"scorer {spec!r}: {argument!r} is not a valid {kind.__name__}") from None


register_scorer("logprob-min")(lambda arg: LogprobScorer("min"))
register_scorer("logprob-mean")(lambda arg: LogprobScorer("mean"))
register_scorer("schema")(lambda arg: SchemaScorer())
register_scorer("agreement")(lambda arg: AgreementScorer(_number("agreement", arg, int) if arg else 5))
register_scorer("random")(lambda arg: RandomScorer(_number("random", arg, int) if arg else 0))
register_scorer("learned")(lambda arg: LearnedScorer.load(arg) if arg else _missing_path())


def _missing_path() -> ConfidenceScorer:
    raise ConfigError("scorer 'learned' needs a path: learned:path/to/scorer.json")


def get_scorer(spec: str | ConfidenceScorer) -> ConfidenceScorer:
    """A scorer from its spec: `logprob-mean`, `logprob-min`, `logprob-q10` (any quantile 00-100),
    `agreement:5`, `schema`, `random:SEED`, `learned:path.json`. Unknown names raise a one-line error."""
    if isinstance(spec, ConfidenceScorer):
        return spec
    name, _, argument = spec.partition(":")
    quantile_match = re.fullmatch(r"logprob-q(\d{1,3})", name)
    if quantile_match:
        return LogprobScorer("quantile", q=int(quantile_match.group(1)) / 100)
    if name not in SCORERS:
        known = ", ".join([*sorted(SCORERS), "logprob-qNN"])
        raise ConfigError(f"unknown confidence scorer {spec!r}; known: {known}")
    return SCORERS[name](argument or None)


__all__ = [
    "ALL_FEATURES",
    "AgreementScorer",
    "ConfidenceScorer",
    "LearnedScorer",
    "LogprobScorer",
    "NoActionLogprobs",
    "RandomScorer",
    "SCORERS",
    "SchemaScorer",
    "action_key",
    "action_token_logprobs",
    "get_scorer",
    "invalid_reason",
    "logprob_features",
    "register_scorer",
    "score_action",
    "step_features",
]
