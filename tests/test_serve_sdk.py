"""The gateway against the official `openai` and `anthropic` SDKs as clients, over HTTP on 127.0.0.1.

The gateway runs in a uvicorn thread over a cascade of scripted tiers (our `ChatModel` test
doubles): a student that is sure of queries containing "easy" (action-token logprob -0.01,
confidence 0.99) and unsure otherwise (-3.0, confidence 0.05), and a teacher that always acts like
an expert. The real-model, real-subprocess path is in test_serve_e2e.py.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from distillery.serve import GatewaySettings, create_app
from distillery.store import SQLiteStore
from tests.serve_helpers import (
    STOCK_TOOL_ANTHROPIC,
    STOCK_TOOL_OPENAI,
    STUDENT_URI,
    TEACHER_URI,
    ThreadedGateway,
    run_get_stock,
    scripted_backend,
    wait_for,
)

HARD = "How many units of SKU-1042 are in Berlin and Paris?"
EASY = "easy one: how many units of SKU-1042 are in Berlin?"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return SQLiteStore(tmp_path_factory.mktemp("serve") / "store.db")


@pytest.fixture(scope="module")
def gateway(store):
    app = create_app(scripted_backend(threshold=0.5), GatewaySettings(store=store, model_map={"student-only": 0}))
    with ThreadedGateway(app) as server:
        yield server


@pytest.fixture(scope="module")
def oai(gateway):
    return openai.OpenAI(api_key="unused", base_url=gateway.url + "/v1", max_retries=0)


@pytest.fixture(scope="module")
def claude(gateway):
    return anthropic.Anthropic(api_key="unused", base_url=gateway.url, max_retries=0)


# --- OpenAI Chat Completions ------------------------------------------------------------------


def test_openai_plain_answer_with_routing_in_headers_and_body(oai):
    raw = oai.chat.completions.with_raw_response.create(
        model="claude-opus-4-6", messages=[{"role": "user", "content": "easy: say hello"}])
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "claude-opus-4-6"
    assert completion.choices[0].message.content == "Hello! Ask me about stock levels."
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-distillery-tier"] == STUDENT_URI and raw.headers["x-distillery-escalated"] == "false"
    assert float(raw.headers["x-distillery-confidence"]) == pytest.approx(0.99, abs=0.001)
    routing = completion.model_extra["distillery"]
    assert routing["tier"] == STUDENT_URI and routing["escalated"] is False
    assert float(raw.headers["x-distillery-cost"]) == pytest.approx(routing["cost_usd"], rel=1e-6)
    assert completion.usage.prompt_tokens == 150 and completion.usage.total_tokens > 150


def test_openai_escalation_is_visible_and_reports_the_answering_tiers_usage(oai):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": HARD}], tools=[STOCK_TOOL_OPENAI])
    completion = raw.parse()
    assert raw.headers["x-distillery-tier"] == TEACHER_URI and raw.headers["x-distillery-escalated"] == "true"
    assert "x-distillery-confidence" not in raw.headers  # the teacher is not scored
    routing = completion.model_extra["distillery"]
    student = routing["confidences"][0]
    assert student["model"] == STUDENT_URI and student["confidence"] < student["threshold"] == 0.5
    # `usage` is the teacher's call; the rejected student proposal is in the total and in the cost.
    assert completion.usage.prompt_tokens == 300
    assert routing["total_usage"]["input_tokens"] == 450


def test_openai_parallel_tool_calls_have_json_string_arguments(oai):
    completion = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": HARD}],
                                             tools=[STOCK_TOOL_OPENAI])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"sku": "SKU-1042", "city": "Berlin"}, {"sku": "SKU-1042", "city": "Paris"}]
    assert all(c.type == "function" and c.function.name == "get_stock" and c.id for c in calls)
    assert len({c.id for c in calls}) == 2


def test_openai_parallel_tool_calls_false_keeps_one_call(oai):
    completion = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": HARD}],
                                             tools=[STOCK_TOOL_OPENAI], parallel_tool_calls=False)
    assert len(completion.choices[0].message.tool_calls) == 1
    assert completion.model_extra["distillery"]["tier"] == TEACHER_URI


def test_openai_client_side_tool_loop_reaches_the_right_answer(oai):
    messages = [{"role": "user", "content": HARD}]
    for _ in range(4):
        completion = oai.chat.completions.create(model="gpt-4o", messages=messages, tools=[STOCK_TOOL_OPENAI])
        message = completion.choices[0].message
        if not message.tool_calls:
            break
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": run_get_stock(json.loads(call.function.arguments))})
    assert message.content == "There are 22 units."  # 17 in Berlin + 5 in Paris, read from the tool results
    assert len(messages) == 4


def test_openai_stream_reassembles_text_with_routing_headers(oai):
    with oai.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "easy: " + "hello " * 3}], stream=True,
            stream_options={"include_usage": True}) as response:
        assert response.headers["x-distillery-tier"] == STUDENT_URI
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["distillery"]["tier"] == STUDENT_URI
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello! Ask me about stock levels."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # include_usage: usage is null on every chunk but the last, which has no choices.
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 150


def test_openai_stream_helper_reassembles_parallel_tool_calls(oai):
    with oai.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": HARD}],
                                     tools=[STOCK_TOOL_OPENAI]) as stream:
        argument_deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)["city"]) for c in calls] == [
        ("get_stock", "Berlin"), ("get_stock", "Paris")]
    assert len(argument_deltas) >= 2  # arguments really arrive as fragments


def test_openai_logprobs_and_top_logprobs(oai):
    completion = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "easy: hi"}],
                                             logprobs=True, top_logprobs=2)
    content = completion.choices[0].logprobs.content
    assert content and content[0].logprob == pytest.approx(-0.01)
    assert content[0].bytes == list(content[0].token.encode())
    without = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "easy: hi"}])
    assert without.choices[0].logprobs is None


def test_openai_n_choices_are_routed_independently(oai):
    completion = oai.chat.completions.create(model="gpt-4o", n=2, messages=[{"role": "user", "content": "easy: hi"}])
    assert [c.index for c in completion.choices] == [0, 1]
    assert len(completion.model_extra["distillery"]["choices"]) == 2
    assert completion.usage.prompt_tokens == 300  # two student calls of 150


def test_per_request_overrides_threshold_and_tier(oai):
    # threshold 0 accepts the unsure student; a pinned tier answers without escalation.
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": HARD}], tools=[STOCK_TOOL_OPENAI],
        extra_body={"distillery": {"threshold": 0.0}})
    assert raw.headers["x-distillery-tier"] == STUDENT_URI
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": HARD}], tools=[STOCK_TOOL_OPENAI],
        extra_headers={"x-distillery-threshold": "0.01"})
    assert raw.headers["x-distillery-tier"] == STUDENT_URI  # 0.05 >= 0.01: accepted
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": EASY}], extra_headers={"x-distillery-tier": "1"})
    assert raw.headers["x-distillery-tier"] == TEACHER_URI and raw.headers["x-distillery-escalated"] == "false"
    assert raw.parse().model_extra["distillery"]["tier_index"] == 1
    # The model map pins "student-only" to tier 0 even when the student is unsure.
    raw = oai.chat.completions.with_raw_response.create(model="student-only", messages=[{"role": "user", "content": HARD}])
    assert raw.headers["x-distillery-tier"] == STUDENT_URI
    with pytest.raises(openai.BadRequestError) as error:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                    extra_body={"distillery": {"tier": 7}})
    assert "tier" in error.value.body["message"]


# --- Anthropic Messages -----------------------------------------------------------------------


def test_anthropic_plain_answer(claude):
    raw = claude.messages.with_raw_response.create(
        model="claude-opus-4-6", max_tokens=100, system="You are terse.",
        messages=[{"role": "user", "content": "easy: hello"}])
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == "claude-opus-4-6"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello! Ask me about stock levels." and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 150
    assert raw.headers["x-distillery-tier"] == STUDENT_URI
    assert message.model_extra["distillery"]["confidence"] == pytest.approx(0.99, abs=0.001)


def test_anthropic_tool_use_and_tool_result_loop(claude):
    messages = [{"role": "user", "content": HARD}]
    first = claude.messages.create(model="claude-opus-4-6", max_tokens=200, messages=messages, tools=[STOCK_TOOL_ANTHROPIC])
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [{"sku": "SKU-1042", "city": "Berlin"}, {"sku": "SKU-1042", "city": "Paris"}]
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": u.id, "content": run_get_stock(u.input)} for u in uses]})
    final = claude.messages.create(model="claude-opus-4-6", max_tokens=200, messages=messages, tools=[STOCK_TOOL_ANTHROPIC])
    assert final.stop_reason == "end_turn" and final.content[0].text == "There are 22 units."


def test_anthropic_stream_event_sequence(gateway):
    body = {"model": "claude-opus-4-6", "max_tokens": 100, "stream": True, "tools": [STOCK_TOOL_ANTHROPIC],
            "messages": [{"role": "user", "content": HARD}]}
    with httpx.stream("POST", gateway.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}) as r:
        assert r.headers["x-distillery-tier"] == TEACHER_URI
        events = [line[len("event: "):] for line in r.iter_lines() if line.startswith("event: ")]
    blocks = [e for e in events if e.startswith("content_block")]
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
    assert blocks.count("content_block_start") == blocks.count("content_block_stop") == 2
    assert blocks[0] == "content_block_start" and blocks[-1] == "content_block_stop"


def test_anthropic_stream_helper_reassembles_text_and_tool_use(claude):
    with claude.messages.stream(model="claude-opus-4-6", max_tokens=100,
                                messages=[{"role": "user", "content": "easy: " + "hi " * 20}]) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == message.content[0].text == "Hello! Ask me about stock levels."
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    with claude.messages.stream(model="claude-opus-4-6", max_tokens=100, tools=[STOCK_TOOL_ANTHROPIC],
                                messages=[{"role": "user", "content": HARD}]) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert [b.input["city"] for b in message.content if b.type == "tool_use"] == ["Berlin", "Paris"]
    assert message.model_extra["distillery"]["tier"] == TEACHER_URI


# --- capture, models, metrics, errors ---------------------------------------------------------


def test_exchanges_are_captured_with_routing_and_escalated_tag(oai, store):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "capture me: SKU-7 in Berlin"}], tools=[STOCK_TOOL_OPENAI])
    request_id = raw.headers["x-request-id"]
    task_id = f"gateway-{request_id}-0"

    def stored():
        return [t for t in store.iter_trajectories(tags_all=["gateway", "escalated"]) if t.task_id == task_id]

    assert wait_for(lambda: bool(stored()))
    trajectory = stored()[0]
    step = trajectory.steps[-1]
    assert trajectory.query == "capture me: SKU-7 in Berlin" and trajectory.tools[0].name == "get_stock"
    assert step.producer == TEACHER_URI and step.escalated and step.routing.rejected[0].model == STUDENT_URI
    assert step.tool_calls[0].arguments == {"sku": "SKU-7", "city": "Berlin"}
    assert trajectory.metadata["gateway"]["model"] == "gpt-4o"


def test_tool_loop_history_is_captured_as_client_history_steps(oai, store):
    messages = [{"role": "user", "content": "history: SKU-7 in Berlin"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_stock",
                                                                  "arguments": '{"sku": "SKU-7", "city": "Berlin"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": '{"units": 40}'}]
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, tools=[STOCK_TOOL_OPENAI])
    task_id = f"gateway-{raw.headers['x-request-id']}-0"
    assert wait_for(lambda: store.get_by_key((task_id, "cascade:world:student-xs>world:teacher", 0)) is not None)
    trajectory = store.get_by_key((task_id, "cascade:world:student-xs>world:teacher", 0))
    history, final = trajectory.steps
    assert history.routing.source == "client_history" and history.tool_results[0].name == "get_stock"
    assert final.text == "There are 40 units."
    assert [m.role for m in trajectory.messages()] == ["user", "assistant", "tool", "assistant"]


def test_models_health_and_metrics(gateway, oai, claude):
    assert {m.id for m in oai.models.list()} == {"distillery", "student-only"}
    assert {m.id for m in claude.models.list()} == {"distillery", "student-only"}
    health = httpx.get(gateway.url + "/health").json()
    assert health["status"] == "ok" and health["tiers"] == [STUDENT_URI, TEACHER_URI]
    oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": HARD}])
    metrics = httpx.get(gateway.url + "/metrics").text
    assert f'distillery_escalations_total{{tier="{STUDENT_URI}"}}' in metrics
    assert f'distillery_steps_total{{tier="{TEACHER_URI}"}}' in metrics
    assert 'distillery_requests_total{api="openai",status="200"}' in metrics
    assert "distillery_request_latency_seconds_bucket" in metrics and "distillery_cost_usd_total" in metrics
    assert 'distillery_capture_total{result="written"}' in metrics


def test_malformed_requests_get_each_apis_error_shape(gateway, oai, claude):
    # OpenAI: broken JSON and a bad field, in {"error": {...}} with param.
    r = httpx.post(gateway.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as error:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "wizard", "content": "hi"}])
    assert error.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="gpt-4o", messages=[])
    with pytest.raises(openai.BadRequestError) as error:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], temperature=7)
    assert error.value.body["param"] == "temperature"
    # Anthropic: {"type": "error", "error": {"type": "invalid_request_error", ...}}.
    with pytest.raises(anthropic.BadRequestError) as error:
        claude.messages.create(model="claude-opus-4-6", max_tokens=10,
                               messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}])
    assert error.value.body["type"] == "error" and error.value.body["error"]["type"] == "invalid_request_error"
    r = httpx.post(gateway.url + "/v1/messages", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    # Over the size limit: 413 before the body is read.
    huge = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    r = httpx.post(gateway.url + "/v1/messages", json=huge)
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_auth_refuses_missing_or_wrong_keys(tmp_path):
    app = create_app(scripted_backend(), GatewaySettings(api_keys=["sk-right"]))
    with ThreadedGateway(app) as server:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="sk-wrong", base_url=server.url + "/v1", max_retries=0).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.AuthenticationError) as error:
            anthropic.Anthropic(api_key="sk-wrong", base_url=server.url, max_retries=0).messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert error.value.body["error"]["type"] == "authentication_error"
        assert httpx.get(server.url + "/metrics").status_code == 401
        assert httpx.get(server.url + "/health").status_code == 200  # for load balancers
        ok = openai.OpenAI(api_key="sk-right", base_url=server.url + "/v1").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "easy: hi"}])
        assert ok.choices[0].message.content
        ok = anthropic.Anthropic(api_key="sk-right", base_url=server.url).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "easy: hi"}])
        assert ok.content[0].text


def test_failing_fallback_keeps_the_student_answer_flagged():
    app = create_app(scripted_backend(fail=True), GatewaySettings())
    with ThreadedGateway(app) as server:
        client = openai.OpenAI(api_key="x", base_url=server.url + "/v1", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": HARD}])
        routing = raw.parse().model_extra["distillery"]
        assert raw.headers["x-distillery-tier"] == STUDENT_URI and raw.headers["x-distillery-escalated"] == "true"
        assert "503" in routing["fallback_failed"]
