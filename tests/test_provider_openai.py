"""OpenAIModel through the official `openai` SDK, against a local server speaking Chat Completions."""

from __future__ import annotations

import asyncio
import json
import logging
import math

import pytest

from distillery.agent import Agent
from distillery.errors import MissingAPIKeyError, ModelError, TransientModelError
from distillery.formats.openai import messages_to_wire
from distillery.models import load_model
from distillery.models.openai import OpenAIModel
from distillery.pricing import price_for
from distillery.tools import tool
from distillery.trajectory import Message, ToolCall, Trajectory
from tests.wire.openai_server import (
    ScriptedOpenAIServer,
    chat_completion,
    choice,
    error_body,
    function_tool_call,
    token_logprobs,
    usage,
)

PLANTED_KEY = "sk-proj-PLANTED-do-not-leak-4b1e2d"
MODEL = "gpt-4o"


@pytest.fixture(scope="module")
def server():
    with ScriptedOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server, monkeypatch):
    server.reset()
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)
    yield
    assert server.pending == 0, "a scripted reply was never requested"


def make_model(server, name: str = MODEL, **options) -> OpenAIModel:
    return load_model(f"openai:{name}", api_key=PLANTED_KEY, base_url=server.base_url, **options)


@tool
def convert(amount: float, currency: str) -> float:
    """Convert euros to another currency.

    Args:
        amount: Euros.
        currency: ISO code of the target currency.
    """
    return round(amount * {"USD": 1.1, "GBP": 0.85}[currency], 2)


def expected_cost(prompt: int, completion: int, cached: int) -> float:
    price = price_for(f"openai:{MODEL}")
    return ((prompt - cached) * price.input + completion * price.output + cached * price.cache_read) / 1e6


def test_text_reply_maps_request_and_response(server):
    server.enqueue(chat_completion([choice("Paris.")], usage_=usage(50, 3)))
    model = make_model(server)
    [turn] = model.generate(
        [Message(role="system", content="Be brief."), Message(role="user", content="Capital of France?")],
        max_tokens=64,
        temperature=0.3,
    )
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {PLANTED_KEY}"
    assert request.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert request.json["model"] == MODEL
    assert request.json["temperature"] == 0.3
    # A custom base_url gets `max_tokens`, which compatible servers read.
    assert request.json["max_tokens"] == 64 and "max_completion_tokens" not in request.json
    assert "n" not in request.json and "logprobs" not in request.json

    assert turn.text == "Paris."
    assert turn.stop_reason == "end_turn"
    assert turn.logprobs is None
    assert (turn.usage.input_tokens, turn.usage.output_tokens) == (50, 3)
    assert turn.cost_usd == pytest.approx(expected_cost(50, 3, 0))
    assert turn.model == f"openai:{MODEL}"
    assert PLANTED_KEY not in turn.model_dump_json()


def test_official_endpoint_uses_max_completion_tokens_and_skips_reasoning_temperature():
    msgs = [Message(role="user", content="q")]
    official = OpenAIModel(MODEL, api_key="k")
    request = official.build_request(msgs, max_tokens=100, temperature=0.2)
    assert request["max_completion_tokens"] == 100 and "max_tokens" not in request
    assert request["temperature"] == 0.2
    reasoning = OpenAIModel("o3-mini", api_key="k")
    assert "temperature" not in reasoning.build_request(msgs, temperature=0.0)
    forced = OpenAIModel(MODEL, api_key="k", base_url="http://127.0.0.1:1/v1", max_tokens_param="max_completion_tokens")
    assert "max_completion_tokens" in forced.build_request(msgs, max_tokens=5)


def test_cached_prompt_tokens_are_billed_at_the_cache_price(server):
    server.enqueue(chat_completion([choice("ok")], usage_=usage(2000, 100, cached_tokens=1536, reasoning_tokens=12)))
    [turn] = make_model(server).generate([Message(role="user", content="q")])
    assert turn.usage.input_tokens == 2000 - 1536
    assert turn.usage.cache_read_input_tokens == 1536
    assert turn.usage.output_tokens == 100
    assert turn.usage.reasoning_tokens == 12
    assert turn.cost_usd == pytest.approx(expected_cost(2000, 100, 1536))
    # By hand from prices.toml: (464*2.50 + 100*10 + 1536*1.25) / 1e6.
    assert turn.cost_usd == pytest.approx(0.00408)


def test_parallel_tool_calls_and_arguments_sent_back_as_json_strings(server):
    calls = [
        function_tool_call("convert", {"amount": 10, "currency": "USD"}, id="call_usd"),
        function_tool_call("convert", {"amount": 10, "currency": "GBP"}, id="call_gbp"),
    ]
    server.enqueue(chat_completion([choice(None, tool_calls=calls)]), chat_completion([choice("11 USD or 8.5 GBP.")]))
    trajectory = Agent(make_model(server), [convert]).run("10 EUR in USD and GBP?")

    assert trajectory.status == "ok"
    step = trajectory.steps[0]
    assert step.stop_reason == "tool_use"
    assert [c.id for c in step.tool_calls] == ["call_usd", "call_gbp"]
    assert [r.content for r in step.tool_results] == ["11.0", "8.5"]
    tools = server.requests[0].json["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "convert",
                "description": convert.spec.description,
                "parameters": convert.spec.parameters,
            },
        }
    ]
    history = server.requests[1].json["messages"]
    assistant = history[1]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    assert [tc["function"]["name"] for tc in assistant["tool_calls"]] == ["convert", "convert"]
    for sent in assistant["tool_calls"]:
        assert isinstance(sent["function"]["arguments"], str)
        assert sent["type"] == "function"
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"amount": 10, "currency": "GBP"}
    assert history[2:] == [
        {"role": "tool", "tool_call_id": "call_usd", "content": "11.0"},
        {"role": "tool", "tool_call_id": "call_gbp", "content": "8.5"},
    ]


def test_logprobs_with_top_alternatives(server):
    lp = token_logprobs(
        [
            ("Par", math.log(0.9), [("Par", math.log(0.9)), ("Lyon", math.log(0.06))]),
            ("is", math.log(0.99), [("is", math.log(0.99)), ("ís", math.log(0.005))]),
        ]
    )
    server.enqueue(chat_completion([choice("Paris", logprobs=lp)]))
    [turn] = make_model(server).generate([Message(role="user", content="q")], logprobs=True, top_logprobs=2)
    assert server.requests[0].json["logprobs"] is True
    assert server.requests[0].json["top_logprobs"] == 2
    assert [t.token for t in turn.logprobs] == ["Par", "is"]
    assert turn.logprobs[0].logprob == pytest.approx(math.log(0.9))
    assert [(a.token, round(math.exp(a.logprob), 3)) for a in turn.logprobs[0].top] == [("Par", 0.9), ("Lyon", 0.06)]
    assert turn.logprobs[1].top[1].token == "ís"


def test_n_choices_give_one_turn_each_and_usage_once(server):
    server.enqueue(chat_completion([choice("A"), choice("B"), choice("C")], usage_=usage(40, 9)))
    turns = make_model(server).generate([Message(role="user", content="q")], n=3, temperature=1.0)
    assert server.requests[0].json["n"] == 3
    assert [t.text for t in turns] == ["A", "B", "C"]
    assert turns[0].usage.input_tokens == 40 and turns[0].usage.output_tokens == 9
    assert all(t.usage.input_tokens == 0 and t.cost_usd == 0 for t in turns[1:])
    assert sum(t.cost_usd for t in turns) == pytest.approx(expected_cost(40, 9, 0))


def test_invalid_json_arguments_are_kept_not_raised(server):
    broken = '{"amount": 10, "currency": "USD"'
    server.enqueue(
        chat_completion([choice(None, tool_calls=[function_tool_call("convert", broken, id="call_bad")])]),
        chat_completion([choice("Sorry, retrying is needed.")]),
    )
    trajectory = Agent(make_model(server), [convert]).run("10 EUR in USD?")
    [call] = trajectory.steps[0].tool_calls
    assert call.arguments == {}
    assert call.raw_arguments == broken
    assert "invalid JSON" in call.parse_error
    [result] = trajectory.steps[0].tool_results
    assert result.is_error and "not valid JSON" in result.content
    # The model sees exactly what it wrote, not a repaired version.
    sent = server.requests[1].json["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert sent == broken


def test_arguments_that_are_json_but_not_an_object():
    call = messages_to_wire(
        [Message(role="assistant", tool_calls=[ToolCall(id="c", name="f", raw_arguments="[1]", parse_error="x")])]
    )
    assert call[0]["tool_calls"][0]["function"]["arguments"] == "[1]"
    from distillery.formats.openai import parse_arguments

    assert parse_arguments("[1, 2]") == ({}, "arguments must be a JSON object, got list")
    assert parse_arguments("") == ({}, None)


@pytest.mark.parametrize(
    ("finish_reason", "ours"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal"), ("tool_calls", "tool_use")],
)
def test_finish_reasons_map(server, finish_reason, ours):
    server.enqueue(chat_completion([choice("text", finish_reason=finish_reason)]))
    [turn] = make_model(server).generate([Message(role="user", content="q")])
    assert turn.stop_reason == ours


def test_refusal_field_sets_refusal_and_its_text(server):
    server.enqueue(chat_completion([choice(None, refusal="I can't help with that.")]))
    trajectory = Agent(make_model(server)).run("something disallowed")
    assert trajectory.status == "refused"
    assert trajectory.steps[0].stop_reason == "refusal"
    assert trajectory.steps[0].text == "I can't help with that."


def test_max_tokens_ends_the_run(server):
    server.enqueue(chat_completion([choice("The answer", finish_reason="length")]))
    assert Agent(make_model(server)).run("q").status == "max_tokens"


def test_reasoning_content_from_compatible_servers_becomes_thinking(server):
    server.enqueue(chat_completion([choice("42", reasoning_content="6 times 7")], model="Qwen/Qwen3-8B"))
    [turn] = make_model(server, "Qwen/Qwen3-8B").generate([Message(role="user", content="q")])
    assert [(b.type, b.thinking, b.signature) for b in turn.thinking] == [("thinking", "6 times 7", None)]
    assert turn.cost_usd == 0.0  # a self-hosted model has no list price


def test_unknown_finish_reason_keeps_the_turn(server, caplog):
    server.enqueue(chat_completion([choice("kept", finish_reason="eos_token")]))
    with caplog.at_level(logging.WARNING, logger="distillery.models"):
        [turn] = make_model(server).generate([Message(role="user", content="q")])
    assert (turn.text, turn.stop_reason) == ("kept", "end_turn")
    assert "eos_token" in caplog.text


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"retry-after": "3"}, 3.0),
        (500, {"retry-after-ms": "250"}, 0.25),
        (503, {}, None),
    ],
)
def test_retryable_errors_are_transient(server, status, headers, retry_after):
    server.enqueue(error_body(status, "busy", headers))
    with pytest.raises(TransientModelError) as caught:
        make_model(server).generate([Message(role="user", content="q")])
    assert (caught.value.status, caught.value.retry_after) == (status, retry_after)
    assert len(server.requests) == 1  # no silent SDK retries


def test_client_errors_are_model_errors_without_the_key(server):
    server.enqueue(error_body(400, "Invalid schema for function 'convert'", code="invalid_function_parameters"))
    with pytest.raises(ModelError) as caught:
        make_model(server).generate([Message(role="user", content="q")])
    assert not isinstance(caught.value, TransientModelError)
    assert "Invalid schema for function 'convert'" in str(caught.value)
    server.enqueue(error_body(401, f"Incorrect API key provided: {PLANTED_KEY}"))
    with pytest.raises(ModelError) as caught:
        make_model(server).generate([Message(role="user", content="q")])
    assert PLANTED_KEY not in str(caught.value) and "HTTP 401" in str(caught.value)


def test_missing_key_for_the_official_endpoint_names_the_variable():
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        load_model("openai:gpt-4o-mini")


def test_custom_base_url_without_a_key_uses_a_placeholder(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    server.enqueue(chat_completion([choice("local")]))
    [turn] = load_model("openai:llama3.1").generate([Message(role="user", content="q")])
    assert turn.text == "local"
    assert server.requests[0].headers["authorization"] == "Bearer EMPTY"


def test_extra_body_and_headers_reach_the_server(server):
    model = make_model(server, extra_body={"top_k": 20}, extra_headers={"x-team": "distill"})
    server.enqueue(chat_completion([choice("ok")]))
    model.generate([Message(role="user", content="q")], chat_template_kwargs={"enable_thinking": False}, seed=7)
    request = server.requests[0]
    assert request.json["top_k"] == 20
    assert request.json["chat_template_kwargs"] == {"enable_thinking": False}
    assert request.json["seed"] == 7
    assert request.headers["x-team"] == "distill"


def test_generate_repeatedly_and_agenerate_concurrently(server):
    model = make_model(server)
    for i in range(3):
        server.enqueue(chat_completion([choice(f"call {i}")]))
        assert model.generate([Message(role="user", content="q")])[0].text == f"call {i}"

    async def many():
        return await asyncio.gather(*(model.agenerate([Message(role="user", content="q")]) for _ in range(4)))

    server.enqueue(*(chat_completion([choice("concurrent")]) for _ in range(4)))
    assert [turns[0].text for turns in asyncio.run(many())] == ["concurrent"] * 4


def test_generate_works_inside_a_running_loop(server):
    # As in a notebook cell, where an event loop is already running.
    model = make_model(server)
    server.enqueue(chat_completion([choice("from a notebook")]))

    async def cell():
        return model.generate([Message(role="user", content="q")])

    assert asyncio.run(cell())[0].text == "from a notebook"


def test_agent_end_to_end_trajectory_usage_cost_and_no_key(server):
    server.enqueue(
        chat_completion(
            [choice(None, tool_calls=[function_tool_call("convert", {"amount": 20, "currency": "USD"}, id="call_1")])],
            usage_=usage(300, 25),
        ),
        chat_completion([choice("20 EUR is 22.0 USD.")], usage_=usage(340, 10, cached_tokens=256)),
    )
    agent = Agent(make_model(server), [convert], system="You are a currency desk.")
    trajectory = agent.run("How much is 20 EUR in USD?", task_id="fx-1")

    assert trajectory.status == "ok"
    assert trajectory.model == f"openai:{MODEL}"
    assert len(trajectory.steps) == 2
    [result] = trajectory.steps[0].tool_results
    assert (result.tool_call_id, result.content, result.is_error) == ("call_1", "22.0", False)
    assert trajectory.final_answer == "20 EUR is 22.0 USD."
    assert trajectory.usage.input_tokens == 300 + (340 - 256)
    assert trajectory.usage.cache_read_input_tokens == 256
    assert trajectory.usage.output_tokens == 35
    assert trajectory.cost_usd == pytest.approx(expected_cost(300, 25, 0) + expected_cost(340, 10, 256))
    # By hand from prices.toml: (384*2.50 + 35*10 + 256*1.25) / 1e6.
    assert trajectory.cost_usd == pytest.approx(0.00163)
    assert server.requests[1].json["messages"][0] == {"role": "system", "content": "You are a currency desk."}

    dumped = trajectory.model_dump_json()
    assert PLANTED_KEY not in dumped
    assert Trajectory.model_validate_json(dumped) == trajectory


def test_the_body_on_the_wire_is_what_the_typed_sdk_call_sends(server):
    # agenerate posts `build_request`'s JSON through the SDK's low-level `post` (skipping the
    # typed call's per-request TypedDict walk); the server must not be able to tell the difference.
    import openai

    model = make_model(server, extra_body={"top_k": 20})
    messages = [
        Message(role="system", content="Convert."),
        Message(role="user", content="10 EUR in USD and GBP?"),
        Message(role="assistant", content="", tool_calls=[
            ToolCall(id="call_1", name="convert", arguments={"amount": 10, "currency": "USD"}),
            ToolCall(id="call_2", name="convert", raw_arguments='{"amount": 10,', parse_error="invalid JSON"),
        ]),
        Message(role="tool", tool_call_id="call_1", content="11.0"),
        Message(role="tool", tool_call_id="call_2", content="error: invalid JSON"),
    ]
    options = dict(n=2, temperature=0.7, max_tokens=64, logprobs=True, top_logprobs=3, seed=7,
                   tool_choice="auto", chat_template_kwargs={"enable_thinking": False})
    server.enqueue(chat_completion([choice("ours", index=0), choice("ours too", index=1)]))
    model.generate(messages, [convert.spec], **options)
    server.enqueue(chat_completion([choice("typed", index=0)]))

    async def typed_call():
        async with openai.AsyncOpenAI(api_key=PLANTED_KEY, base_url=server.base_url, max_retries=0) as typed:
            await typed.chat.completions.create(**model.build_request(messages, [convert.spec], **options))

    asyncio.run(typed_call())
    ours, theirs = server.requests
    assert ours.path == theirs.path == "/v1/chat/completions"
    assert ours.json == theirs.json
    assert ours.json["top_k"] == 20 and ours.json["chat_template_kwargs"] == {"enable_thinking": False}
    for header in ("authorization", "content-type", "user-agent"):
        assert ours.headers[header] == theirs.headers[header]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_either_http_transport_gives_the_same_turns_and_errors(server, transport):
    model = make_model(server, http_transport=transport)
    assert model.http_transport == transport
    server.enqueue(chat_completion([choice("via " + transport)], usage_=usage(20, 2)))
    [turn] = model.generate([Message(role="user", content="q")])
    assert (turn.text, turn.usage.input_tokens, turn.usage.output_tokens) == ("via " + transport, 20, 2)
    server.enqueue(error_body(429, "slow down", {"retry-after": "2"}))
    with pytest.raises(TransientModelError) as caught:
        model.generate([Message(role="user", content="q")])
    assert (caught.value.status, caught.value.retry_after) == (429, 2.0)

    async def slow(request):
        await asyncio.sleep(2.0)
        return chat_completion([choice("too late")])

    server.enqueue(slow)
    impatient = make_model(server, http_transport=transport, timeout_s=0.3)
    with pytest.raises(TransientModelError, match="timed out"):
        impatient.generate([Message(role="user", content="q")])
    assert server.pending == 0


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_connection_refused_is_transient_on_either_transport(transport):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    model = OpenAIModel(MODEL, api_key=PLANTED_KEY, base_url=f"http://127.0.0.1:{dead_port}/v1",
                        timeout_s=5, http_transport=transport)
    with pytest.raises(TransientModelError, match="connection failed") as caught:
        model.generate([Message(role="user", content="q")])
    assert caught.value.status is None and PLANTED_KEY not in str(caught.value)


def test_unknown_http_transport_is_a_config_error(server):
    from distillery.errors import ConfigError

    with pytest.raises(ConfigError, match="http_transport='requests' is not one of auto, aiohttp, httpx"):
        make_model(server, http_transport="requests")
    assert make_model(server).http_transport == "aiohttp"  # installed with the project: "auto" takes it
