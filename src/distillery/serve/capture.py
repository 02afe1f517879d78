"""Capture: every exchange goes to the trajectory store, off the response path.

The handler hands each finished exchange to `CaptureWriter.submit`, which only appends it to a
bounded in-memory queue and returns. A background task turns queued exchanges into `Trajectory`
rows and writes them with `store.put` on one worker thread (SQLite connections are per thread). When
the queue is full the exchange is dropped and counted (`distillery_capture_total{result="dropped"}`)
rather than slowing the answer down; on shutdown the queue is drained before the process exits.

Each exchange becomes one trajectory: the client's conversation (assistant turns it sent back are
steps with `routing.source = "client_history"`, so a dataset build can tell them from what the
gateway produced), then the gateway's step with its routing record. Tags: `gateway`, plus
`escalated` (and `fallback_failed`) when the cascade escalated, so `distillery build --tag
escalated` picks up exactly the cases the student could not do. Request headers, and therefore API
keys, are never captured.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from distillery.serve.backend import RoutedTurn
from distillery.trajectory import Message, RoutingRecord, Step, ToolResult, ToolSpec, Trajectory

log = logging.getLogger(__name__)

GATEWAY_TAG = "gateway"
HISTORY_SOURCE = "client_history"


@dataclass
class Exchange:
    """What the handler hands over: the request as translated, and one routed answer."""

    api: str
    requested_model: str
    served_by: str
    request_id: str
    messages: list[Message]
    tools: list[ToolSpec]
    routed: RoutedTurn
    choice_index: int = 0


def _history_steps(conversation: list[Message]) -> list[Step] | None:
    """Assistant and tool messages after the first user message as steps; None if they do not fit."""
    steps: list[Step] = []
    for message in conversation:
        if message.role == "assistant":
            steps.append(Step(text=message.content, tool_calls=list(message.tool_calls), thinking=list(message.thinking),
                              stop_reason="tool_use" if message.tool_calls else "end_turn",
                              producer=HISTORY_SOURCE, routing=RoutingRecord(source=HISTORY_SOURCE)))
        elif message.role == "tool" and steps:
            steps[-1].tool_results.append(ToolResult(tool_call_id=message.tool_call_id or "", name=message.name or "",
                                                     content=message.content, is_error=message.is_error))
        else:
            return None  # a second user turn (or a stray tool message): not one task's trajectory
    return steps


def exchange_trajectory(exchange: Exchange) -> Trajectory:
    """The exchange as a `Trajectory` whose `messages()` replay what the model saw, then its answer."""
    routed = exchange.routed
    system_parts = [m.content for m in exchange.messages if m.role == "system"]
    conversation = [m for m in exchange.messages if m.role != "system"]
    tags = [GATEWAY_TAG, *routed.tags]
    if routed.escalated and "escalated" not in tags:
        tags.append("escalated")
    gateway: dict[str, Any] = {"api": exchange.api, "model": exchange.requested_model,
                               "request_id": exchange.request_id, "choice": exchange.choice_index}
    history = _history_steps(conversation[1:]) if conversation and conversation[0].role == "user" else None
    if history is None:
        # Several user turns do not fit one task: keep the whole conversation in metadata.
        users = [m for m in conversation if m.role == "user"]
        query = users[-1].content if users else ""
        history = []
        gateway["conversation"] = [m.model_dump(mode="json") for m in exchange.messages]
        tags.append("multi_turn")
    else:
        query = conversation[0].content
    gateway["history_steps"] = len(history)
    turn = routed.turn
    final = turn.model_copy(deep=True) if isinstance(turn, Step) else Step.from_turn(turn)
    final.producer = routed.tier
    final.confidence = routed.confidence
    final.escalated = routed.escalated
    final.routing = routed.routing.model_copy(deep=True) if routed.routing is not None else None
    final.cost_usd = routed.cost_usd or final.cost_usd
    status = {"max_tokens": "max_tokens", "refusal": "refused"}.get(final.stop_reason, "ok")
    return Trajectory(
        task_id=f"gateway-{exchange.request_id}-{exchange.choice_index}",
        query=query,
        system="\n\n".join(system_parts) or None,
        tools=list(exchange.tools),
        steps=[*history, final],
        status=status,
        model=exchange.served_by,
        tags=tags,
        metadata={"gateway": gateway},
    )


class CaptureWriter:
    """A bounded queue and one background writer in front of a `TrajectoryStore`."""

    def __init__(self, store: Any, *, max_queue: int = 10_000, on_result=None):
        self.store = store
        self.queue: asyncio.Queue[Exchange | None] = asyncio.Queue(maxsize=max_queue)
        self.on_result = on_result or (lambda result: None)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distillery-capture")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="distillery-capture")

    def submit(self, exchange: Exchange) -> bool:
        """Queue an exchange without waiting; False (and counted as dropped) when the queue is full."""
        try:
            self.queue.put_nowait(exchange)
        except asyncio.QueueFull:
            self.on_result("dropped")
            return False
        return True

    def _write(self, exchange: Exchange) -> None:
        self.store.put(exchange_trajectory(exchange))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            exchange = await self.queue.get()
            try:
                if exchange is None:
                    return
                await loop.run_in_executor(self._executor, self._write, exchange)
                self.on_result("written")
            except Exception as exc:  # a bad row or a full disk must not stop capture (or serving)
                log.warning("capture: could not store exchange %s: %s", getattr(exchange, "request_id", "?"), exc)
                self.on_result("failed")
            finally:
                self.queue.task_done()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued (up to `timeout_s`), then stop the writer."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.queue.put(None), timeout_s)
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except asyncio.TimeoutError:
            log.warning("capture: %d exchange(s) not written at shutdown (timeout)", self.queue.qsize())
            self._task.cancel()
        self._executor.shutdown(wait=True)
        self._task = None
