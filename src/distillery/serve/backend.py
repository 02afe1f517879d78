"""What the HTTP layer calls: one routed model step per request.

The gateway is stateless, like any chat API: the client runs the tool loop and sends the whole
conversation each time. Each request becomes exactly one call to a `Backend`:

    routed = await backend.step(messages, tools, StepOptions(temperature=0.0))
    routed.turn            # the chosen Turn (text, tool calls, logprobs, usage, cost)
    routed.tier            # who answered, e.g. "hf:runs/xs-kd" or "world:teacher"
    routed.confidence      # that tier's score (None when the tier is not scored, e.g. the teacher)

`CascadeBackend` runs one long-lived `Cascade` for one step per request: it asks tier 1, scores
the proposal, escalates as `routing/decision.py` says, and returns the chosen step with its
`RoutingRecord`. A request's settings (tools, sampling, threshold overrides, a pinned tier) go
into `Cascade.next_step` as `StepOverrides`; the cascade itself never changes. The whole decision is made before the HTTP layer writes a byte, so a streamed
answer never switches model midway. `FixedBackend` returns a fixed turn: the benchmark's
"trivial backend".
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from distillery.errors import ConfigError, DistilleryError
from distillery.models.batching import batched
from distillery.routing.cascade import Cascade, StepOverrides
from distillery.routing.config import CascadeConfig, load_cascade_config
from distillery.routing.decision import override_thresholds
from distillery.tools import Tool
from distillery.trajectory import Message, RoutingRecord, Step, ToolSpec, Trajectory, Turn, Usage, canonical_json


class GatewayError(DistilleryError):
    """A request the gateway cannot answer: a 4xx for the client's mistakes (bad field, unknown tier,
    too large), a 5xx when the cascade failed for good or timed out. Sent in the API's error shape."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass
class StepOptions:
    """Per-request generation settings and routing overrides, in neutral form.

    `tool_choice` uses the OpenAI spelling ("auto", "none", "required" or
    `{"type": "function", "function": {"name": ...}}`); the Anthropic provider accepts it too.
    `thresholds` overrides the config's thresholds (one value per escalating tier); `tier` pins the
    request to one tier (its index in the config), which then answers without escalation.
    """

    temperature: float = 0.0
    max_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    stop: list[str] | None = None
    thresholds: list[float] | None = None
    tier: int | None = None


@dataclass
class RoutedTurn:
    """One routed step: the turn a tier produced and how the cascade came to choose it."""

    turn: Turn
    tier: str
    tier_index: int = 0
    confidence: float | None = None
    escalated: bool = False
    cost_usd: float = 0.0
    routing: RoutingRecord | None = None  # None for a backend that does not route
    tags: list[str] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        """The answering call's tokens: what the client's `usage` field reports.

        A step's own usage also counts rejected proposals and scorer samples (`total_usage`);
        reporting that as prompt tokens would double a client's idea of its context on escalation.
        """
        return self.routing.usage if self.routing is not None else self.turn.usage

    @property
    def total_usage(self) -> Usage:
        return self.turn.usage

    def summary(self) -> dict[str, Any]:
        """The routing facts a client sees in the `distillery` response field."""
        record = self.routing
        confidences = [] if record is None else [{**entry.model_dump(exclude_none=True), "confidence": entry.confidence}
                                                 for entry in record.confidences]
        return {
            "tier": self.tier,
            "tier_index": self.tier_index,
            "confidence": self.confidence,
            "escalated": self.escalated,
            "cost_usd": self.cost_usd,
            "total_usage": self.total_usage.model_dump(),
            "confidences": confidences,
            **({"fallback_failed": record.fallback_failed} if record and record.fallback_failed is not None else {}),
        }


class Backend(Protocol):
    """Anything that can answer one step. The HTTP layer knows nothing else about models."""

    @property
    def tier_names(self) -> list[str]: ...

    async def step(self, messages: list[Message], tools: list[ToolSpec], options: StepOptions) -> RoutedTurn: ...


class FixedBackend:
    """Answers every request with the same turn, instantly: a baseline for measuring the gateway itself."""

    def __init__(self, turn: Turn | None = None, *, tier: str = "fixed"):
        self.turn = turn or Turn(text="OK", model=tier)
        self._tier = tier
        self.name = f"fixed:{tier}"

    @property
    def tier_names(self) -> list[str]:
        return [self._tier]

    async def step(self, messages: list[Message], tools: list[ToolSpec], options: StepOptions) -> RoutedTurn:
        return RoutedTurn(turn=self.turn, tier=self._tier, confidence=1.0)


def _client_side_tool(spec: ToolSpec) -> Tool:
    def run_on_client(**arguments: Any) -> Any:
        raise RuntimeError("the gateway never runs tools: the client does")

    return Tool(run_on_client, spec)


class CascadeBackend:
    """One routed step per request through one long-lived `Cascade` built from `cascade.toml`.

    The models and the cascade are built once. Each request's settings (its tools, temperature,
    limits, threshold overrides, a pinned tier) are passed to `next_step` as `StepOverrides`, so
    concurrent requests share the cascade without sharing settings. Local models serialise their
    own generation with a lock and run in a worker thread, so the event loop stays free.

    `escalate = "task"` and `"restart"` cannot apply here: the gateway sees single steps, not tasks,
    so every request starts at tier 1.
    """

    def __init__(self, cascade: Cascade, *, source: str = "<cascade>", calibration: dict[str, Any] | None = None):
        self.cascade = cascade
        self.source = source
        self.calibration = calibration or {}  # the config's [calibration] table: metrics show its predictions
        self.name = cascade.name
        self._tools: OrderedDict[str, Tool] = OrderedDict()

    @classmethod
    def from_config(cls, config: str | Path | CascadeConfig, *, max_batch: int = 32) -> CascadeBackend:
        """Load the tiers once. Local tiers batch concurrent requests (`max_batch` per batch, 1: no
        batching): requests that reach the same local tier together are generated together."""
        if not isinstance(config, CascadeConfig):
            config = load_cascade_config(config)
        cascade = Cascade.from_config(config)
        if max_batch > 1:
            for tier in cascade.tiers:
                tier.model = batched(tier.model, max_batch=max_batch)
        return cls(cascade, source=config.source, calibration=config.calibration)

    @property
    def tier_names(self) -> list[str]:
        return [tier.name for tier in self.cascade.tiers]

    def _tool(self, spec: ToolSpec) -> Tool:
        # Building a Tool compiles (and so checks) its JSON Schema; agents send the same tools on
        # every request, so keep the last few hundred.
        key = canonical_json(spec.model_dump())
        tool = self._tools.get(key)
        if tool is None:
            try:
                tool = _client_side_tool(spec)
            except ConfigError as exc:
                raise GatewayError(str(exc), param="tools") from None
            self._tools[key] = tool
            if len(self._tools) > 512:
                self._tools.popitem(last=False)
        else:
            self._tools.move_to_end(key)
        return tool

    def overrides(self, tools: list[ToolSpec], options: StepOptions) -> StepOverrides:
        """This request's settings for `Cascade.next_step`; a `GatewayError` for a bad tier, threshold or tool."""
        n_tiers = len(self.cascade.tiers)
        if options.tier is not None and not 0 <= options.tier < n_tiers:
            raise GatewayError(f"tier {options.tier} does not exist; this cascade has tiers 0..{n_tiers - 1}",
                               param="distillery.tier")
        thresholds = None
        if options.thresholds is not None and options.tier is None and n_tiers > 1:
            try:
                thresholds = override_thresholds(options.thresholds, n_tiers - 1)
            except ConfigError as exc:
                raise GatewayError(str(exc), param="distillery.threshold") from None
        generate_options: dict[str, Any] = {}
        if options.tool_choice not in (None, "auto", "none"):
            generate_options["tool_choice"] = options.tool_choice
        if options.stop:
            generate_options["stop"] = list(options.stop)
        offered = [] if options.tool_choice == "none" else [self._tool(spec).spec for spec in tools]
        return StepOverrides(
            thresholds=thresholds, tier=options.tier, tools=offered, temperature=options.temperature,
            max_tokens=options.max_tokens, generate_options=generate_options, logprobs=options.logprobs,
            top_logprobs=options.top_logprobs,
        )

    async def step(self, messages: list[Message], tools: list[ToolSpec], options: StepOptions) -> RoutedTurn:
        overrides = self.overrides(tools, options)
        scratch = Trajectory(task_id="gateway", query="")
        step: Step = await self.cascade.next_step(messages, scratch, overrides)
        record = step.routing
        turn = step
        if options.parallel_tool_calls is False and len(step.tool_calls) > 1:
            # The client asked for one call at a time; local models cannot be told, so keep the first.
            turn = step.model_copy(update={"tool_calls": step.tool_calls[:1]})
            record.dropped_parallel_calls = len(step.tool_calls) - 1
        return RoutedTurn(
            turn=turn,
            tier=step.producer or self.cascade.tiers[record.tier].name,
            tier_index=record.tier,
            confidence=step.confidence,
            escalated=step.escalated,
            cost_usd=step.cost_usd,
            routing=record,
            tags=list(scratch.tags),
        )


async def gather_steps(backend: Backend, messages: list[Message], tools: list[ToolSpec], options: StepOptions,
                       n: int) -> list[RoutedTurn]:
    """`n` independently routed answers (OpenAI's `n`): each choice is its own routed step."""
    if n == 1:
        return [await backend.step(messages, tools, options)]
    return list(await asyncio.gather(*(backend.step(messages, tools, options) for _ in range(n))))


def json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
