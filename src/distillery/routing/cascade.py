"""The student in production: answer what it is sure of, escalate the rest up a cascade of models.

    cascade = Cascade([student, teacher], thresholds=[0.6], tools=TOOLS, scorer="logprob-mean")
    trajectory = cascade.run("How many units of SKU-1042 are in Berlin?")

    agent = StudentAgent(student, fallback=teacher, scorer="logprob-mean", threshold=0.6)
    trajectory = run_student("How many units ...?", student, fallback=teacher, tools=TOOLS)

A cascade is the shared `Agent` loop with one method overridden: `next_step` asks tier 1 for the
step, scores it, and when the confidence is *below* the tier's threshold (`confidence < threshold`;
exactly at the threshold is accepted) asks the next tier, up to the last tier, which is never
questioned. With `escalate="task"` a task that escalated once stays with the higher tier, which
continues from the conversation so far, lower-tier steps included. With `escalate="restart"` a
task whose step is rejected *after the first* starts over at the higher tier, from the query
alone: the lower tier's earlier steps may already have gone wrong (a confident wrong call), and a
teacher trained on clean trajectories does not recover from them. The abandoned attempt's cost is
charged to the new first step (`routing["abandoned_attempt"]`), so `trajectory.cost_usd` stays
what the task really cost; its steps are not kept. Restarting re-runs tools, so use it with tools
that are safe to call twice (lookups), not with tools that act (send, pay, write). This is the
routing that `calibrate` simulates.

Every step records who produced it (`producer`), its confidence, whether a lower tier's proposal
was rejected (`escalated`) and, in `routing`, each tier's confidence, the rejected proposals and
every model call made with its cost. A step's `cost_usd` and `usage` cover *all* the calls made
for it, rejected proposals and agreement samples included, so `trajectory.cost_usd` is what the
step really cost. Trajectories with an escalated step are tagged `escalated` and, when a store is
given, written to it: the next distillation round learns what the student could not do.

Fallback failure policy (`on_fallback_error`): when the model a step escalated to fails (error,
5xx, or no answer within its timeout), `"keep_flagged"` keeps the best lower-tier proposal and
flags the step (`routing["fallback_failed"]`, trajectory tag `fallback_failed`); `"fail"` ends the
task with status "error". A failing lower tier counts as confidence 0 and escalates. Every call
runs under a timeout, so a cascade never hangs on a dead fallback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.agent import DEFAULT_MAX_STEPS, Agent
from distillery.errors import ConfigError, DistilleryError, ModelError
from distillery.models.base import ChatModel
from distillery.pricing import cost_usd
from distillery.routing.confidence import (
    ConfidenceScorer,
    LogprobScorer,
    action_key,
    get_scorer,
    invalid_reason,
    score_action,
)
from distillery.routing.config import (  # the config file lives in routing/config.py; re-exported here
    DEFAULT_FALLBACK_TIMEOUT_S,
    DEFAULT_SCORER,
    ESCALATE_MODES,
    CascadeConfig,
    EscalateMode,
    FallbackPolicy,
    TierConfig,
    check_tier_order,
    is_number,
    load_cascade_config,
    load_tier_models,
    write_cascade_config,
)
from distillery.tasks import Task
from distillery.tools import Tool, ToolBox
from distillery.trajectory import Message, Step, Trajectory, Turn, Usage

log = logging.getLogger(__name__)

ESCALATED_TAG = "escalated"
FALLBACK_FAILED_TAG = "fallback_failed"
DEFAULT_THRESHOLD = 0.5


# --------------------------------------------------------------------------------------------------
# The runtime
# --------------------------------------------------------------------------------------------------


@dataclass
class Tier:
    """One model in a running cascade."""

    model: ChatModel
    threshold: float | None
    scorer: ConfidenceScorer | None
    timeout_s: float | None

    @property
    def name(self) -> str:
        return getattr(self.model, "uri", type(self.model).__name__)


def _call_cost(model: ChatModel, turn: Turn) -> float:
    """A call's dollars: what the provider reported, else priced from the table by the model URI."""
    if turn.cost_usd:
        return turn.cost_usd
    return cost_usd(getattr(model, "uri", ""), turn.usage)


class Cascade(Agent):
    """`Agent` whose steps climb tier 1 -> tier 2 -> ... -> last tier while confidence is below threshold.

    `tiers` are models cheapest first; `thresholds` has one entry per tier but the last, each in
    [0, 1]. `scorer` is one scorer (name or object) for every tier but the last, or a list with one
    per tier (the last tier's entry, if any, is recorded but never escalates). A single-tier cascade
    scores its only tier, which is how `run_student(query, model)` records confidences.
    """

    def __init__(
        self,
        tiers: Sequence[ChatModel],
        thresholds: Sequence[float] = (),
        tools: ToolBox | Iterable[Tool] = (),
        *,
        scorer: str | ConfidenceScorer | Sequence[str | ConfidenceScorer | None] = DEFAULT_SCORER,
        escalate: EscalateMode = "step",
        on_fallback_error: FallbackPolicy = "keep_flagged",
        fallback_timeout_s: float = DEFAULT_FALLBACK_TIMEOUT_S,
        timeouts_s: Sequence[float | None] | None = None,
        store: Any = None,
        system: str | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        tool_timeout_s: float | None = None,
        generate_options: dict[str, Any] | None = None,
        early_escalation: bool = True,
    ):
        tiers = list(tiers)
        if not tiers:
            raise ConfigError("Cascade: give at least one model")
        thresholds = list(thresholds)
        if len(thresholds) != len(tiers) - 1:
            raise ConfigError(
                f"Cascade: {len(tiers)} tiers need {len(tiers) - 1} threshold(s) (none for the last tier), got {len(thresholds)}"
            )
        for index, value in enumerate(thresholds):
            if not is_number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"Cascade: thresholds[{index}] = {value!r} is outside [0, 1]")
        if escalate not in ESCALATE_MODES:
            raise ConfigError(f"Cascade: escalate={escalate!r}; use 'step', 'task' or 'restart'")
        if on_fallback_error not in ("keep_flagged", "fail"):
            raise ConfigError(f"Cascade: on_fallback_error={on_fallback_error!r}; use 'keep_flagged' or 'fail'")
        if isinstance(scorer, (str, ConfidenceScorer)):
            # One scorer for every tier that can escalate; a lone tier is scored so its confidence is recorded.
            scorers: list[Any] = [scorer] * max(len(tiers) - 1, 1) + [None] * (len(tiers) > 1)
        else:
            scorers = list(scorer) + [None] * (len(tiers) - len(scorer))
            if len(scorers) != len(tiers):
                raise ConfigError(f"Cascade: {len(scorer)} scorers given for {len(tiers)} tiers")
        if timeouts_s is None:
            timeouts_s = [None] + [fallback_timeout_s] * (len(tiers) - 1)
        self.tiers = [
            Tier(model=m, threshold=(thresholds[i] if i < len(thresholds) else None),
                 scorer=(get_scorer(scorers[i]) if scorers[i] is not None else None), timeout_s=timeouts_s[i])
            for i, m in enumerate(tiers)
        ]
        self.escalate = escalate
        self.on_fallback_error = on_fallback_error
        self.early_escalation = early_escalation  # stop a proposal that must be rejected (see _can_reject_early)
        self.store = store
        self._warned: set[str] = set()
        super().__init__(
            tiers[0], tools, system=system, max_steps=max_steps, temperature=temperature, max_tokens=max_tokens,
            tool_timeout_s=tool_timeout_s, generate_options=generate_options,
        )

    @classmethod
    def from_config(cls, config: str | Path | CascadeConfig, tools: ToolBox | Iterable[Tool] = (), **options: Any) -> Cascade:
        """Build the cascade a `cascade.toml` describes (loading each tier's model by URI)."""
        if not isinstance(config, CascadeConfig):
            config = load_cascade_config(config)
        models = load_tier_models(config)
        scorers = [tier.scorer or (DEFAULT_SCORER if i < len(config.tiers) - 1 or len(config.tiers) == 1 else None)
                   for i, tier in enumerate(config.tiers)]
        try:
            scorer_objects = [get_scorer(s) if s else None for s in scorers]
        except ConfigError as exc:
            raise ConfigError(f"{config.source}: {exc}") from None
        timeouts = [tier.timeout_s if tier.timeout_s is not None else (None if i == 0 else config.fallback_timeout_s)
                    for i, tier in enumerate(config.tiers)]
        return cls(
            models, config.thresholds, tools, scorer=scorer_objects, escalate=config.escalate,
            on_fallback_error=config.on_fallback_error, fallback_timeout_s=config.fallback_timeout_s,
            timeouts_s=timeouts, **options,
        )

    @property
    def name(self) -> str:
        if len(self.tiers) == 1:
            return self.tiers[0].name
        return "cascade:" + ">".join(tier.name for tier in self.tiers)

    # -- one call to one tier ----------------------------------------------------------------------

    def _can_reject_early(self, index: int) -> bool:
        """Whether tier `index`'s proposal may stop as soon as it must be rejected.

        Only where stopping provably gives full generation's decision: a min-logprob scorer (a
        token below the threshold keeps the min below it), greedy, no extra samples, a threshold to
        escalate past, and a model that can stop mid-generation (local `hf:` / `world:` models).
        """
        tier = self.tiers[index]
        scorer = tier.scorer
        minimum = isinstance(scorer, LogprobScorer) and (scorer.statistic == "min" or
                                                         (scorer.statistic == "quantile" and scorer.q == 0))
        return (minimum and self.early_escalation and index < len(self.tiers) - 1 and tier.threshold is not None
                and self.temperature == 0 and not scorer.samples_needed
                and bool(getattr(tier.model, "supports_early_reject", False)))

    async def _ask(self, index: int, messages: Sequence[Message]) -> tuple[Turn, list[Turn], list[dict[str, Any]]]:
        """The tier's proposal (greedy), the extra samples its scorer wants, and a record per call."""
        tier = self.tiers[index]
        scorer = tier.scorer
        # Logprobs are the scorer's business; a caller's request for them (the gateway's) is honoured too.
        common = dict(max_tokens=self.max_tokens, **self.generate_options)
        wants_logprobs = bool(common.pop("logprobs", False))
        common.setdefault("top_logprobs", 0)

        async def timed(coroutine):
            start = time.perf_counter()
            if tier.timeout_s is None:
                turns = await coroutine
            else:
                try:
                    turns = await asyncio.wait_for(coroutine, tier.timeout_s)
                except asyncio.TimeoutError:
                    raise ModelError(f"{tier.name}: no answer within {tier.timeout_s:g}s") from None
            return turns, time.perf_counter() - start

        proposal_options = dict(common)
        if self._can_reject_early(index):
            proposal_options["early_reject"] = tier.threshold
        proposal_call = timed(self.model_call(tier.model, messages, n=1, temperature=self.temperature,
                                              logprobs=wants_logprobs or bool(scorer and scorer.needs_logprobs),
                                              **proposal_options))
        calls = [proposal_call]
        if scorer is not None and scorer.samples_needed:
            calls.append(timed(self.model_call(tier.model, messages, n=scorer.samples_needed,
                                               temperature=scorer.sample_temperature,
                                               logprobs=wants_logprobs or scorer.needs_logprobs, **common)))
        results = await asyncio.gather(*calls)
        (proposal_turns, proposal_latency) = results[0]
        samples, samples_latency = results[1] if len(results) > 1 else ([], 0.0)
        records = [_call_record(index, tier, "proposal", proposal_turns, proposal_latency)]
        if len(results) > 1:
            records.append(_call_record(index, tier, "samples", samples, samples_latency))
        return proposal_turns[0], list(samples), records

    async def model_call(self, model: ChatModel, messages: Sequence[Message], **kwargs: Any) -> list[Turn]:
        """One `agenerate` call; a separate method so tests and subclasses can observe every call."""
        turns = await model.agenerate(list(messages), self.tools.specs or None, **kwargs)
        if not turns:
            raise ModelError(f"{getattr(model, 'uri', model)}: returned no turns")
        return turns

    def _score(self, index: int, turn: Turn, samples: list[Turn]) -> tuple[float | None, str | None, str | None]:
        """(confidence, score error, invalid reason) of a tier's proposal.

        The tools offered are known here (possibly none), so a call to any other tool is invalid.
        An unscored tier (the teacher) still gets its invalid reason recorded.
        """
        scorer = self.tiers[index].scorer
        tools = self.tools.specs
        if scorer is None:
            return None, None, invalid_reason(turn, tools)
        try:
            confidence, reason = score_action(scorer, turn, tools=tools, samples=samples)
            return confidence, None, reason
        except DistilleryError as exc:
            # Cannot score (e.g. no logprobs): never pretend to be sure. The step escalates.
            if scorer.name not in self._warned:
                self._warned.add(scorer.name)
                log.warning("scorer %s cannot score %s: %s; such steps escalate", scorer.name, self.tiers[index].name, exc)
            return 0.0, str(exc), invalid_reason(turn, tools)

    # -- routing ---------------------------------------------------------------------------------

    def _start_tier(self, trajectory: Trajectory) -> int:
        if self.escalate == "step":
            return 0
        restarted_at = trajectory.metadata.get(RESTART_KEY, {}).get("tier", 0)
        return max([restarted_at, *(step.routing.get("tier", 0) for step in trajectory.steps)])

    async def next_step(self, messages: Sequence[Message], trajectory: Trajectory) -> Step:
        started = time.perf_counter()
        last = len(self.tiers) - 1
        calls: list[dict[str, Any]] = []
        confidences: list[dict[str, Any]] = []
        rejected: list[tuple[int, Turn, float]] = []
        chosen: tuple[int, Turn, float | None] | None = None
        fallback_error: str | None = None
        for index in range(self._start_tier(trajectory), last + 1):
            tier = self.tiers[index]
            try:
                turn, samples, records = await self._ask(index, messages)
            except ModelError as exc:
                calls.append({"tier": index, "model": tier.name, "kind": "proposal", "error": str(exc),
                              "cost_usd": 0.0, "usage": Usage().model_dump(), "latency_s": 0.0})
                confidences.append({"tier": index, "model": tier.name, "confidence": None, "error": str(exc)})
                if index < last:
                    continue  # a failing lower tier cannot answer: treat as confidence 0 and climb
                if rejected and self.on_fallback_error == "keep_flagged":
                    fallback_error = str(exc)
                    chosen = rejected.pop()
                    break
                raise ModelError(
                    f"fallback {tier.name} failed ({exc}); policy on_fallback_error={self.on_fallback_error!r}"
                    if rejected or index > 0 else str(exc)
                ) from None
            calls.extend(records)
            confidence, score_error, reason = self._score(index, turn, samples)
            entry: dict[str, Any] = {"tier": index, "model": tier.name, "confidence": confidence}
            if tier.threshold is not None:
                entry["threshold"] = tier.threshold
            if score_error:
                entry["score_error"] = score_error
            if reason:
                entry["invalid"] = reason
            confidences.append(entry)
            if index < last and confidence is not None and confidence < tier.threshold:
                if self.escalate == "restart" and trajectory.steps:
                    proposal = {"tier": index, "model": tier.name, "confidence": confidence, "threshold": tier.threshold,
                                "text": turn.text, "tool_calls": [call.model_dump() for call in turn.tool_calls]}
                    raise _Restart(index + 1, trajectory, calls, confidences, proposal)
                rejected.append((index, turn, confidence))
                continue
            chosen = (index, turn, confidence)
            break
        assert chosen is not None
        index, turn, confidence = chosen
        escalated_past = rejected
        step = Step.from_turn(turn, producer=self.tiers[index].name, confidence=confidence,
                              escalated=bool(escalated_past) or fallback_error is not None)
        step.usage = sum((Usage(**c["usage"]) for c in calls), Usage())
        step.cost_usd = sum(c["cost_usd"] for c in calls)
        step.latency_s = time.perf_counter() - started
        step.routing = {
            "tier": index,
            "confidences": confidences,
            "rejected": [
                {"tier": i, "model": self.tiers[i].name, "confidence": c, "action": action_key(t), "text": t.text,
                 "tool_calls": [call.model_dump() for call in t.tool_calls]}
                for i, t, c in escalated_past
            ],
            "calls": calls,
        }
        if fallback_error is not None:
            step.routing["fallback_failed"] = fallback_error
            _add_tag(trajectory, FALLBACK_FAILED_TAG)
        if step.escalated:
            _add_tag(trajectory, ESCALATED_TAG)
        return step

    async def arun(self, query: str | Task, **kwargs: Any) -> Trajectory:
        abandoned: list[_Restart] = []
        while True:
            try:
                trajectory = await super().arun(query, **kwargs)
                break
            except _Restart as restart:  # start over at the higher tier, from the query alone
                abandoned.append(restart)
                metadata = {**(kwargs.get("metadata") or {}), RESTART_KEY: {"tier": restart.tier}}
                kwargs = {**kwargs, "metadata": metadata}
        if abandoned:
            _charge_abandoned(trajectory, abandoned)
        trajectory.metadata["routing"] = routing_summary(trajectory, len(self.tiers))
        if self.store is not None and ESCALATED_TAG in trajectory.tags:
            # Best effort: a full disk must not lose the answer the user is waiting for.
            try:
                self.store.put(trajectory)
            except DistilleryError as exc:
                log.warning("could not store escalated trajectory %s: %s", trajectory.id, exc)
        return trajectory


RESTART_KEY = "restarted"


class _Restart(Exception):
    """Raised out of the agent loop to start a task over at a higher tier (`escalate="restart"`)."""

    def __init__(self, tier: int, trajectory: Trajectory, calls: list[dict[str, Any]],
                 confidences: list[dict[str, Any]], proposal: dict[str, Any]):
        super().__init__(f"restart at tier {tier}")
        self.tier = tier
        self.steps = len(trajectory.steps)
        # What was abandoned, for people reading the trajectory (the report's viewer): the attempt's
        # steps (without logprobs) and the proposal that was doubted.
        self.attempt = {"steps": [step.model_dump(mode="json", exclude={"logprobs"}) for step in trajectory.steps],
                        "rejected": proposal}
        # Which tiers were asked for a proposal in this attempt, and which of them doubted it (the
        # last one is the doubt that ended the attempt): the abandoned part of the per-tier
        # escalation rates, which the kept steps alone would understate.
        self.asked_tiers = [entry["tier"] for step in trajectory.steps for entry in step.routing.get("confidences", [])]
        self.asked_tiers += [entry["tier"] for entry in confidences]
        self.doubted_tiers = [r["tier"] for step in trajectory.steps for r in step.routing.get("rejected", [])]
        self.doubted_tiers.append(tier - 1)
        # every model call of the abandoned attempt: its steps' calls and the rejected proposal
        self.calls = [{**call, "abandoned": True}
                      for call in [*(c for step in trajectory.steps for c in step.routing.get("calls", [])), *calls]]


def _charge_abandoned(trajectory: Trajectory, abandoned: list[_Restart]) -> None:
    """The first step of a restarted task carries the calls (and cost) of the abandoned attempts."""
    calls = [call for attempt in abandoned for call in attempt.calls]
    steps = sum(attempt.steps for attempt in abandoned)
    cost = sum(call["cost_usd"] for call in calls)
    trajectory.metadata[RESTART_KEY] = {"tier": abandoned[-1].tier, "abandoned_steps": steps, "abandoned_cost_usd": cost}
    _add_tag(trajectory, ESCALATED_TAG)
    if trajectory.steps:
        first = trajectory.steps[0]
        first.cost_usd += cost
        first.usage = sum((Usage(**call["usage"]) for call in calls), first.usage or Usage())
        first.escalated = True
        first.routing.setdefault("calls", []).extend(calls)
        first.routing["abandoned_attempt"] = {
            "attempts": len(abandoned), "steps": steps, "cost_usd": cost,
            "asked_tiers": [t for attempt in abandoned for t in attempt.asked_tiers],
            "doubted_tiers": [t for attempt in abandoned for t in attempt.doubted_tiers],
            "attempts_detail": [attempt.attempt for attempt in abandoned],
        }


def _add_tag(trajectory: Trajectory, tag: str) -> None:
    if tag not in trajectory.tags:
        trajectory.tags.append(tag)


def _call_record(index: int, tier: Tier, kind: str, turns: list[Turn], latency: float) -> dict[str, Any]:
    usage = sum((t.usage for t in turns), Usage())
    return {
        "tier": index,
        "model": tier.name,
        "kind": kind,
        "n": len(turns),
        "usage": usage.model_dump(),
        "cost_usd": sum(_call_cost(tier.model, t) for t in turns),
        "latency_s": latency,
    }


def routing_summary(trajectory: Trajectory, n_tiers: int) -> dict[str, Any]:
    """Per-trajectory routing figures: steps and cost by tier, escalations, fallback failures."""
    steps_by_tier = [0] * n_tiers
    cost_by_tier = [0.0] * n_tiers
    for step in trajectory.steps:
        tier = step.routing.get("tier", 0)
        if tier < n_tiers:
            steps_by_tier[tier] += 1
        for call in step.routing.get("calls", []):
            if call["tier"] < n_tiers:
                cost_by_tier[call["tier"]] += call["cost_usd"]
    return {
        "steps_by_tier": steps_by_tier,
        "cost_by_tier": cost_by_tier,
        "escalated_steps": sum(step.escalated for step in trajectory.steps),
        "fallback_failures": sum("fallback_failed" in step.routing for step in trajectory.steps),
        "min_confidence": min((s.confidence for s in trajectory.steps if s.confidence is not None), default=None),
    }


class StudentAgent(Cascade):
    """The seed's two-tier cascade: a student that hands low-confidence steps (or tasks) to a fallback.

    With `fallback=None` the student runs alone and every step's confidence is still recorded.
    """

    def __init__(
        self,
        student: ChatModel,
        fallback: ChatModel | None = None,
        scorer: str | ConfidenceScorer = DEFAULT_SCORER,
        threshold: float = DEFAULT_THRESHOLD,
        escalate: EscalateMode = "step",
        tools: ToolBox | Iterable[Tool] = (),
        **options: Any,
    ):
        tiers = [student] if fallback is None else [student, fallback]
        thresholds = [] if fallback is None else [threshold]
        super().__init__(tiers, thresholds, tools, scorer=scorer, escalate=escalate, **options)
        self.student = student
        self.fallback = fallback
        self.threshold = threshold


def run_student(
    query: str | Task,
    model: ChatModel,
    *,
    fallback: ChatModel | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    tools: ToolBox | Iterable[Tool] = (),
    scorer: str | ConfidenceScorer = DEFAULT_SCORER,
    escalate: EscalateMode = "step",
    **options: Any,
) -> Trajectory:
    """Run one query with the student, escalating low-confidence steps to `fallback` when given."""
    agent = StudentAgent(model, fallback, scorer=scorer, threshold=threshold, escalate=escalate, tools=tools, **options)
    return agent.run(query)


__all__ = [
    "Cascade",
    "CascadeConfig",
    "StudentAgent",
    "Tier",
    "TierConfig",
    "check_tier_order",
    "load_cascade_config",
    "load_tier_models",
    "routing_summary",
    "run_student",
    "write_cascade_config",
]
