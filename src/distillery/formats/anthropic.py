"""Anthropic Messages API: stop reasons, both directions.

Our stop reasons are Anthropic's own names, plus "error" (a failed call, which the API never
sends). From the wire, a context-window overflow is, for an agent, the same as running out of
tokens: the turn is cut off.
"""

from __future__ import annotations

# Every stop reason the API documents, mapped onto ours.
STOP_REASON_FROM_WIRE = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "model_context_window_exceeded": "max_tokens",
}
WIRE_STOP_REASONS = ("end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal", "pause_turn")


def stop_reason_from_wire(value: str | None) -> str | None:
    """Ours for the API's `stop_reason`; None for one the API did not document."""
    return STOP_REASON_FROM_WIRE.get(value or "")


def stop_reason_to_wire(ours: str | None) -> str:
    """The API's `stop_reason` for ours; anything else (an error) reads as a finished turn."""
    return ours if ours in WIRE_STOP_REASONS else "end_turn"
