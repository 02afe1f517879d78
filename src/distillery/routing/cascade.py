"""The student in production: answer what it is sure of, escalate the rest up a cascade of models.

    cascade = Cascade([student, teacher], thresholds=[0.6], tools=TOOLS, scorer="logprob-mean")
    trajectory = cascade.run("How many units of SKU-1042 are in Berlin?")

    agent = StudentAgent(student, fallback=teacher, scorer="logprob-mean", threshold=0.6)
    trajectory = run_student("How many units ...?", student, fallback=teacher, tools=TOOLS)

A cascade is the shared `Agent` loop with one method overridden: `next_step` asks tier 1 for the
step, scores it, and when `routing.decision.should_escalate(confidence, threshold)` says so (below
the threshold, or unscored; exactly at the threshold is accepted) asks the next tier, up to the
last tier, which is never questioned. `next_step` also takes per-call `StepOverrides`
(thresholds, a pinned tier, tools, sampling settings): the gateway keeps one cascade for every
request and passes each request's settings there.

With `escalate="task"` a task that escalated once stays with the higher tier, which continues
from the conversation so far, lower-tier steps included. With `escalate="restart"` a task whose
step is rejected *after the first* starts over at the higher tier, from the query alone: the
lower tier's earlier steps may already have gone wrong (a confident wrong call), and a teacher
trained on clean trajectories does not recover from them. The abandoned attempt's cost is charged
to the new first step (`routing.abandoned_attempt`), so `trajectory.cost_usd` stays what the task
really cost; its steps are not kept. Restarting re-runs tools, so use it with tools that are safe
to call twice (lookups), not with tools that act (send, pay, write). This is the routing that
`calibrate` simulates.

Every step records who produced it (`producer`), its confidence, whether a lower tier's proposal
was rejected (`escalated`) and, in its `RoutingRecord` (`step.routing`), the answering tier, why
lower tiers were left, each tier's confidence, the rejected proposals and every model call made
with its cost (the bookkeeping is in `routing/records.py`). A step's `cost_usd` and `usage` cover
*all* the calls made for it, rejected proposals and agreement samples included, so
`trajectory.cost_usd` is what the step really cost. Trajectories with an escalated step are
tagged `escalated` and, when a store is given, written to it: the next distillation round learns
what the student could not do.

Fallback failure policy (`on_fallback_error`): when the model a step escalated to fails (error,
5xx, or no answer within its timeout), `"keep_flagged"` keeps the best lower-tier proposal and
flags the step (`routing.fallback_failed`, trajectory tag `fallback_failed`); `"fail"` ends the
task with status "error". A failing lower tier counts as confidence 0 and escalates. Every call
runs under a timeout, so a cascade never hangs on a dead fallback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.agent import DEFAULT_MAX_STEPS, Agent
from distillery.errors import ConfigError, DistilleryError, ModelError
from distillery.models.base import ChatModel
from distillery.routing.confidence import (
    ConfidenceScorer,
    LogprobScorer,
    action_key,
    get_scorer,
    invalid_reason,
    score_action,
)
from distillery.routing.config import (
    DEFAULT_FALLBACK_TIMEOUT_S,
    DEFAULT_SCORER,
    ESCALATE_MODES,
    CascadeConfig,
    EscalateMode,
    FallbackPolicy,
    TierConfig,
    default_scorers,
    load_cascade_config,
    load_tier_models,
)
from distillery.routing.decision import check_thresholds, override_thresholds, should_escalate
from distillery.routing.records import (
    ESCALATED_TAG,
    FALLBACK_FAILED_TAG,
    RESTART_KEY,
    Restart,
    add_tag,
    call_record,
    charge_abandoned,
    routing_summary,
)
from distillery.tasks import Task
from distillery.tools import Tool, ToolBox
from distillery.trajectory import (
    Message,
    ModelCallRecord,
    RejectedProposal,
    RoutingRecord,
    Step,
    TierConfidence,
    ToolSpec,
    Trajectory,
    Turn,
    Usage,
)

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


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


@dataclass(frozen=True)
class StepOverrides:
    """Settings one `next_step` call uses instead of the cascade's own (None keeps the cascade's).

    `thresholds` has one value per tier but the last (or one value for all); `tier` pins the step
    to that tier, which answers without escalating. `logprobs` asks every call for logprobs (a
    gateway client wants them), whether or not a scorer needs them.
    """

    thresholds: Sequence[float] | None = None
    tier: int | None = None
    tools: Sequence[ToolSpec] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    generate_options: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class _Call:
    """One `next_step`'s settings, the cascade's own with the call's overrides applied."""

    thresholds: list[float | None]  # per tier; None where the tier cannot escalate in this call
    first: int
    last: int
    tools: list[ToolSpec]
    temperature: float
    max_tokens: int | None
    generate_options: dict[str, Any] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0


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
        thresholds = check_thresholds(thresholds, "Cascade: thresholds")
        if escalate not in ESCALATE_MODES:
            raise ConfigError(f"Cascade: escalate={escalate!r}; use 'step', 'task' or 'restart'")
        if on_fallback_error not in ("keep_flagged", "fail"):
            raise ConfigError(f"Cascade: on_fallback_error={on_fallback_error!r}; use 'keep_flagged' or 'fail'")
        if isinstance(scorer, (str, ConfidenceScorer)):
            scorers: list[Any] = default_scorers(len(tiers), scorer)
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
        try:
            scorer_objects = [get_scorer(s) if s else None for s in config.scorer_names()]
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

    def _settings(self, overrides: StepOverrides | None, trajectory: Trajectory) -> _Call:
        """This call's settings: the cascade's own, with the overrides applied (checked, one-line errors)."""
        o = overrides or StepOverrides()
        last = len(self.tiers) - 1
        thresholds: list[float | None] = [tier.threshold for tier in self.tiers]
        if o.thresholds is not None and last > 0:
            thresholds = [*override_thresholds(o.thresholds, last), None]
        first = self._start_tier(trajectory)
        if o.tier is not None:
            if not 0 <= o.tier <= last:
                raise ConfigError(f"tier {o.tier} does not exist; this cascade has tiers 0..{last}")
            first = last = o.tier
            thresholds = [None] * len(self.tiers)  # a pinned tier answers: nothing to escalate to
        return _Call(
            thresholds=thresholds, first=first, last=last,
            tools=list(o.tools) if o.tools is not None else self.tools.specs,
            temperature=o.temperature if o.temperature is not None else self.temperature,
            max_tokens=o.max_tokens if o.max_tokens is not None else self.max_tokens,
            generate_options=dict(o.generate_options if o.generate_options is not None else self.generate_options),
            logprobs=o.logprobs, top_logprobs=o.top_logprobs,
        )

    # -- one call to one tier ----------------------------------------------------------------------

    def _can_reject_early(self, index: int, call: _Call) -> bool:
        """Whether tier `index`'s proposal may stop as soon as it must be rejected.

        Only where stopping provably gives full generation's decision: a min-logprob scorer (a
        token below the threshold keeps the min below it), greedy, no extra samples, a threshold to
        escalate past, and a model that can stop mid-generation (local `hf:` / `world:` models).
        """
        tier = self.tiers[index]
        scorer = tier.scorer
        minimum = isinstance(scorer, LogprobScorer) and (scorer.statistic == "min" or
                                                         (scorer.statistic == "quantile" and scorer.q == 0))
        return (minimum and self.early_escalation and call.thresholds[index] is not None
                and call.temperature == 0 and not scorer.samples_needed
                and bool(getattr(tier.model, "supports_early_reject", False)))

    async def _ask(self, index: int, messages: Sequence[Message], call: _Call) -> tuple[Turn, list[Turn], list[ModelCallRecord]]:
        """The tier's proposal (greedy), the extra samples its scorer wants, and a record per call."""
        tier = self.tiers[index]
        scorer = tier.scorer
        # Logprobs are the scorer's business; a caller's request for them (the gateway's) is honoured too.
        common = dict(max_tokens=call.max_tokens, **call.generate_options)
        wants_logprobs = bool(common.pop("logprobs", False)) or call.logprobs
        common["top_logprobs"] = max(call.top_logprobs, common.get("top_logprobs") or 0)

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
        if self._can_reject_early(index, call):
            proposal_options["early_reject"] = call.thresholds[index]
        proposal_call = timed(self.model_call(tier.model, messages, call.tools, n=1, temperature=call.temperature,
                                              logprobs=wants_logprobs or bool(scorer and scorer.needs_logprobs),
                                              **proposal_options))
        calls = [proposal_call]
        if scorer is not None and scorer.samples_needed:
            calls.append(timed(self.model_call(tier.model, messages, call.tools, n=scorer.samples_needed,
                                               temperature=scorer.sample_temperature,
                                               logprobs=wants_logprobs or scorer.needs_logprobs, **common)))
        results = await asyncio.gather(*calls)
        (proposal_turns, proposal_latency) = results[0]
        samples, samples_latency = results[1] if len(results) > 1 else ([], 0.0)
        records = [call_record(index, tier.name, tier.model, "proposal", proposal_turns, proposal_latency)]
        if len(results) > 1:
            records.append(call_record(index, tier.name, tier.model, "samples", samples, samples_latency))
        return proposal_turns[0], list(samples), records

    async def model_call(self, model: ChatModel, messages: Sequence[Message], tools: Sequence[ToolSpec],
                         **kwargs: Any) -> list[Turn]:
        """One `agenerate` call; a separate method so tests and subclasses can observe every call."""
        turns = await model.agenerate(list(messages), list(tools) or None, **kwargs)
        if not turns:
            raise ModelError(f"{getattr(model, 'uri', model)}: returned no turns")
        return turns

    def _score(self, index: int, turn: Turn, samples: list[Turn], tools: list[ToolSpec]
               ) -> tuple[float | None, str | None, str | None]:
        """(confidence, score error, invalid reason) of a tier's proposal.

        The tools offered are known here (possibly none), so a call to any other tool is invalid.
        An unscored tier (the teacher) still gets its invalid reason recorded.
        """
        scorer = self.tiers[index].scorer
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
        return max([restarted_at, *(step.tier for step in trajectory.steps)])

    async def next_step(self, messages: Sequence[Message], trajectory: Trajectory,
                        overrides: StepOverrides | None = None) -> Step:
        """The next step, from the cheapest tier (from `_start_tier` on) whose proposal is not escalated.

        `overrides` are this call's settings (thresholds, a pinned tier, tools, sampling); the
        cascade itself is not changed, so concurrent calls may each pass their own.
        """
        started = time.perf_counter()
        call = self._settings(overrides, trajectory)
        calls: list[ModelCallRecord] = []
        confidences: list[TierConfidence] = []
        rejected: list[tuple[int, Turn, float | None, Usage]] = []
        chosen: tuple[int, Turn, float | None, Usage] | None = None
        fallback_error: str | None = None
        for index in range(call.first, call.last + 1):
            tier = self.tiers[index]
            threshold = call.thresholds[index]
            try:
                turn, samples, records = await self._ask(index, messages, call)
            except ModelError as exc:
                calls.append(ModelCallRecord(tier=index, model=tier.name, kind="proposal", error=str(exc)))
                confidences.append(TierConfidence(tier=index, model=tier.name, error=str(exc)))
                if index < call.last:
                    continue  # a failing lower tier cannot answer: treat as confidence 0 and climb
                if rejected and self.on_fallback_error == "keep_flagged":
                    fallback_error = str(exc)
                    chosen = rejected.pop()
                    break
                raise ModelError(
                    f"fallback {tier.name} failed ({exc}); policy on_fallback_error={self.on_fallback_error!r}"
                    if rejected or index > call.first else str(exc)
                ) from None
            calls.extend(records)
            confidence, score_error, reason = self._score(index, turn, samples, call.tools)
            confidences.append(TierConfidence(tier=index, model=tier.name, confidence=confidence, threshold=threshold,
                                              score_error=score_error, invalid=reason))
            if threshold is not None and should_escalate(confidence, threshold):
                if self.escalate == "restart" and trajectory.steps:
                    proposal = RejectedProposal(tier=index, model=tier.name, confidence=confidence, threshold=threshold,
                                                text=turn.text, tool_calls=list(turn.tool_calls))
                    raise Restart(index + 1, trajectory, calls, confidences, proposal)
                rejected.append((index, turn, confidence, records[0].usage))
                continue
            chosen = (index, turn, confidence, records[0].usage)
            break
        assert chosen is not None
        index, turn, confidence, answer_usage = chosen
        step = Step.from_turn(turn, producer=self.tiers[index].name, confidence=confidence,
                              escalated=bool(rejected) or fallback_error is not None)
        step.usage = sum((c.usage for c in calls), Usage())
        step.cost_usd = sum(c.cost_usd for c in calls)
        step.latency_s = time.perf_counter() - started
        step.routing = RoutingRecord(
            tier=index, confidence=confidence, threshold=call.thresholds[index], escalated=step.escalated,
            usage=answer_usage, confidences=confidences, calls=calls, fallback_failed=fallback_error,
            pinned=overrides is not None and overrides.tier is not None,
            rejected=[RejectedProposal(tier=i, model=self.tiers[i].name, confidence=c, threshold=call.thresholds[i],
                                       action=action_key(t), text=t.text, tool_calls=list(t.tool_calls))
                      for i, t, c, _ in rejected],
        )
        if fallback_error is not None:
            add_tag(trajectory, FALLBACK_FAILED_TAG)
        if step.escalated:
            add_tag(trajectory, ESCALATED_TAG)
        return step

    async def arun(self, query: str | Task, **kwargs: Any) -> Trajectory:
        abandoned: list[Restart] = []
        while True:
            try:
                trajectory = await super().arun(query, **kwargs)
                break
            except Restart as restart:  # start over at the higher tier, from the query alone
                abandoned.append(restart)
                metadata = {**(kwargs.get("metadata") or {}), RESTART_KEY: {"tier": restart.tier}}
                kwargs = {**kwargs, "metadata": metadata}
        if abandoned:
            charge_abandoned(trajectory, abandoned)
        trajectory.metadata["routing"] = routing_summary(trajectory, len(self.tiers))
        if self.store is not None and ESCALATED_TAG in trajectory.tags:
            # Best effort: a full disk must not lose the answer the user is waiting for.
            try:
                self.store.put(trajectory)
            except DistilleryError as exc:
                log.warning("could not store escalated trajectory %s: %s", trajectory.id, exc)
        return trajectory

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
    "StepOverrides",
    "StudentAgent",
    "Tier",
    "TierConfig",
    "load_cascade_config",
    "run_student",
]
