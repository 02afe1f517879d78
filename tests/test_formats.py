"""The vendor wire formats: each stop-reason table exists once, and round trips are what they should be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.dataset import build_finetune_jsonl
from distillery.formats import WireFormatError, anthropic, hermes, openai
from distillery.trajectory import DistillationSample, Message, ThinkingBlock, ToolCall, ToolResult, Turn
from tests.test_dataset_support import golden_trajectory, varied_trajectories

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


# --- messages: one converter per direction per vendor -------------------------------------------

PARIS = ToolCall(id="call_1", name="get_weather", arguments={"city": "Zürich", "unit": "celsius"})
TOKYO = ToolCall(id="call_2", name="get_local_time", arguments={"timezone": "Asia/Tokyo", "nested": {"a": [1, 2]}})
CONVERSATIONS = {
    "text": [Message(role="system", content="Be brief."), Message(role="user", content="hi"),
             Message(role="assistant", content="Hello! 東京")],
    "single call": [Message(role="user", content="weather?"),
                    Message(role="assistant", content="Checking.", tool_calls=[PARIS]),
                    Message(role="tool", tool_call_id="call_1", name="get_weather", content='{"temp_c": 14}'),
                    Message(role="assistant", content="14 °C.")],
    "parallel calls, no text": [Message(role="system", content="Use tools."), Message(role="user", content="both?"),
                                Message(role="assistant", tool_calls=[PARIS, TOKYO]),
                                Message(role="tool", tool_call_id="call_1", name="get_weather", content="rain"),
                                Message(role="tool", tool_call_id="call_2", name="get_local_time", content="21:04"),
                                Message(role="assistant", content="Rain; 21:04.")],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_openai_messages_round_trip(name):
    messages = CONVERSATIONS[name]
    assert openai.messages_from_wire(openai.messages_to_wire(messages)) == messages


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_anthropic_messages_round_trip(name):
    messages = CONVERSATIONS[name]
    system, wire = anthropic.messages_to_wire(messages)
    assert anthropic.messages_from_wire(wire, system) == messages


def test_anthropic_keeps_failed_tool_results_and_signed_thinking():
    messages = [Message(role="user", content="go"),
                Message(role="assistant", tool_calls=[PARIS],
                        thinking=[ThinkingBlock(thinking="hmm", signature="sig"), ThinkingBlock(type="redacted_thinking", data="x")]),
                Message(role="tool", tool_call_id="call_1", name="get_weather", content="down", is_error=True)]
    system, wire = anthropic.messages_to_wire(messages)
    assert system is None and anthropic.messages_from_wire(wire) == messages


def test_invalid_arguments_round_trip_verbatim():
    # What the model wrote goes back to it unchanged, and reads back as the same failed call.
    call = openai.tool_call_from_wire("call_9", "f", '{"a": 1')
    assert call.arguments == {} and call.raw_arguments == '{"a": 1' and call.parse_error.startswith("invalid JSON")
    messages = [Message(role="user", content="x"), Message(role="assistant", tool_calls=[call]),
                Message(role="tool", tool_call_id="call_9", name="f", content="error: invalid JSON")]
    assert openai.messages_from_wire(openai.messages_to_wire(messages)) == messages


def test_a_response_turn_reads_back_as_the_message_it_was():
    turn = Turn(text="Checking.", tool_calls=[PARIS, TOKYO], thinking=[ThinkingBlock(thinking="plan")], stop_reason="tool_use")
    wire = openai.turn_to_wire(turn)
    back = openai.messages_from_wire([{"role": "user", "content": "q"}, wire,
                                      *({"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in turn.tool_calls)])
    assert (back[1].content, back[1].tool_calls, back[1].thinking) == (turn.text, turn.tool_calls, turn.thinking)
    blocks = anthropic.turn_to_wire(turn, thinking=True)
    assert anthropic.assistant_from_wire(blocks) == ("Checking.", [ThinkingBlock(thinking="plan", signature="")],
                                                     turn.tool_calls)


def test_hermes_text_round_trip():
    # The template writes `<tool_call>{"name", "arguments"}</tool_call>`; parsing reads the same calls back.
    text = "Checking." + "".join(
        f'\n<tool_call>\n{{"name": "{c.name}", "arguments": {openai.arguments_json(c.arguments)}}}\n</tool_call>'
        for c in (PARIS, TOKYO))
    content, calls = hermes.parse_tool_calls(text)
    assert content == "Checking."
    assert [(c.name, c.arguments) for c in calls] == [(PARIS.name, PARIS.arguments), (TOKYO.name, TOKYO.arguments)]


def test_template_and_stored_rows_spell_calls_alike():
    # A chat-template message and its Arrow-safe stored row differ only in how arguments are held.
    message = CONVERSATIONS["parallel calls, no text"][2]
    template = hermes.to_hf_message(message)
    stored = hermes.arrow_message(template)
    assert [c["function"]["arguments"] for c in stored["tool_calls"]] == [openai.call_arguments(c) for c in (PARIS, TOKYO)]
    assert hermes.arrow_message(stored) == stored
    assert stored["tool_calls"] == openai.messages_to_wire([message])[0]["tool_calls"]


def test_openai_history_keeps_invalid_tool_arguments_verbatim():
    messages = openai.messages_from_wire([
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
    assert openai.turn_to_wire(Turn(tool_calls=[call], stop_reason="tool_use"))["tool_calls"][0]["function"][
        "arguments"] == '{"a": 1'


def test_anthropic_tool_results_become_tool_messages_before_the_users_text():
    messages = anthropic.messages_from_wire([
        {"role": "user", "content": "stock?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "t1", "name": "get_stock", "input": {"sku": "A"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": [{"type": "text", "text": "down"}]},
            {"type": "text", "text": "try again"}]},
    ], [{"type": "text", "text": "Be brief."}])
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert messages[2].content == "Checking." and messages[2].tool_calls[0].arguments == {"sku": "A"}
    assert messages[3].is_error and messages[3].name == "get_stock" and messages[3].content == "down"


def test_anthropic_tool_choice_and_server_tools():
    assert anthropic.tool_choice_from_wire({"type": "any"}) == ("required", None)
    assert anthropic.tool_choice_from_wire({"type": "tool", "name": "f", "disable_parallel_tool_use": True}) == (
        {"type": "function", "function": {"name": "f"}}, False)
    with pytest.raises(WireFormatError, match="server tool"):
        anthropic.tools_from_wire([{"type": "web_search_20250305", "name": "web_search"}])



def test_tools_round_trip():
    from distillery.trajectory import ToolSpec

    specs = [ToolSpec(name="get_weather", description="Weather.", parameters={"type": "object", "properties": {"city": {"type": "string"}}})]
    assert openai.tools_from_wire(openai.tools_to_wire(specs)) == specs
    assert anthropic.tools_from_wire(anthropic.tools_to_wire(specs)) == specs


@pytest.mark.parametrize("choice", ["auto", "none", "required", {"type": "function", "function": {"name": "f"}}])
def test_tool_choice_round_trips_through_anthropic(choice):
    assert anthropic.tool_choice_from_wire(anthropic.tool_choice_to_wire(choice))[0] == choice


# --- the on-disk training format -----------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden"


def wire_golden_trajectories():
    """Two plain trajectories and one with a failed tool call and non-ASCII text and arguments."""
    trajectories = varied_trajectories(2)
    odd = golden_trajectory(task_id="odd", trajectory_id="traj-odd", query="ünïcode query 東京")
    odd.steps[0].tool_calls[0].arguments = {"city": "Zürich"}
    odd.steps[0].tool_results[0] = ToolResult(tool_call_id="call_paris", name="get_weather", content="error: no such city",
                                              is_error=True)
    odd.steps[1].tool_calls[0].arguments = {"timezone": "Asia/東京"}
    return [*trajectories, odd]


@pytest.mark.parametrize("name, format, options", [
    ("wire_openai_keep.jsonl", "openai", {}),
    ("wire_openai_drop_masked.jsonl", "openai", {"reasoning": "drop", "mask_failed_steps": True}),
    ("wire_hf_keep.jsonl", "hf", {}),
    ("wire_hf_drop.jsonl", "hf", {"reasoning": "drop"}),
])
def test_training_files_keep_their_bytes(tmp_path, name, format, options):
    # The golden files were written before the converters moved into formats/: same bytes since.
    build_finetune_jsonl(wire_golden_trajectories(), tmp_path / name, format=format, **options)
    assert (tmp_path / name).read_bytes() == (GOLDEN / name).read_bytes()


def test_trainer_rows_keep_their_shape():
    # What `train_student` turns samples and HF-format records into, written before the move.
    from distillery.distill.trainer import chat_rows

    samples = [DistillationSample.from_trajectory(t) for t in wire_golden_trajectories()]
    records = [json.loads(line) for line in (GOLDEN / "wire_hf_keep.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = chat_rows(samples) + chat_rows(records)
    assert json.dumps(rows, ensure_ascii=False, indent=1) + "\n" == (GOLDEN / "wire_trainer_rows.json").read_text(encoding="utf-8")
