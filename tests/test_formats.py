"""The vendor wire formats: each stop-reason table exists once, and round trips are what they should be."""

from __future__ import annotations

import pytest

from distillery.formats import anthropic, openai

OURS = ["end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal", "pause_turn", "error"]


@pytest.mark.parametrize("ours", OURS)
def test_anthropic_stop_reasons_survive_the_gateway_and_the_provider(ours):
    # The gateway writes ours to an Anthropic client; the provider reads the API's: the same names,
    # except an error, which the API never sends (a finished turn).
    assert anthropic.stop_reason_from_wire(anthropic.stop_reason_to_wire(ours)) == (ours if ours != "error" else "end_turn")


@pytest.mark.parametrize("ours, wire, back", [
    ("end_turn", "stop", "end_turn"), ("tool_use", "tool_calls", "tool_use"), ("max_tokens", "length", "max_tokens"),
    ("refusal", "content_filter", "refusal"),
    # OpenAI has no name for these: they read as a plain stop.
    ("stop_sequence", "stop", "end_turn"), ("pause_turn", "stop", "end_turn"), ("error", "stop", "end_turn"),
])
def test_openai_finish_reasons_both_ways(ours, wire, back):
    assert openai.stop_reason_to_wire(ours) == wire
    assert openai.stop_reason_from_wire(wire) == back


def test_undocumented_wire_values_are_not_guessed():
    assert anthropic.stop_reason_from_wire("something_new") is None
    assert openai.stop_reason_from_wire("something_new") is None
    assert anthropic.stop_reason_from_wire("model_context_window_exceeded") == "max_tokens"
