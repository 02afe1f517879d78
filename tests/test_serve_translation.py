"""Request/response translation and capture, as pure functions (the SDK-level tests are in test_serve_sdk.py)."""

from __future__ import annotations

import json

import pytest

from distillery.serve import GatewayError, RoutedTurn, StepOptions
from distillery.serve import openai_api
from distillery.serve.capture import Exchange, exchange_trajectory
from distillery.trajectory import Message, RoutingRecord, ToolCall, ToolSpec, Turn
from tests.serve_helpers import scripted_backend


@pytest.mark.parametrize("text", ["", "one", "Hello, world! " * 9, "  leading and trailing  ", "naïve 日本語 text\n\nnext"])
def test_stream_pieces_rejoin_to_the_exact_text(text):
    assert "".join(openai_api.text_pieces(text)) == text


def test_invalid_tool_schema_is_a_400_naming_the_tool():
    backend = scripted_backend()
    with pytest.raises(GatewayError, match="'broken'") as error:
        backend.overrides([ToolSpec(name="broken", parameters={"type": "object", "properties": 3})], StepOptions())
    assert error.value.status == 400 and error.value.param == "tools"


def test_multi_turn_conversation_is_captured_whole_in_metadata():
    messages = [Message(role="user", content="first"), Message(role="assistant", content="ok"),
                Message(role="user", content="second")]
    routed = RoutedTurn(turn=Turn(text="answer"), tier="t", escalated=True, routing=RoutingRecord(tier=0))
    trajectory = exchange_trajectory(Exchange(api="openai", requested_model="m", served_by="cascade", request_id="r1",
                                              messages=messages, tools=[], routed=routed))
    assert trajectory.query == "second" and [s.text for s in trajectory.steps] == ["answer"]
    assert {"gateway", "escalated", "multi_turn"} <= set(trajectory.tags)
    assert [m["content"] for m in trajectory.metadata["gateway"]["conversation"]] == ["first", "ok", "second"]
    assert json.loads(trajectory.model_dump_json())["task_id"] == "gateway-r1-0"


def test_openai_request_validation_names_the_field():
    for body, param in [({"model": "m"}, "messages"),
                        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
                        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, "top_logprobs"),
                        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"},
                         "tool_choice"),
                        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id")]:
        with pytest.raises(GatewayError) as error:
            openai_api.parse_request(body)
        assert error.value.param == param


def test_tool_call_arguments_stream_as_fragments_that_rejoin():
    call = ToolCall(id="c", name="f", arguments={"text": "x" * 100})
    routed = RoutedTurn(turn=Turn(tool_calls=[call], stop_reason="tool_use"), tier="t")
    chunks = [json.loads(c[len(b"data: "):]) for c in openai_api.stream_chunks(
        [routed], model="m", request_id="r", created=0, logprobs=False, include_usage=False) if c != b"data: [DONE]\n\n"]
    fragments = [tc["function"]["arguments"] for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert len(fragments) > 2 and json.loads("".join(fragments)) == call.arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
