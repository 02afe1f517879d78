"""Request/response translation and capture, as pure functions (the SDK-level tests are in test_serve_sdk.py)."""

from __future__ import annotations

import json

import pytest

from distillery.serve import GatewayError, RoutedTurn, StepOptions
from distillery.serve import anthropic_api, openai_api
from distillery.serve.capture import Exchange, exchange_trajectory
from distillery.trajectory import Message, RoutingRecord, ToolCall, ToolSpec, Turn
from tests.serve_helpers import scripted_backend


def test_openai_history_keeps_invalid_tool_arguments_verbatim():
    messages = openai_api.parse_messages([
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Error: bad JSON"},
    ])
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
    call = messages[2].tool_calls[0]
    assert call.arguments == {} and call.raw_arguments == '{"a": 1' and call.parse_error
    assert messages[3].name == "f"  # looked up from the assistant's call id
    assert openai_api._message(Turn(tool_calls=[call], stop_reason="tool_use"))["tool_calls"][0]["function"][
        "arguments"] == '{"a": 1'


def test_anthropic_tool_results_become_tool_messages_before_the_users_text():
    messages = anthropic_api.parse_messages([
        {"role": "user", "content": "stock?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "t1", "name": "get_stock", "input": {"sku": "A"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": [{"type": "text", "text": "down"}]},
            {"type": "text", "text": "try again"}]},
    ], system=[{"type": "text", "text": "Be brief."}])
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert messages[2].content == "Checking." and messages[2].tool_calls[0].arguments == {"sku": "A"}
    assert messages[3].is_error and messages[3].name == "get_stock" and messages[3].content == "down"


def test_anthropic_tool_choice_and_server_tools():
    assert anthropic_api.parse_tool_choice({"type": "any"}) == ("required", None)
    assert anthropic_api.parse_tool_choice({"type": "tool", "name": "f", "disable_parallel_tool_use": True}) == (
        {"type": "function", "function": {"name": "f"}}, False)
    with pytest.raises(GatewayError, match="server tool"):
        anthropic_api.parse_tools([{"type": "web_search_20250305", "name": "web_search"}])


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
