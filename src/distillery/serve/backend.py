"""What the HTTP layer calls: one routed model step per request.

The gateway is stateless, like any chat API: the client runs the tool loop and sends the whole
conversation each time. Each request becomes exactly one call to a `Backend`:

    routed = await backend.step(messages, tools, StepOptions(temperature=0.0))
    routed.turn            # the chosen Turn (text, tool calls, logprobs, usage, cost)
    routed.tier            # who answered, e.g. "hf:runs/xs-kd" or "world:teacher"
    routed.confidence      # that tier's score (None when the tier is not scored, e.g. the teacher)

`CascadeBackend` runs the routing engineer's `Cascade` for one step: it asks tier 1, scores the
proposal, escalates while the confidence is below the threshold, and returns the chosen step with
its routing record. The whole decision is made before the HTTP layer writes a byte, so a streamed
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
from distillery.routing.cascade import Cascade, CascadeConfig, load_cascade_config
from distillery.tools import Tool
from distillery.trajectory import Message, Step, ToolSpec, Trajectory, Turn, Usage, canonical_json


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
    routing: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        """The answering call's tokens: what the client's `usage` field reports.

        A step's own usage also counts rejected proposals and scorer samples (`total_usage`);
        reporting that as prompt tokens would double a client's idea of its context on escalation.
        """
        answering = [c for c in self.routing.get("calls", [])
                     if c.get("tier") == self.tier_index and c.get("kind") == "proposal" and "error" not in c]
        if answering:
            return Usage(**answering[-1]["usage"])
        return self.turn.usage

    @property
    def total_usage(self) -> Usage:
        return self.turn.usage

    def summary(self) -> dict[str, Any]:
        """The routing facts a client sees in the `distillery` response field."""
        return {
            "tier": self.tier,
            "tier_index": self.tier_index,
            "confidence": self.confidence,
            "escalated": self.escalated,
            "cost_usd": self.cost_usd,
            "total_usage": self.total_usage.model_dump(),
            "confidences": self.routing.get("confidences", []),
            **({"fallback_failed": self.routing["fallback_failed"]} if "fallback_failed" in self.routing else {}),
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


class _StepCascade(Cascade):
    """A `Cascade` that also asks every tier for logprobs when the client wants them."""

    want_logprobs: bool = False
    want_top_logprobs: int = 0

    async def model_call(self, model, messages, **kwargs):
        if self.want_logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = max(self.want_top_logprobs, kwargs.get("top_logprobs", 0) or 0)
        return await super().model_call(model, messages, **kwargs)


class CascadeBackend:
    """One routed step through a `Cascade` built from `cascade.toml`.

    The models are loaded once. Each request gets its own light `Cascade` over those same model
    objects (the request's tools, temperature, limits and overrides differ per request, and
    concurrent requests must not share them); local models serialise their own generation with a
    lock and run in a worker thread, so the event loop stays free.

    `escalate = "task"` and `"restart"` cannot apply here: the gateway sees single steps, not tasks,
    so every request starts at tier 1.
    """

    def __init__(self, cascade: Cascade, *, source: str = "<cascade>", calibration: dict[str, Any] | None = None):
        self.template = cascade
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
        template = _StepCascade.from_config(config)
        if max_batch > 1:
            for tier in template.tiers:
                tier.model = batched(tier.model, max_batch=max_batch)
        return cls(template, source=config.source, calibration=config.calibration)

    @property
    def tier_names(self) -> list[str]:
        return [tier.name for tier in self.template.tiers]

    def _tool(self, spec: ToolSpec) -> Tool:
        # Building a Tool compiles its JSON Schema validator; agents send the same tools on every
        # request, so keep the last few hundred.
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

    def _cascade_for(self, tools: list[ToolSpec], options: StepOptions) -> tuple[_StepCascade, list[int]]:
        """The cascade for this request, and the config index of each of its tiers."""
        tiers = self.template.tiers
        indices = list(range(len(tiers)))
        if options.tier is not None:
            if not 0 <= options.tier < len(tiers):
                raise GatewayError(f"tier {options.tier} does not exist; this cascade has tiers 0..{len(tiers) - 1}",
                                 param="distillery.tier")
            indices = [options.tier]
        chosen = [tiers[i] for i in indices]
        thresholds = [t.threshold for t in chosen[:-1]]
        if options.thresholds is not None and len(chosen) > 1:
            given = list(options.thresholds)
            if len(given) == 1:
                given = given * len(thresholds)
            if len(given) != len(thresholds):
                raise GatewayError(f"threshold override has {len(options.thresholds)} values; this cascade takes "
                                 f"1 or {len(thresholds)}", param="distillery.threshold")
            thresholds = given
        generate_options: dict[str, Any] = {}
        if options.tool_choice not in (None, "auto", "none"):
            generate_options["tool_choice"] = options.tool_choice
        if options.stop:
            generate_options["stop"] = list(options.stop)
        offered = [] if options.tool_choice == "none" else [self._tool(spec) for spec in tools]
        cascade = _StepCascade(
            [t.model for t in chosen],
            thresholds,
            offered,
            scorer=[t.scorer for t in chosen],
            on_fallback_error=self.template.on_fallback_error,
            timeouts_s=[t.timeout_s for t in chosen],
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            generate_options=generate_options,
        )
        cascade.want_logprobs = options.logprobs
        cascade.want_top_logprobs = options.top_logprobs
        return cascade, indices

    async def step(self, messages: list[Message], tools: list[ToolSpec], options: StepOptions) -> RoutedTurn:
        cascade, indices = self._cascade_for(tools, options)
        scratch = Trajectory(task_id="gateway", query="")
        step: Step = await cascade.next_step(messages, scratch)
        # Report tiers by their place in the config, also when the request was pinned to one tier.
        routing = dict(step.routing)
        routing["tier"] = indices[routing.get("tier", 0)]
        for key in ("confidences", "rejected", "calls"):
            routing[key] = [{**entry, "tier": indices[entry["tier"]]} for entry in routing.get(key, [])]
        if options.tier is not None:
            routing["pinned"] = True
        turn = step
        if options.parallel_tool_calls is False and len(step.tool_calls) > 1:
            # The client asked for one call at a time; local models cannot be told, so keep the first.
            turn = step.model_copy(update={"tool_calls": step.tool_calls[:1]})
            routing["dropped_parallel_calls"] = len(step.tool_calls) - 1
        return RoutedTurn(
            turn=turn,
            tier=step.producer or cascade.tiers[0].name,
            tier_index=routing["tier"],
            confidence=step.confidence,
            escalated=step.escalated,
            cost_usd=step.cost_usd,
            routing=routing,
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
