"""The gateway refuses what the real APIs refuse, in each API's error shape (official SDKs as clients):
tool results that answer no call, calls left unanswered, and max_tokens above the served limit."""

from __future__ import annotations

import anthropic
import openai
import pytest

from distillery.errors import ConfigError
from distillery.serve import GatewaySettings, create_app
from distillery.serve.auth import check_bind
from tests.serve_helpers import STOCK_TOOL_ANTHROPIC, STOCK_TOOL_OPENAI, ThreadedGateway, scripted_backend

QUERY = "How many units of SKU-1042 are in Berlin?"


@pytest.fixture(scope="module")
def gateway():
    app = create_app(scripted_backend(threshold=0.5), GatewaySettings(max_output_tokens=4096))
    with ThreadedGateway(app) as server:
        yield server


@pytest.fixture(scope="module")
def oai(gateway):
    return openai.OpenAI(api_key="unused", base_url=gateway.url + "/v1", max_retries=0)


@pytest.fixture(scope="module")
def claude(gateway):
    return anthropic.Anthropic(api_key="unused", base_url=gateway.url, max_retries=0)


def openai_call(call_id="call_1"):
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": "get_stock", "arguments": '{"sku": "SKU-1042", "city": "Berlin"}'}}]}


def openai_error(oai, messages, **options):
    with pytest.raises(openai.BadRequestError) as error:
        oai.chat.completions.create(model="distillery", messages=messages, tools=[STOCK_TOOL_OPENAI], **options)
    assert error.value.status_code == 400 and error.value.body["type"] == "invalid_request_error"
    return error.value.body


def test_openai_tool_message_must_answer_a_preceding_call(oai):
    user = {"role": "user", "content": QUERY}
    body = openai_error(oai, [user, {"role": "tool", "tool_call_id": "call_1", "content": "17"}])
    assert "must be a response to a preceding message with 'tool_calls'" in body["message"]
    assert body["param"] == "messages[1].role"
    body = openai_error(oai, [user, openai_call(), {"role": "tool", "tool_call_id": "call_9", "content": "17"}])
    assert body["message"] == "Invalid parameter: 'tool_call_id' of 'call_9' not found in 'tool_calls' of previous message."
    assert body["param"] == "messages[2].tool_call_id"
    # A tool message after a user message answers nothing, even if an earlier call had that id.
    body = openai_error(oai, [user, openai_call(), {"role": "tool", "tool_call_id": "call_1", "content": "17"},
                              {"role": "user", "content": "and?"}, {"role": "tool", "tool_call_id": "call_1", "content": "17"}])
    assert body["param"] == "messages[4].role"


def test_openai_every_call_is_answered(oai):
    user = {"role": "user", "content": QUERY}
    body = openai_error(oai, [user, openai_call(), {"role": "user", "content": "well?"}])
    assert "The following tool_call_ids did not have response messages: call_1" in body["message"]
    assert body["param"] == "messages[1].role"
    body = openai_error(oai, [user, openai_call()])  # ends on the unanswered call
    assert "call_1" in body["message"]
    answered = oai.chat.completions.create(
        model="distillery", tools=[STOCK_TOOL_OPENAI],
        messages=[user, openai_call(), {"role": "tool", "tool_call_id": "call_1", "content": '{"units": 17}'}])
    assert answered.choices[0].message.content


@pytest.mark.parametrize("max_tokens", [4097, 10**12, 2**70])
def test_max_tokens_above_the_limit_is_a_400_naming_it(oai, claude, max_tokens):
    body = openai_error(oai, [{"role": "user", "content": QUERY}], max_tokens=max_tokens)
    assert body["param"] == "max_tokens" and "at most 4096 completion tokens" in body["message"]
    with pytest.raises(anthropic.BadRequestError) as error:
        # An explicit timeout: without one the SDK itself refuses huge non-streaming max_tokens.
        claude.messages.create(model="distillery", max_tokens=max_tokens, messages=[{"role": "user", "content": QUERY}],
                               timeout=30.0)
    assert f"max_tokens: {max_tokens} > 4096" in error.value.body["error"]["message"]
    assert error.value.body["type"] == "error" and error.value.body["error"]["type"] == "invalid_request_error"


def test_max_tokens_at_the_limit_is_served(oai):
    reply = oai.chat.completions.create(model="distillery", max_tokens=4096, messages=[{"role": "user", "content": QUERY}],
                                        tools=[STOCK_TOOL_OPENAI])
    assert reply.choices[0].finish_reason in ("stop", "tool_calls")


def anthropic_use(use_id="toolu_1"):
    return {"role": "assistant", "content": [
        {"type": "tool_use", "id": use_id, "name": "get_stock", "input": {"sku": "SKU-1042", "city": "Berlin"}}]}


def anthropic_error(claude, messages):
    with pytest.raises(anthropic.BadRequestError) as error:
        claude.messages.create(model="distillery", max_tokens=256, tools=[STOCK_TOOL_ANTHROPIC], messages=messages)
    return error.value.body["error"]["message"]


def test_anthropic_tool_result_must_answer_a_tool_use_of_the_previous_turn(claude):
    user = {"role": "user", "content": QUERY}
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "17"}]}
    message = anthropic_error(claude, [user, anthropic_use(), result])
    assert message.startswith("messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_9.")
    message = anthropic_error(claude, [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                                    "content": "17"}]}])
    assert "unexpected `tool_use_id`" in message


def test_anthropic_tool_use_needs_results_in_the_next_message(claude):
    user = {"role": "user", "content": QUERY}
    message = anthropic_error(claude, [user, anthropic_use(), {"role": "user", "content": "well?"}])
    assert message.startswith("messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1.")
    message = anthropic_error(claude, [user, anthropic_use(), {"role": "assistant", "content": "Berlin has 17."}])
    assert message.startswith("messages.1: `tool_use` ids were found")
    ok = claude.messages.create(model="distillery", max_tokens=256, tools=[STOCK_TOOL_ANTHROPIC], messages=[
        user, anthropic_use(), {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                             "content": '{"units": 17}'}]}])
    assert ok.content


def test_binding_beyond_loopback_needs_a_key_unless_explicitly_allowed():
    with pytest.raises(ConfigError, match="--allow-unauthenticated"):
        check_bind("0.0.0.0", [])
    check_bind("0.0.0.0", [], allow_unauthenticated=True)
    check_bind("0.0.0.0", ["secret"])
    check_bind("127.0.0.1", [])


def test_metrics_show_live_escalation_beside_the_calibrated_prediction():
    import httpx

    backend = scripted_backend(threshold=0.5)
    backend.calibration = {"predicted_step_escalation_rate": 0.25}
    with ThreadedGateway(create_app(backend, GatewaySettings())) as server:
        client = openai.OpenAI(api_key="unused", base_url=server.url + "/v1", max_retries=0)
        for query in ("easy one: how many units of SKU-1042 are in Berlin?", QUERY, QUERY):
            client.chat.completions.create(model="distillery", messages=[{"role": "user", "content": query}],
                                           tools=[STOCK_TOOL_OPENAI])
        metrics = httpx.get(server.url + "/metrics").text
    student = backend.tier_names[0]
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line and not line.startswith("#")}
    assert values[f'distillery_proposals_total{{tier="{student}"}}'] == 3
    assert values[f'distillery_escalations_total{{tier="{student}"}}'] == 2
    assert values[f'distillery_confidence_count{{tier="{student}"}}'] == 3
    assert values[f'distillery_confidence_bucket{{le="0.1",tier="{student}"}}'] == 2  # the two doubtful ones
    assert values[f'distillery_calibrated_escalation_rate{{tier="{student}"}}'] == 0.25
