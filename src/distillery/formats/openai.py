"""OpenAI Chat Completions: finish reasons, both directions.

OpenAI has fewer reasons than we do: a stop sequence, a pause and an error all read as "stop" on
the wire, and a refusal as "content_filter".
"""

from __future__ import annotations

FINISH_REASON_FROM_WIRE = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
FINISH_REASON_TO_WIRE = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "error": "stop",
}


def stop_reason_from_wire(finish_reason: str | None) -> str | None:
    """Ours for the API's `finish_reason`; None for one the API did not document."""
    return FINISH_REASON_FROM_WIRE.get(finish_reason or "")


def stop_reason_to_wire(ours: str | None) -> str:
    return FINISH_REASON_TO_WIRE.get(ours or "", "stop")
