"""What a cascade writes down beside its steps: call records, abandoned restarts, per-task summaries.

`routing/cascade.py` makes the decisions; this module keeps their books, so that a step's
`cost_usd` and `usage` (and so `trajectory.cost_usd`) cover every call made for it, including the
calls of an attempt that `escalate="restart"` threw away.
"""

from __future__ import annotations

from typing import Any

from distillery.models.base import ChatModel
from distillery.pricing import cost_usd
from distillery.trajectory import (
    AbandonedAttempt,
    ModelCallRecord,
    RejectedProposal,
    TierConfidence,
    Trajectory,
    Turn,
    Usage,
    escalation_reasons,
)

ESCALATED_TAG = "escalated"
FALLBACK_FAILED_TAG = "fallback_failed"
RESTART_KEY = "restarted"


def call_cost(model: ChatModel, turn: Turn) -> float:
    """A call's dollars: what the provider reported, else priced from the table by the model URI."""
    if turn.cost_usd:
        return turn.cost_usd
    return cost_usd(getattr(model, "uri", ""), turn.usage)


def call_record(index: int, name: str, model: ChatModel, kind: str, turns: list[Turn], latency: float) -> ModelCallRecord:
    """The record of one `agenerate` call (its `n` turns) made by tier `index`."""
    return ModelCallRecord(
        tier=index, model=name, kind=kind, n=len(turns), usage=sum((t.usage for t in turns), Usage()),
        cost_usd=sum(call_cost(model, t) for t in turns), latency_s=latency,
    )


def add_tag(trajectory: Trajectory, tag: str) -> None:
    if tag not in trajectory.tags:
        trajectory.tags.append(tag)


class Restart(Exception):
    """Raised out of the agent loop to start a task over at a higher tier (`escalate="restart"`)."""

    def __init__(self, tier: int, trajectory: Trajectory, calls: list[ModelCallRecord],
                 confidences: list[TierConfidence], proposal: RejectedProposal):
        super().__init__(f"restart at tier {tier}")
        self.tier = tier
        self.steps = len(trajectory.steps)
        # What was abandoned, for people reading the trajectory (the report's viewer): the attempt's
        # steps (without logprobs) and the proposal that was doubted.
        self.attempt = {"steps": [step.model_dump(mode="json", exclude={"logprobs"}) for step in trajectory.steps],
                        "rejected": proposal.model_dump(mode="json")}
        # Which tiers were asked for a proposal in this attempt, and which of them doubted it (the
        # last one is the doubt that ended the attempt): the abandoned part of the per-tier
        # escalation rates, which the kept steps alone would understate.
        records = [step.routing for step in trajectory.steps if step.routing is not None]
        self.asked_tiers = [entry.tier for record in records for entry in record.confidences]
        self.asked_tiers += [entry.tier for entry in confidences]
        self.doubted_tiers = [r.tier for record in records for r in record.rejected]
        self.doubted_tiers.append(tier - 1)
        # every model call of the abandoned attempt: its steps' calls and the rejected proposal
        self.calls = [call.model_copy(update={"abandoned": True})
                      for call in [*(c for record in records for c in record.calls), *calls]]


def charge_abandoned(trajectory: Trajectory, abandoned: list[Restart]) -> None:
    """The first step of a restarted task carries the calls (and cost) of the abandoned attempts."""
    calls = [call for attempt in abandoned for call in attempt.calls]
    steps = sum(attempt.steps for attempt in abandoned)
    cost = sum(call.cost_usd for call in calls)
    trajectory.metadata[RESTART_KEY] = {"tier": abandoned[-1].tier, "abandoned_steps": steps, "abandoned_cost_usd": cost}
    add_tag(trajectory, ESCALATED_TAG)
    if trajectory.steps and trajectory.steps[0].routing is not None:
        first = trajectory.steps[0]
        first.cost_usd += cost
        first.usage = sum((call.usage for call in calls), first.usage or Usage())
        first.escalated = first.routing.escalated = True
        first.routing.calls.extend(calls)
        first.routing.abandoned_attempt = AbandonedAttempt(
            attempts=len(abandoned), steps=steps, cost_usd=cost,
            asked_tiers=[t for attempt in abandoned for t in attempt.asked_tiers],
            doubted_tiers=[t for attempt in abandoned for t in attempt.doubted_tiers],
            attempts_detail=[attempt.attempt for attempt in abandoned],
        )
        first.routing.reasons = escalation_reasons(first.routing)


def routing_summary(trajectory: Trajectory, n_tiers: int) -> dict[str, Any]:
    """Per-trajectory routing figures: steps and cost by tier, escalations, fallback failures."""
    steps_by_tier = [0] * n_tiers
    cost_by_tier = [0.0] * n_tiers
    for step in trajectory.steps:
        if step.tier < n_tiers:
            steps_by_tier[step.tier] += 1
        for call in (step.routing.calls if step.routing is not None else []):
            if call.tier < n_tiers:
                cost_by_tier[call.tier] += call.cost_usd
    return {
        "steps_by_tier": steps_by_tier,
        "cost_by_tier": cost_by_tier,
        "escalated_steps": sum(step.escalated for step in trajectory.steps),
        "fallback_failures": sum(step.routing is not None and step.routing.fallback_failed is not None
                                 for step in trajectory.steps),
        "min_confidence": min((s.confidence for s in trajectory.steps if s.confidence is not None), default=None),
    }
