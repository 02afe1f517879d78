"""AnthropicModel through the official `anthropic` SDK, against a local server speaking the Messages API."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time

import pytest

from distillery.agent import Agent
from distillery.errors import ConfigError, MissingAPIKeyError, ModelError, TransientModelError
from distillery.formats.anthropic import messages_to_wire
from distillery.models import load_model
from distillery.models._hosted import parse_retry_after
from distillery.models.anthropic import AnthropicModel
from distillery.pricing import price_for
from distillery.tools import tool
from distillery.trajectory import Message, ThinkingBlock, ToolCall, ToolSpec, Trajectory
from tests.wire.anthropic_server import (
    ScriptedAnthropicServer,
    error_body,
    message,
    redacted_thinking_block,
    text_block,
    thinking_block,
    tool_use_block,
)

PLANTED_KEY = "sk-ant-api03-PLANTED-do-not-leak-7f3a9c"
MODEL = "claude-opus-4-6"


@pytest.fixture(scope="module")
def server():
    with ScriptedAnthropicServer() as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server, monkeypatch):
    server.reset()
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(var, raising=False)
    yield
    assert server.pending == 0, "a scripted reply was never requested"


def make_model(server, **options) -> AnthropicModel:
    return load_model(f"anthropic:{MODEL}", api_key=PLANTED_KEY, base_url=server.base_url, **options)


@tool
def get_stock(sku: str, city: str) -> int:
    """Units of a product in stock at a warehouse.

    Args:
        sku: The product's stock-keeping unit.
        city: The warehouse city.
    """
    return {"SKU-1042": {"Berlin": 17, "Paris": 4}}[sku][city]


def expected_cost(usage: dict) -> float:
    price = price_for(f"anthropic:{MODEL}")
    return (
        usage["input_tokens"] * price.input
        + usage["output_tokens"] * price.output
        + usage["cache_creation_input_tokens"] * price.cache_write
        + usage["cache_read_input_tokens"] * price.cache_read
    ) / 1e6


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_text_reply_maps_request_and_response(server, transport):
    reply = message(
        [text_block("Berlin has "), text_block("17 units.")],
        input_tokens=120,
        output_tokens=9,
        cache_creation_input_tokens=30,
        cache_read_input_tokens=400,
    )
    server.enqueue(reply)
    model = make_model(server, http_transport=transport)
    [turn] = model.generate(
        [Message(role="system", content="Be brief."), Message(role="user", content="Stock of SKU-1042 in Berlin?")],
        max_tokens=256,
    )

    body = server.requests[0].json
    assert body["model"] == MODEL
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 256
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Stock of SKU-1042 in Berlin?"}]}]
    assert "thinking" not in body and "temperature" not in body
    assert server.requests[0].headers["authorization"] == f"Bearer {PLANTED_KEY}"

    assert turn.text == "Berlin has 17 units."
    assert turn.stop_reason == "end_turn"
    assert turn.logprobs is None
    assert turn.usage.model_dump() == {
        "input_tokens": 120,
        "output_tokens": 9,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 400,
        "reasoning_tokens": 0,
    }
    assert turn.cost_usd == pytest.approx(expected_cost(reply["usage"]))
    assert turn.cost_usd > 0
    assert turn.latency_s > 0
    assert turn.model == f"anthropic:{MODEL}"
    assert turn.provider_content == reply["content"]
    assert PLANTED_KEY not in turn.model_dump_json()


def test_tool_use_with_thinking_passes_signed_blocks_back_unmodified(server):
    # Signatures are opaque; any change (even whitespace) makes the real API reject the request.
    thinking = thinking_block("The user wants Berlin stock; call get_stock.", "EqQBCkgIARABGAIiQL+/x==\n  tail")
    redacted = redacted_thinking_block("ENCRYPTED/opaque+data==")
    call = tool_use_block("toolu_01A", "get_stock", {"sku": "SKU-1042", "city": "Berlin"})
    first = message([thinking, redacted, text_block("Let me check."), call], stop_reason="tool_use")

    def second(request):
        # What the real API does: the assistant turn must carry the thinking blocks byte for byte.
        assistant = request.json["messages"][1]
        if assistant["role"] != "assistant" or assistant["content"][:2] != [thinking, redacted]:
            return error_body(400, "messages.1.content.0: thinking blocks must be passed back unmodified")
        return message([text_block("17 units.")])

    server.enqueue(first, second)
    agent = Agent(make_model(server, thinking="adaptive"), [get_stock])
    trajectory = agent.run("How many SKU-1042 in Berlin?", task_id="t-think")

    assert trajectory.status == "ok", trajectory.error
    assert trajectory.final_answer == "17 units."
    assert server.requests[0].json["thinking"] == {"type": "adaptive"}
    step = trajectory.steps[0]
    assert [b.type for b in step.thinking] == ["thinking", "redacted_thinking"]
    assert step.thinking[0].signature == thinking["signature"]
    assert step.thinking[1].data == redacted["data"]
    assert step.text == "Let me check."
    assert step.tool_calls[0].id == "toolu_01A"
    # The tool result answers that exact tool_use id.
    results = server.requests[1].json["messages"][2]
    assert results == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "17"}],
    }


def test_neutral_messages_rebuild_signed_thinking_without_provider_content():
    # A conversation loaded from elsewhere (no provider_content): signed thinking is rebuilt from
    # Message.thinking, unsigned thinking (another model's) is dropped because the API rejects it.
    messages = [
        Message(role="system", content="A"),
        Message(role="system", content="B"),
        Message(role="user", content="q"),
        Message(
            role="assistant",
            content="checking",
            thinking=[
                ThinkingBlock(thinking="signed", signature="SIG=="),
                ThinkingBlock(thinking="from a local model, unsigned"),
                ThinkingBlock(type="redacted_thinking", data="OPAQUE"),
            ],
            tool_calls=[ToolCall(id="toolu_1", name="f", arguments={"x": 1}), ToolCall(id="toolu_2", name="g")],
        ),
        Message(role="tool", tool_call_id="toolu_1", name="f", content="one"),
        Message(role="tool", tool_call_id="toolu_2", name="g", content="boom", is_error=True),
        Message(role="user", content="and then?"),
    ]
    system, wire = messages_to_wire(messages)
    assert system == "A\n\nB"
    assert wire[1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "signed", "signature": "SIG=="},
            {"type": "redacted_thinking", "data": "OPAQUE"},
            {"type": "text", "text": "checking"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}},
        ],
    }
    # Both tool results and the follow-up text are ONE user turn, results first.
    assert wire[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "one"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": True},
            {"type": "text", "text": "and then?"},
        ],
    }
    assert len(wire) == 3


def test_provider_content_whose_tool_ids_do_not_match_falls_back_to_neutral_blocks():
    stale = [{"type": "tool_use", "id": "toolu_OLD", "name": "f", "input": {}}]
    msg = Message(role="assistant", tool_calls=[ToolCall(id="toolu_NEW", name="f")], provider_content=stale)
    _, wire = messages_to_wire([Message(role="user", content="q"), msg])
    assert wire[1]["content"] == [{"type": "tool_use", "id": "toolu_NEW", "name": "f", "input": {}}]


def test_parallel_tool_calls_run_and_return_as_one_user_turn(server):
    server.enqueue(
        message(
            [
                tool_use_block("toolu_B", "get_stock", {"sku": "SKU-1042", "city": "Berlin"}),
                tool_use_block("toolu_P", "get_stock", {"sku": "SKU-1042", "city": "Paris"}),
            ],
            stop_reason="tool_use",
        ),
        message([text_block("21 units in total.")]),
    )
    trajectory = Agent(make_model(server), [get_stock]).run("Total SKU-1042 in Berlin and Paris?")
    assert trajectory.status == "ok"
    assert [c.arguments["city"] for c in trajectory.steps[0].tool_calls] == ["Berlin", "Paris"]
    assert [r.content for r in trajectory.steps[0].tool_results] == ["17", "4"]
    second = server.requests[1].json["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_B", "content": "17"},
        {"type": "tool_result", "tool_use_id": "toolu_P", "content": "4"},
    ]
    assert server.requests[0].json["tools"] == [
        {"name": "get_stock", "description": get_stock.spec.description, "input_schema": get_stock.spec.parameters}
    ]


@pytest.mark.parametrize(
    ("api_reason", "ours"),
    [
        ("end_turn", "end_turn"),
        ("tool_use", "tool_use"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("refusal", "refusal"),
        ("pause_turn", "pause_turn"),
        ("model_context_window_exceeded", "max_tokens"),
    ],
)
def test_every_documented_stop_reason_maps(server, api_reason, ours):
    server.enqueue(message([text_block("partial")], stop_reason=api_reason))
    [turn] = make_model(server).generate([Message(role="user", content="q")])
    assert turn.stop_reason == ours
    assert turn.text == "partial"


def test_unknown_stop_reason_keeps_the_turn_and_warns(server, caplog):
    server.enqueue(message([text_block("kept")], stop_reason="some_future_reason"))
    with caplog.at_level(logging.WARNING, logger="distillery.models"):
        [turn] = make_model(server).generate([Message(role="user", content="q")])
    assert (turn.text, turn.stop_reason) == ("kept", "end_turn")
    assert "some_future_reason" in caplog.text


def test_refusal_and_max_tokens_end_the_agent_run(server):
    server.enqueue(message([], stop_reason="refusal"))
    refused = Agent(make_model(server)).run("something disallowed")
    assert refused.status == "refused"
    server.enqueue(message([text_block("The answer is")], stop_reason="max_tokens"))
    cut = Agent(make_model(server)).run("long question")
    assert cut.status == "max_tokens"
    assert cut.final_answer is None


def test_pause_turn_sends_the_paused_content_back_verbatim(server):
    paused_blocks = [
        text_block("Searching the catalogue."),
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "SKU-1042"}},
    ]
    server.enqueue(message(paused_blocks, stop_reason="pause_turn"), message([text_block("Found it.")]))
    trajectory = Agent(make_model(server)).run("Find SKU-1042")
    assert trajectory.status == "ok"
    assert trajectory.final_answer == "Found it."
    assert trajectory.steps[0].stop_reason == "pause_turn"
    assert trajectory.steps[0].tool_calls == []  # a server tool is not ours to run
    resumed = server.requests[1].json["messages"]
    assert resumed[-1] == {"role": "assistant", "content": paused_blocks}


def test_n_samples_are_concurrent_requests(server):
    server.enqueue(*(message([text_block(f"sample {i}")], output_tokens=3 + i) for i in range(3)))
    turns = make_model(server).generate([Message(role="user", content="q")], n=3)
    assert sorted(t.text for t in turns) == ["sample 0", "sample 1", "sample 2"]
    assert len(server.requests) == 3
    # Each sample is its own request, so each carries its own usage.
    assert sorted(t.usage.output_tokens for t in turns) == [3, 4, 5]


def test_n_samples_are_in_flight_at_the_same_time(server):
    # Each reply waits until all four requests have arrived: sequential requests would never get
    # there (the guard timeout turns that into a 500 instead of a hang).
    arrived = 0
    all_in = asyncio.Event()

    def wait_for_all(index):
        async def reply(request):
            nonlocal arrived
            arrived += 1
            if arrived == 4:
                all_in.set()
            try:
                await asyncio.wait_for(all_in.wait(), timeout=10)
            except asyncio.TimeoutError:
                return error_body(500, "requests were not concurrent")
            return message([text_block(f"sample {index}")])

        return reply

    server.enqueue(*(wait_for_all(i) for i in range(4)))
    turns = make_model(server).generate([Message(role="user", content="q")], n=4)
    assert len(turns) == 4 and arrived == 4


def test_logprobs_are_not_offered(server, caplog):
    server.enqueue(message([text_block("x")]))
    with caplog.at_level(logging.WARNING, logger="distillery.models"):
        [turn] = make_model(server).generate([Message(role="user", content="q")], logprobs=True, top_logprobs=5)
    assert turn.logprobs is None
    assert "logprobs" not in server.requests[0].json
    assert "no logprobs" in caplog.text


def test_thinking_configuration_per_model():
    adaptive = AnthropicModel("claude-opus-4-6", api_key="k", thinking="auto")
    assert adaptive.thinking_config(4096) == {"type": "adaptive"}
    older = AnthropicModel("claude-sonnet-4-5", api_key="k", thinking="auto")
    assert older.thinking_config(4096) == {"type": "enabled", "budget_tokens": 2048}
    budgeted = AnthropicModel("claude-sonnet-4-5", api_key="k", thinking_budget=3000)
    assert budgeted.thinking_config(8000) == {"type": "enabled", "budget_tokens": 3000}
    assert AnthropicModel("claude-opus-4-6", api_key="k", thinking="off").thinking_config(4096) == {"type": "disabled"}
    assert AnthropicModel("claude-opus-4-6", api_key="k").thinking_config(4096) is None
    with pytest.raises(ConfigError, match="thinking_budget=3000.*max_tokens=2000"):
        budgeted.thinking_config(2000)
    with pytest.raises(ConfigError, match="thinking='always'"):
        AnthropicModel("claude-opus-4-6", api_key="k", thinking="always")


def test_temperature_only_travels_on_an_api_version_that_accepts_it():
    msgs = [Message(role="user", content="q")]
    default = AnthropicModel(MODEL, api_key="k")
    assert "temperature" not in str(default.build_request(msgs, temperature=0.7))
    pinned = AnthropicModel(MODEL, api_key="k", extra_headers={"anthropic-version": "2023-06-01"})
    assert pinned.build_request(msgs, temperature=0.7)["extra_body"] == {"temperature": 0.7}
    pinned_thinking = AnthropicModel(
        MODEL, api_key="k", thinking="adaptive", extra_headers={"anthropic-version": "2023-06-01"}
    )
    assert "extra_body" not in pinned_thinking.build_request(msgs, temperature=0.7)


def test_pinned_api_version_reaches_the_wire_with_temperature(server):
    server.enqueue(message([text_block("ok")]))
    pinned = make_model(server, extra_headers={"anthropic-version": "2023-06-01"})
    pinned.generate([Message(role="user", content="q")], temperature=0.7)
    assert server.requests[0].headers["anthropic-version"] == "2023-06-01"
    assert server.requests[0].json["temperature"] == 0.7


def test_options_map_to_request_fields(server):
    server.enqueue(message([text_block("ok")]))
    make_model(server).generate(
        [Message(role="user", content="q")],
        [ToolSpec(name="f")],
        stop="END",
        tool_choice="required",
        metadata={"user_id": "u1"},
    )
    body = server.requests[0].json
    assert body["stop_sequences"] == ["END"]
    assert body["tool_choice"] == {"type": "any"}
    assert body["metadata"] == {"user_id": "u1"}


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"retry-after": "7"}, 7.0),
        (529, {"retry-after": "2"}, 2.0),
        (500, {"retry-after-ms": "1500"}, 1.5),
        (503, {}, None),
    ],
)
def test_retryable_errors_are_transient_with_the_servers_hint(server, status, headers, retry_after):
    server.enqueue(error_body(status, "try later", headers))
    with pytest.raises(TransientModelError) as caught:
        make_model(server).generate([Message(role="user", content="q")])
    assert caught.value.status == status
    assert caught.value.retry_after == retry_after
    assert f"HTTP {status}" in str(caught.value) and "\n" not in str(caught.value)
    assert len(server.requests) == 1  # the SDK did not retry on its own


def test_retry_after_as_an_http_date(server):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.enqueue(error_body(529, "Overloaded", {"retry-after": when}))
    with pytest.raises(TransientModelError) as caught:
        make_model(server).generate([Message(role="user", content="q")])
    assert caught.value.status == 529
    assert 25 <= caught.value.retry_after <= 31


def test_parse_retry_after_forms():
    now = 1_800_000_000.0
    assert parse_retry_after({"Retry-After": "12"}, now=now) == 12.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}, now=now) == 0.25  # ms is finer
    assert parse_retry_after({"retry-after": email.utils.formatdate(now + 90, usegmt=True)}, now=now) == 90.0
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 90, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}, now=now) is None
    assert parse_retry_after({}, now=now) is None


def test_bad_request_is_a_plain_model_error_without_the_key(server):
    server.enqueue(error_body(400, "max_tokens: must be positive"))
    with pytest.raises(ModelError) as caught:
        make_model(server).generate([Message(role="user", content="q")])
    assert not isinstance(caught.value, TransientModelError)
    assert "max_tokens: must be positive" in str(caught.value)
    # A server that echoes the key back in its error must not get it into our message.
    server.enqueue(error_body(401, f"invalid x-api-key {PLANTED_KEY}"))
    with pytest.raises(ModelError) as caught:
        make_model(server).generate([Message(role="user", content="q")])
    assert PLANTED_KEY not in str(caught.value)
    assert "HTTP 401" in str(caught.value)


def test_server_may_veto_a_retry(server):
    server.enqueue(error_body(500, "deterministic failure", {"x-should-retry": "false"}))
    with pytest.raises(ModelError) as caught:
        make_model(server).generate([Message(role="user", content="q")])
    assert not isinstance(caught.value, TransientModelError)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_connection_refused_is_transient(transport):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    model = AnthropicModel(MODEL, api_key=PLANTED_KEY, base_url=f"http://127.0.0.1:{dead_port}", timeout_s=5,
                           http_transport=transport)
    with pytest.raises(TransientModelError, match="connection failed") as caught:
        model.generate([Message(role="user", content="q")])
    assert caught.value.status is None


def test_missing_key_names_the_environment_variable(monkeypatch):
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY") as caught:
        load_model(f"anthropic:{MODEL}")
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLANTED_KEY)
    model = load_model(f"anthropic:{MODEL}")
    assert model.uri == f"anthropic:{MODEL}"
    assert PLANTED_KEY not in repr(model)


def test_base_url_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    server.enqueue(message([text_block("via env")]))
    [turn] = load_model(f"anthropic:{MODEL}", api_key=PLANTED_KEY).generate([Message(role="user", content="q")])
    assert turn.text == "via env"


def test_generate_repeatedly_and_agenerate_concurrently_on_one_loop(server):
    model = make_model(server)
    for i in range(3):  # each generate() runs on a fresh event loop
        server.enqueue(message([text_block(f"call {i}")]))
        assert model.generate([Message(role="user", content="q")])[0].text == f"call {i}"

    async def many():
        calls = [model.agenerate([Message(role="user", content=f"q{i}")]) for i in range(4)]
        return await asyncio.gather(*calls)

    server.enqueue(*(message([text_block("concurrent")]) for _ in range(4)))
    results = asyncio.run(many())
    assert [turns[0].text for turns in results] == ["concurrent"] * 4


def test_each_event_loop_gets_its_own_client_closed_at_loop_shutdown(server):
    model = make_model(server)

    async def call_and_get_client():
        await model.agenerate([Message(role="user", content="q")])
        return await model.client()

    server.enqueue(message([text_block("one")]), message([text_block("two")]))
    first = asyncio.run(call_and_get_client())
    second = asyncio.run(call_and_get_client())
    assert first is not second  # never reused across loops
    assert first.is_closed() and second.is_closed()  # closed before their loops were


def test_agent_end_to_end_trajectory_usage_cost_and_no_key(server):
    first = message(
        [text_block("Checking stock."), tool_use_block("toolu_9", "get_stock", {"sku": "SKU-1042", "city": "Berlin"})],
        stop_reason="tool_use",
        input_tokens=500,
        output_tokens=40,
        cache_creation_input_tokens=1000,
    )
    final = message(
        [text_block("There are 17 units of SKU-1042 in Berlin.")],
        input_tokens=560,
        output_tokens=15,
        cache_read_input_tokens=1000,
    )
    server.enqueue(first, final)
    agent = Agent(make_model(server), [get_stock], system="You manage a warehouse.")
    trajectory = agent.run("How many units of SKU-1042 are in Berlin?", task_id="stock-1")

    assert trajectory.status == "ok"
    assert trajectory.model == f"anthropic:{MODEL}"
    assert len(trajectory.steps) == 2
    assert trajectory.steps[0].tool_calls[0].arguments == {"sku": "SKU-1042", "city": "Berlin"}
    [result] = trajectory.steps[0].tool_results
    assert (result.tool_call_id, result.content, result.is_error) == ("toolu_9", "17", False)
    assert trajectory.final_answer == "There are 17 units of SKU-1042 in Berlin."
    assert trajectory.usage.input_tokens == 1060
    assert trajectory.usage.output_tokens == 55
    assert trajectory.usage.cache_creation_input_tokens == 1000
    assert trajectory.usage.cache_read_input_tokens == 1000
    assert trajectory.cost_usd == pytest.approx(expected_cost(first["usage"]) + expected_cost(final["usage"]))
    # By hand from prices.toml: (1060*5 + 55*25 + 1000*6.25 + 1000*0.5) / 1e6.
    assert trajectory.cost_usd == pytest.approx(0.013425)
    assert server.requests[1].json["system"] == "You manage a warehouse."

    dumped = trajectory.model_dump_json()
    assert PLANTED_KEY not in dumped
    assert Trajectory.model_validate_json(dumped) == trajectory
