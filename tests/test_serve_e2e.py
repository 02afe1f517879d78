"""`distillery serve` as a real subprocess, with the official SDKs as clients.

Tier 1 is a real local model (a tiny, untrained Llama loaded as `hf:<dir>`, so its confidences come
from real action-token logprobs and it escalates nearly everything); the teacher is remote: an
OpenAI-compatible server on a second local port (`openai:gpt-4o` with `base_url`), which answers
like an expert. The test client runs the tools, as any agent using an API does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import anthropic
import httpx
import openai
import pytest

from distillery.formats.openai import messages_from_wire
from distillery.store import SQLiteStore
from tests.serve_helpers import (
    STOCK_TOOL_ANTHROPIC,
    STOCK_TOOL_OPENAI,
    GatewayProcess,
    expert_turn,
    run_get_stock,
    wait_for,
)
from tests.tiny_models import save_tiny_model
from tests.wire.openai_server import ScriptedOpenAIServer, chat_completion, choice, function_tool_call, usage

pytestmark = pytest.mark.slow  # one subprocess loads torch and a local model: ~30 s on 2 busy cores

GATEWAY_KEY = "sk-gateway-secret-123"
UPSTREAM_KEY = "sk-upstream-secret-456"
QUERY = "How many units of SKU-1042 are in Berlin and Paris?"


def expert_reply(request):
    """The remote teacher: reads the conversation off the wire and acts like an expert."""
    messages = messages_from_wire(request.json["messages"])
    if "slow" in messages[-1].content or any("slow" in m.content for m in messages if m.role == "user"):
        time.sleep(3.0)  # past the tier's 1 s timeout: the cascade's fallback policy decides
    turn = expert_turn(messages)
    calls = [function_tool_call(c.name, c.arguments) for c in turn.tool_calls]
    return chat_completion([choice(turn.text or None, tool_calls=calls or None)], usage_=usage(300, 25))


@pytest.fixture(scope="module")
def upstream():
    with ScriptedOpenAIServer(responder=expert_reply) as server:
        yield server


def write_config(path, tiers: str) -> str:
    path.write_text("on_fallback_error = \"keep_flagged\"\n" + tiers)
    return str(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory, upstream):
    root = tmp_path_factory.mktemp("serve_e2e")
    student_dir = save_tiny_model(root / "tiny-student")
    config = write_config(root / "cascade.toml", f"""
[[tiers]]
model = "hf:{student_dir}"
threshold = 0.5
scorer = "logprob-mean"
options = {{ max_new_tokens = 16 }}

[[tiers]]
model = "openai:gpt-4o"
timeout_s = 1.0
options = {{ base_url = "{upstream.base_url}", api_key = "{UPSTREAM_KEY}" }}
""")
    store_path = root / "store.db"
    with GatewayProcess(["--cascade", config, "--store", str(store_path)],
                        env={"DISTILLERY_API_KEY": GATEWAY_KEY}) as gateway:
        gateway.student_uri = f"hf:{student_dir}"
        gateway.store_path = store_path
        yield gateway


def test_openai_tool_loop_through_real_student_and_remote_teacher(served, upstream):
    client = openai.OpenAI(api_key=GATEWAY_KEY, base_url=served.url + "/v1", max_retries=0)
    messages = [{"role": "user", "content": QUERY}]
    tiers = []
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(model="claude-opus-4-6", messages=messages,
                                                               tools=[STOCK_TOOL_OPENAI])
        tiers.append(raw.headers["x-distillery-tier"])
        message = raw.parse().choices[0].message
        if not message.tool_calls:
            break
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": run_get_stock(json.loads(call.function.arguments))})
    assert message.content == "There are 22 units."
    # The untrained student is never sure: every step escalated to the remote teacher.
    assert tiers == ["openai:gpt-4o", "openai:gpt-4o"]
    # The teacher saw the tools and, on the second step, the tool results the client sent.
    sent = upstream.requests[-1].json
    assert sent["tools"][0]["function"]["name"] == "get_stock"
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool"]
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_real_student_confidence_and_threshold_override(served):
    client = openai.OpenAI(api_key=GATEWAY_KEY, base_url=served.url + "/v1", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": QUERY}], extra_body={"distillery": {"threshold": 0.0}},
        logprobs=True, top_logprobs=2)
    assert raw.headers["x-distillery-tier"] == served.student_uri
    assert 0.0 <= float(raw.headers["x-distillery-confidence"]) < 0.5
    completion = raw.parse()
    tokens = completion.choices[0].logprobs.content
    assert tokens and all(len(t.top_logprobs) == 2 for t in tokens)


def test_anthropic_stream_through_the_subprocess(served):
    client = anthropic.Anthropic(api_key=GATEWAY_KEY, base_url=served.url, max_retries=0)
    with client.messages.with_streaming_response.create(
            model="claude-opus-4-6", max_tokens=64, stream=True, tools=[STOCK_TOOL_ANTHROPIC],
            messages=[{"role": "user", "content": QUERY}]) as response:
        assert response.headers["x-distillery-tier"] == "openai:gpt-4o"
        assert response.headers["x-distillery-escalated"] == "true"
    with client.messages.stream(model="claude-opus-4-6", max_tokens=64, tools=[STOCK_TOOL_ANTHROPIC],
                                messages=[{"role": "user", "content": QUERY}]) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert [b.input for b in message.content if b.type == "tool_use"] == [
        {"sku": "SKU-1042", "city": "Berlin"}, {"sku": "SKU-1042", "city": "Paris"}]


def test_upstream_timeout_follows_the_fallback_policy(served):
    client = openai.OpenAI(api_key=GATEWAY_KEY, base_url=served.url + "/v1", max_retries=0)
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "slow: " + QUERY}])
    # keep_flagged: the teacher missed its 1 s timeout, so the student's proposal is kept and flagged.
    assert time.perf_counter() - started < 2.9
    assert raw.headers["x-distillery-tier"] == served.student_uri and raw.headers["x-distillery-escalated"] == "true"
    assert "within 1s" in raw.parse().model_extra["distillery"]["fallback_failed"]


def test_auth_is_enforced_from_the_environment_key(served):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="sk-wrong", base_url=served.url + "/v1", max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}])


def test_captured_rows_are_in_the_store_without_any_key(served):
    store = SQLiteStore(served.store_path)
    assert wait_for(lambda: store.count(tags_all=["gateway", "escalated"]) >= 3, timeout_s=15)
    trajectory = next(store.iter_trajectories(tags_all=["gateway", "escalated"]))
    step = trajectory.steps[-1]
    assert step.routing.rejected[0].model == served.student_uri
    assert step.routing.confidences[0].confidence < 0.5 and step.cost_usd > 0
    raw = b"".join(p.read_bytes() for p in served.store_path.parent.glob("store.db*"))
    assert GATEWAY_KEY.encode() not in raw and UPSTREAM_KEY.encode() not in raw


def test_graceful_shutdown_drains_in_flight_requests_and_flushes_capture(tmp_path, upstream):
    # Teacher only, no per-tier timeout: the "slow" request takes 3 s upstream.
    config = write_config(tmp_path / "teacher.toml", f"""
[[tiers]]
model = "openai:gpt-4o"
options = {{ base_url = "{upstream.base_url}" }}
""")
    store_path = tmp_path / "store.db"
    gateway = GatewayProcess(["--cascade", config, "--store", str(store_path), "--drain-timeout", "20"]).__enter__()
    result = {}

    def slow_request():
        response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                              json={"model": "m", "messages": [{"role": "user", "content": "slow: " + QUERY}]})
        result["status"] = response.status_code
        result["body"] = response.json()

    def slow_requests_seen() -> int:
        return sum("slow" in json.dumps(r.json) for r in upstream.requests)

    before = slow_requests_seen()
    client = threading.Thread(target=slow_request)
    client.start()
    assert wait_for(lambda: slow_requests_seen() > before, timeout_s=10)
    gateway.terminate()  # SIGTERM while the request is in flight
    client.join(timeout=30)
    output = gateway.stop()
    # uvicorn re-raises the captured SIGTERM once it has shut down cleanly, hence -15.
    assert gateway.process.returncode in (0, -15), output
    assert "Traceback" not in output
    assert result["status"] == 200 and result["body"]["choices"][0]["finish_reason"] == "tool_calls"
    assert SQLiteStore(store_path).count(tags_all=["gateway"]) == 1


def test_cli_refuses_a_public_address_without_a_key(tmp_path):
    config = write_config(tmp_path / "c.toml", '[[tiers]]\nmodel = "openai:gpt-4o"\noptions = { base_url = "http://127.0.0.1:9/v1" }\n')
    env = {k: v for k, v in __import__("os").environ.items() if k != "DISTILLERY_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "distillery.cli", "serve", "--cascade", config, "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    assert "--host 0.0.0.0" in done.stderr and "DISTILLERY_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def _world_teacher_dir():
    try:
        from distillery.world.models import TEACHER_DIR
    except ImportError:
        return None
    return TEACHER_DIR if (TEACHER_DIR / "model.safetensors").is_file() else None


@pytest.mark.skipif(_world_teacher_dir() is None, reason="bundled world teacher not trained yet")
def test_world_teacher_behind_the_gateway(tmp_path):
    from distillery.world import SYSTEM_PROMPT
    from distillery.world.tasks import generate_tasks
    from distillery.world.tools import toolbox

    student_dir = save_tiny_model(tmp_path / "tiny-student")
    config = write_config(tmp_path / "world.toml", f"""
[[tiers]]
model = "hf:{student_dir}"
threshold = 0.5
options = {{ max_new_tokens = 16 }}

[[tiers]]
model = "world:teacher"
""")
    tools = [{"type": "function", "function": {"name": s.name, "description": s.description, "parameters": s.parameters}}
             for s in toolbox().specs]
    task = generate_tasks("test", 1, seed=0)[0]
    with GatewayProcess(["--cascade", config, "--no-capture"]) as gateway:
        client = openai.OpenAI(api_key="x", base_url=gateway.url + "/v1", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", tools=tools,
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.query}])
    assert raw.headers["x-distillery-tier"] == "world:teacher"
    message = raw.parse().choices[0].message
    assert message.tool_calls or message.content
