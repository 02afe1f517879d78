"""Helpers for the gateway tests: a gateway on 127.0.0.1 (in a thread, or as a real `distillery serve`
subprocess) and scripted tiers. No tests live here.

The scripted tiers are test doubles of our own `ChatModel` protocol (from the routing tests), never
of the `openai` / `anthropic` SDKs: the SDKs are the *clients* here, talking HTTP to the gateway.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from distillery.routing.cascade import Cascade
from distillery.serve.backend import CascadeBackend
from distillery.trajectory import Message, Turn, Usage
from tests.routing_fakes import ScriptedModel, tool_call_tokens, turn_from_tokens

STUDENT_URI = "world:student-xs"
TEACHER_URI = "world:teacher"

# A tiny stock table the client-side tools read; the scripted models know nothing of it.
STOCK = {("SKU-1042", "Berlin"): 17, ("SKU-1042", "Paris"): 5, ("SKU-7", "Berlin"): 40}

STOCK_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_stock",
        "description": "Units of a product in stock in one city.",
        "parameters": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "city": {"type": "string"}},
            "required": ["sku", "city"],
            "additionalProperties": False,
        },
    },
}
STOCK_TOOL_ANTHROPIC = {
    "name": "get_stock",
    "description": STOCK_TOOL_OPENAI["function"]["description"],
    "input_schema": STOCK_TOOL_OPENAI["function"]["parameters"],
}


def run_get_stock(arguments: dict[str, Any]) -> str:
    """The client's tool: what an agent would run on its side of the tool loop."""
    return json.dumps({"units": STOCK.get((arguments["sku"], arguments["city"]), 0)})


def _query(messages: list[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def _asked(query: str) -> list[tuple[str, str]]:
    """The (sku, city) pairs a query asks about, e.g. 'SKU-1042 in Berlin and Paris'."""
    sku = re.search(r"SKU-\d+", query)
    cities = re.findall(r"Berlin|Paris", query)
    return [(sku.group(0), city) for city in cities] if sku else []


def expert_turn(messages: list[Message], *, usage: Usage | None = None) -> Turn:
    """What a competent agent does next: call get_stock for each city asked, then answer from the results."""
    usage = usage or Usage(input_tokens=200, output_tokens=20)
    results = [json.loads(m.content) for m in messages if m.role == "tool" and not m.is_error]
    query = _query(messages)
    pairs = _asked(query)
    if not pairs:
        return Turn(text="Hello! Ask me about stock levels.", usage=usage)
    if not results:
        calls = [{"name": "get_stock", "arguments": {"sku": sku, "city": city}} for sku, city in pairs]
        from distillery.trajectory import ToolCall

        return Turn(text="", tool_calls=[ToolCall(**c) for c in calls], stop_reason="tool_use", usage=usage)
    total = sum(r["units"] for r in results)
    return Turn(text=f"There are {total} units.", usage=usage)


def scripted_student(*, confident: bool | None = None) -> ScriptedModel:
    """A student with real-looking action-token logprobs: sure of queries with 'easy', unsure otherwise."""

    def script(messages, call_index, n, temperature):
        query = _query(messages)
        sure = confident if confident is not None else ("easy" in query)
        lp = -0.01 if sure else -3.0
        expert = expert_turn(messages)
        if expert.tool_calls:
            call = expert.tool_calls[0]
            tokens = tool_call_tokens(call.name, json.dumps(call.arguments), lp_name=lp, lp_args=lp)
        else:
            tokens = [(expert.text, lp)]  # a real model's end-of-turn token is not part of its text
        return [turn_from_tokens(tokens, model=STUDENT_URI, usage=Usage(input_tokens=150, output_tokens=len(tokens)))] * n

    return ScriptedModel(STUDENT_URI, script)


def scripted_teacher(*, delay_s: float = 0.0, fail: bool = False) -> ScriptedModel:
    def script(messages, call_index, n, temperature):
        return [expert_turn(messages, usage=Usage(input_tokens=300, output_tokens=25)).model_copy(
            update={"model": TEACHER_URI})] * n

    return ScriptedModel(TEACHER_URI, script, delay_s=delay_s, fail=fail)


def scripted_backend(threshold: float = 0.5, **teacher_options: Any) -> CascadeBackend:
    cascade = Cascade([scripted_student(), scripted_teacher(**teacher_options)], [threshold], scorer="logprob-mean")
    return CascadeBackend(cascade)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedGateway:
    """The gateway app on 127.0.0.1 in a background uvicorn thread (lifespan on: capture runs)."""

    def __init__(self, app):
        self.app = app
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedGateway:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("gateway did not start within 10 s")
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


class GatewayProcess:
    """`distillery serve` as a real subprocess on a free loopback port."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 start_timeout_s: float = 120.0):
        self.port = free_port()
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayProcess:
        command = [sys.executable, "-m", "distillery.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--log-level", "warning", *self.args]
        self.process = subprocess.Popen(command, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"distillery serve exited with {self.process.returncode}: {self.process.stdout.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"distillery serve did not answer /health within {self.start_timeout_s:g}s")

    def terminate(self) -> None:
        """SIGTERM: uvicorn stops accepting, drains in-flight requests, then the app flushes capture."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> str:
        output = ""
        if self.process is not None:
            self.terminate()
            try:
                output, _ = self.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                output, _ = self.process.communicate()
        return output or ""

    def __exit__(self, *exc_info) -> None:
        self.stop()


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()

