"""The data every stage shares: what a model said, what the tools answered, and how it ended.

One `Trajectory` type serves the teacher, every student and the cascade. A trajectory is a query,
the tools that were offered, and a list of `Step`s. Each step is one model call (a `Turn`) plus the
results of the tool calls it made. The JSON round trip is lossless: `Trajectory.model_validate_json(
t.model_dump_json()) == t`.

Messages use one neutral, OpenAI-shaped form (`system`, `user`, `assistant` with `tool_calls`,
`tool` with `tool_call_id`). Providers translate it to their own wire format. Thinking blocks keep
their signatures in `Message.thinking`, and provider-native content that must be passed back
verbatim (Anthropic blocks, including after `pause_turn`) rides along in `Message.provider_content`.

A routed step (a cascade's) counts every call made for it in its `usage` and `cost_usd`, rejected
lower-tier proposals and confidence samples included; its `RoutingRecord` (`Step.routing`) says
which tier answered and why, and itemises those calls.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(timezone.utc)


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON: two equal tool calls always give the same string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ToolSpec(BaseModel):
    """A tool as offered to a model: a name, a description, and a JSON Schema for its arguments.

    Other keys of a function definition (`strict`, a `response` schema, vendor extensions) are kept
    as they came, so a stored tool is the tool the teacher saw.
    """

    model_config = ConfigDict(extra="allow")
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolCall(BaseModel):
    """One call the model asked for.

    `arguments` is the parsed object. When the model wrote arguments that are not a JSON object,
    `arguments` is empty, `raw_arguments` keeps exactly what it wrote and `parse_error` says why,
    so nothing the model produced is lost and the failure is visible downstream.
    """

    id: str = Field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str | None = None
    parse_error: str | None = None

    def canonical(self) -> str:
        """The call as sorted-key JSON of name and arguments: the key for agreement and action distributions."""
        if self.parse_error is not None:
            return canonical_json({"name": self.name, "raw_arguments": self.raw_arguments})
        return canonical_json({"name": self.name, "arguments": self.arguments})


class ToolResult(BaseModel):
    """What a tool returned (or the error it raised) for one `ToolCall`."""

    tool_call_id: str
    name: str
    content: str
    is_error: bool = False
    latency_s: float = 0.0


class TopLogprob(BaseModel):
    token: str
    logprob: float
    token_id: int | None = None


class TokenLogprob(BaseModel):
    """The logprob of one generated token, with the top-k alternatives when the provider gives them."""

    token: str
    logprob: float
    token_id: int | None = None
    top: list[TopLogprob] = Field(default_factory=list)


class ThinkingBlock(BaseModel):
    """Extended thinking as the provider returned it.

    Anthropic requires thinking blocks to be passed back unmodified within a tool loop, so the
    signature (or, for redacted thinking, the opaque `data`) is kept byte for byte.
    """

    type: Literal["thinking", "redacted_thinking"] = "thinking"
    thinking: str = ""
    signature: str | None = None
    data: str | None = None


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})


StopReason = Literal[
    "end_turn",  # a final answer
    "tool_use",  # the model asked for tools
    "max_tokens",  # cut off by the token limit
    "stop_sequence",
    "refusal",  # the provider's safety system declined
    "pause_turn",  # Anthropic paused a long server-tool turn; continue by sending it back
    "error",
    "early_reject",  # a local proposal stopped once its scorer had to reject it (it is escalated)
]


class Turn(BaseModel):
    """One model call's output: visible text, thinking, tool calls, logprobs, usage and cost."""

    text: str = ""
    thinking: list[ThinkingBlock] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    stop_reason: StopReason = "end_turn"
    logprobs: list[TokenLogprob] | None = None
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    latency_s: float = 0.0
    # Dollars; finite and not negative. NaN or infinity would be written to JSON as null and never
    # read back (the round trip must stay lossless), and a negative cost would corrupt every total.
    cost_usd: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    # Provider-native content to send back verbatim on the next call (e.g. Anthropic blocks after
    # `pause_turn`). Kept as plain JSON so the round trip stays lossless.
    provider_content: list[dict[str, Any]] | None = None


class TierConfidence(BaseModel):
    """One tier's score for the proposal it made at a step, or why it has none."""

    tier: int
    model: str = ""
    confidence: float | None = None
    threshold: float | None = None  # None: this tier could not escalate here (the last tier, or a pinned one)
    score_error: str | None = None  # the scorer could not score the proposal, which then counted as 0
    invalid: str | None = None  # why the action is invalid (unknown tool, bad arguments, stopped early)
    error: str | None = None  # the call itself failed (error, timeout)


class ModelCallRecord(BaseModel):
    """One model call made for a step: a tier's proposal, or the extra samples its scorer wanted."""

    tier: int
    model: str = ""
    kind: Literal["proposal", "samples"] = "proposal"
    n: int = 1
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    abandoned: bool = False  # made in an attempt that `escalate="restart"` abandoned


class RejectedProposal(BaseModel):
    """A lower tier's proposal that the cascade did not keep."""

    tier: int
    model: str = ""
    confidence: float | None = None
    threshold: float | None = None
    action: str | None = None  # the canonical action (`confidence.action_key`)
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)


class AbandonedAttempt(BaseModel):
    """What `escalate="restart"` threw away before the kept attempt, charged to its first step."""

    attempts: int = 0
    steps: int = 0
    cost_usd: float = 0.0
    asked_tiers: list[int] = Field(default_factory=list)  # each proposal asked for, by tier
    doubted_tiers: list[int] = Field(default_factory=list)  # each doubt, by tier (the last one ended the attempt)
    # per attempt: {"steps": [Step JSON without logprobs], "rejected": the doubted proposal}, for viewers
    attempts_detail: list[dict[str, Any]] = Field(default_factory=list)


class RoutingRecord(BaseModel):
    """How a cascade chose a step: which tier answered, how sure it was, and every call it cost.

    `tier` is the answering tier's index in the cascade (its config); `confidence` and `threshold`
    are that tier's (threshold None: it could not escalate). `escalated` says a higher tier was
    asked; `reasons` says why, one line per doubt or failure. `usage` is the answering call's
    tokens (what a client is billed for); the step's own `usage` counts every call in `calls`.
    Records stored before this type existed (plain dicts with `tier`, `confidences`, `rejected`,
    `calls`) validate into it: the summary fields are derived from the itemised ones.
    """

    tier: int = 0
    confidence: float | None = None
    threshold: float | None = None
    escalated: bool = False
    reasons: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    confidences: list[TierConfidence] = Field(default_factory=list)
    rejected: list[RejectedProposal] = Field(default_factory=list)
    calls: list[ModelCallRecord] = Field(default_factory=list)
    fallback_failed: str | None = None  # the escalation target failed; a lower tier's proposal was kept
    abandoned_attempt: AbandonedAttempt | None = None
    pinned: bool = False  # the request named the tier (the gateway's `distillery.tier`)
    dropped_parallel_calls: int = 0  # tool calls the gateway dropped for `parallel_tool_calls=false`
    source: str | None = None  # where an unrouted step came from, e.g. "client_history" (the gateway)

    @model_validator(mode="after")
    def _derive_what_was_not_given(self) -> RoutingRecord:
        # A record stored as a plain dict before this type existed has only the itemised fields;
        # derive the summary from them. A cascade gives the summary but leaves `reasons` to this.
        given = self.model_fields_set
        answering = [c for c in self.confidences if c.tier == self.tier and c.error is None]
        if answering and "confidence" not in given:
            self.confidence = answering[-1].confidence
        if answering and "threshold" not in given:
            self.threshold = answering[-1].threshold
        if "usage" not in given:
            calls = [c for c in self.calls
                     if c.tier == self.tier and c.kind == "proposal" and c.error is None and not c.abandoned]
            self.usage = calls[-1].usage if calls else Usage()
        if "escalated" not in given:
            self.escalated = bool(self.rejected or self.fallback_failed is not None or self.abandoned_attempt is not None)
        if "reasons" not in given:
            self.reasons = escalation_reasons(self)
        return self


def escalation_reasons(record: RoutingRecord) -> list[str]:
    """Why a step left its lower tiers, one line per doubted proposal or failed call, from the record's facts.

    The doubts are the rejected proposals (plus the kept one when the fallback failed); the
    decision itself was made by `routing.decision.should_escalate`, not re-made here.
    """
    by_tier = {entry.tier: entry for entry in record.confidences if entry.error is None}
    doubted = [(r.tier, r.model, r.confidence) for r in record.rejected]
    if record.fallback_failed is not None:
        doubted.append((record.tier, by_tier[record.tier].model if record.tier in by_tier else "", record.confidence))
    reasons = []
    for tier, model, confidence in doubted:
        entry = by_tier.get(tier)
        if entry is not None and entry.score_error is not None:
            reasons.append(f"tier {tier} ({model}) could not be scored ({entry.score_error}); counted as confidence 0")
            continue
        shown = "none (unscored)" if confidence is None else f"{confidence:.4g}"
        threshold = entry.threshold if entry is not None else None
        below = f" < threshold {threshold:g}" if threshold is not None else ""
        reasons.append(f"tier {tier} ({model}): confidence {shown}{below}")
    reasons += [f"tier {entry.tier} ({entry.model}) failed: {entry.error}"
                for entry in record.confidences if entry.error is not None]
    if record.abandoned_attempt is not None:
        abandoned = record.abandoned_attempt
        reasons.append(f"restarted at tier {record.tier} after {abandoned.attempts} abandoned attempt(s) "
                       f"({abandoned.steps} step(s))")
    return reasons


class Step(Turn):
    """A `Turn` in its place in a trajectory: the tool results it led to, and who produced it.

    `producer` names the model (or cascade tier) that produced this step; `confidence` is the
    router's score for it and `escalated` says whether a lower tier's proposal was rejected.
    `routing` is the cascade's record of the choice (None for a step no cascade routed).
    """

    tool_results: list[ToolResult] = Field(default_factory=list)
    producer: str | None = None
    confidence: float | None = None
    escalated: bool = False
    routing: RoutingRecord | None = None

    @field_validator("routing", mode="before")
    @classmethod
    def _empty_is_unrouted(cls, value: Any) -> Any:
        return None if value == {} else value  # stored steps without routing hold an empty dict

    @property
    def tier(self) -> int:
        """The cascade tier that produced this step (0 when no cascade routed it)."""
        return self.routing.tier if self.routing is not None else 0

    @property
    def final_answer(self) -> str | None:
        return None if self.tool_calls else self.text

    @classmethod
    def from_turn(cls, turn: Turn, **extra: Any) -> Step:
        # Pass the turn's fields as they are: dumping and re-validating nested models cost more
        # CPU per step than the rest of the agent loop (BENCHMARKS.md, "Collection throughput").
        return cls(**{name: getattr(turn, name) for name in Turn.model_fields}, **extra)


class Message(BaseModel):
    """One chat message in the neutral, OpenAI-shaped form every provider translates from."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    thinking: list[ThinkingBlock] = Field(default_factory=list)
    provider_content: list[dict[str, Any]] | None = None


class Outcome(BaseModel):
    """How a trajectory was judged: by the task's checker, when it has one."""

    success: bool | None = None
    score: float | None = None
    checker: str | None = None
    expected: Any = None
    detail: str | None = None


TrajectoryStatus = Literal["ok", "max_steps", "max_tokens", "refused", "error"]


class Trajectory(BaseModel):
    """Everything that happened while one model (or cascade) worked on one task."""

    id: str = Field(default_factory=_new_id)
    task_id: str
    query: str
    system: str | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    status: TrajectoryStatus = "ok"
    error: str | None = None
    outcome: Outcome | None = None
    model: str = ""
    sample_index: int = 0
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=_now)

    @property
    def final_answer(self) -> str | None:
        if self.steps and not self.steps[-1].tool_calls and self.status == "ok":
            return self.steps[-1].text
        return None

    @property
    def usage(self) -> Usage:
        total = Usage()
        for step in self.steps:
            total = total + step.usage
        return total

    @property
    def cost_usd(self) -> float:
        return sum(step.cost_usd for step in self.steps)

    @property
    def latency_s(self) -> float:
        return sum(step.latency_s for step in self.steps) + sum(
            r.latency_s for step in self.steps for r in step.tool_results
        )

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [call for step in self.steps for call in step.tool_calls]

    def messages(self, *, include_system: bool = True) -> list[Message]:
        """The conversation as the model saw it, ending with the last step's output."""
        messages: list[Message] = []
        if include_system and self.system:
            messages.append(Message(role="system", content=self.system))
        messages.append(Message(role="user", content=self.query))
        for step in self.steps:
            messages.extend(step_messages(step))
        return messages


def step_messages(step: Step | Turn) -> list[Message]:
    """The assistant message for a step, followed by one tool message per tool result."""
    out = [
        Message(
            role="assistant",
            content=step.text,
            tool_calls=list(step.tool_calls),
            thinking=list(step.thinking),
            provider_content=step.provider_content,
        )
    ]
    for result in getattr(step, "tool_results", []):
        out.append(
            Message(
                role="tool",
                content=result.content,
                tool_call_id=result.tool_call_id,
                name=result.name,
                is_error=result.is_error,
            )
        )
    return out


class DistillationSample(BaseModel):
    """One training example distilled from a trajectory: the conversation and its teacher signals.

    `messages` is the full conversation (system, user, assistant steps, tool results). The optional
    `action_distributions` hold, per assistant step, the empirical distribution of the teacher's
    canonical actions over its k samples (`{canonical_action: probability}`).
    """

    task_id: str
    trajectory_id: str | None = None
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    model: str = ""
    tags: list[str] = Field(default_factory=list)
    outcome: Outcome | None = None
    action_distributions: list[dict[str, float]] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_trajectory(cls, trajectory: Trajectory) -> DistillationSample:
        return cls(
            task_id=trajectory.task_id,
            trajectory_id=trajectory.id,
            messages=trajectory.messages(),
            tools=list(trajectory.tools),
            model=trajectory.model,
            tags=list(trajectory.tags),
            outcome=trajectory.outcome,
            metadata=dict(trajectory.metadata),
        )
