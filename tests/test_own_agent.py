"""docs/own-agent.md, executed: a user's own agent from GPT-4o to the gateway, every command as written.

The walkthrough's ```bash blocks run in order in a fresh folder, as one shell session would (the
working directory and exported variables carry from block to block), with the example files of
examples/own_agent/ beside them. GPT-4o is `tests.wire.tool_teacher` on 127.0.0.1: it calls tools
with no text before them (content null), several at once when a query needs them, and answers from
the tool results. The only edits to the text are addresses: the public API's URL becomes the
stand-in's, and the gateway's port 8000 a free one. `distillery serve` runs in the background until
the end.

Along the way it checks the issue's acceptance ("Bring your own agent", done when):
- the collected data holds text-free tool-call turns, including a parallel call;
- right after `distillery train`, the student, loaded with `load_model("hf:<dir>")`, repeats a
  training tool call exactly, greedily (tool name and arguments equal GPT-4o's);
- the agent, on the official openai SDK pointed at the gateway, runs a tool loop: tool call, tool
  result, final answer.

The files the doc shows (`<!-- file: NAME -->` before a block) must equal the ones in
examples/own_agent/, so the page and the example cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.wire.openai_server import ScriptedOpenAIServer
from tests.wire.tool_teacher import needed_calls, reply, tool_teacher

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-agent.md"
EXAMPLE = ROOT / "examples" / "own_agent"
PUBLIC_API = "https://api.openai.com/v1"
DOC_PORT = 8000
BLOCK_TIMEOUT_S = 300

_FENCE = re.compile(r"(?:<!-- file: (?P<file>[\w.]+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)


def doc_blocks() -> list[tuple[str, str, str | None]]:
    """(language, body, file name or None) for every fenced block of the doc, in order."""
    return [(m["lang"], m["body"], m["file"]) for m in _FENCE.finditer(DOC.read_text())]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the teacher stand-in behaves like GPT-4o (fast) -------------------------------------------


def _tools(*names: str) -> set[str]:
    return set(names)


def test_teacher_stand_in_calls_tools_without_text_and_in_parallel():
    query = "What's the weather in Paris and Tokyo?"
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": query}]
    first = reply(messages, _tools("get_weather", "convert_currency"))
    assert first["content"] is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in first["tool_calls"]] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
    assert reply(messages, _tools("get_weather")) == first  # deterministic, ids included
    messages.append({"role": "assistant", "content": None, "tool_calls": first["tool_calls"]})
    for call, result in zip(first["tool_calls"], ('{"city": "Paris", "celsius": 18, "conditions": "sunny"}',
                                                  '{"city": "Tokyo", "celsius": 24, "conditions": "cloudy"}')):
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    final = reply(messages, _tools("get_weather"))
    assert final == {"content": "In Paris it is 18 degrees and sunny; in Tokyo it is 24 degrees and cloudy."}
    assert needed_calls("Convert 1500 JPY to USD.") == [
        ("convert_currency", {"amount": 1500, "source": "JPY", "target": "USD"})]
    assert "tool_calls" not in reply([{"role": "user", "content": "Hi!"}], _tools("get_weather"))
    # A tool the request does not offer is never called.
    assert "tool_calls" not in reply([{"role": "user", "content": query}], _tools("convert_currency"))


def test_doc_shows_the_example_files_as_they_are():
    shown = [(name, body) for _, body, name in doc_blocks() if name]
    assert {name for name, _ in shown} >= {"my_tools.py", "cascade.toml", "val_tasks.jsonl", "make_student.py"}
    for name, body in shown:
        assert body == (EXAMPLE / name).read_text(), f"docs/own-agent.md shows {name} differently from examples/own_agent/{name}"
    assert all(lang in ("bash", "sh", "python", "json", "toml", "") for lang, _, _ in doc_blocks())


# --- the walkthrough, end to end ---------------------------------------------------------------


class Shell:
    """Runs doc blocks as one bash session would: cwd and exported variables carry over."""

    def __init__(self, cwd: Path, env: dict[str, str], state: Path):
        self.cwd, self.env, self.state = cwd, env, state
        self.log: list[str] = []

    def run(self, script: str, timeout: float = BLOCK_TIMEOUT_S) -> str:
        cwd_file, env_file = self.state / "cwd", self.state / "env"
        wrapped = f"set -eo pipefail\n{script}\npwd > {cwd_file}\nenv -0 > {env_file}\n"
        started = time.perf_counter()
        done = subprocess.run(["bash", "-c", wrapped], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        output = done.stdout + done.stderr
        (self.state / f"block{len(self.log)}.out").write_text(f"$ {script}\n{output}")  # kept for a look (--basetemp)
        self.log.append(f"$ {script.strip()}\n[{time.perf_counter() - started:.1f}s, exit {done.returncode}]")
        assert done.returncode == 0, f"docs/own-agent.md block failed (exit {done.returncode}):\n{script}\n--- output ---\n{output[-6000:]}"
        self.cwd = Path(cwd_file.read_text().strip())
        self.env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        return output

    def background(self, command: str, log: Path) -> subprocess.Popen:
        self.log.append(f"$ {command.strip()} &")
        return subprocess.Popen(["bash", "-c", f"exec {command.strip()}"], cwd=self.cwd, env=self.env,
                                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "DISTILLERY_", "HF_", "PYTHON"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's distillery, python
    env.update(HOME=str(tmp / "home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200",
               TOKENIZERS_PARALLELISM="false")
    return env


def _wait_healthy(port: int, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"distillery serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"distillery serve not healthy after {timeout:.0f}s:\n{log.read_text()[-4000:]}")


def _option(command: str, name: str) -> str:
    match = re.search(rf"{name}\s+(\S+)", command)
    assert match, f"no {name} in {command!r}"
    return match.group(1)


def check_parallel_text_free_calls(data: Path) -> None:
    """The built data holds GPT-4o-style turns: tool calls with no text, one of them parallel."""
    turns = [m for line in data.read_text().splitlines() for m in json.loads(line)["messages"]
             if m["role"] == "assistant" and m.get("tool_calls")]
    assert turns and all(not (m.get("content") or "").strip() for m in turns), "tool-call turns should carry no text"
    assert any(len(m["tool_calls"]) > 1 for m in turns), "no parallel tool call in the training data"


def check_student_reproduces_a_training_call(student_dir: Path, data: Path) -> str:
    """Greedy decoding on the training prompts: the student repeats GPT-4o's first tool call exactly.

    Every conversation's first assistant turn that calls tools is replayed from its own prompt. At least
    one must come out with the same tool names and arguments, in order; the share is reported.
    """
    from distillery.models import load_model
    from distillery.trajectory import Message, ToolSpec

    student = load_model(f"hf:{student_dir}")
    outcomes = []
    for line in data.read_text().splitlines():
        row = json.loads(line)
        messages = row["messages"]
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if not messages[first].get("tool_calls"):
            continue
        tools = json.loads(row["tools"]) if isinstance(row["tools"], str) else row["tools"]
        specs = [ToolSpec(**t.get("function", t)) for t in tools]
        prompt = [Message(role=m["role"], content=m["content"] or "") for m in messages[:first]]
        want = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in messages[first]["tool_calls"]]
        [turn] = student.generate(prompt, specs, temperature=0.0)
        got = [(c.name, c.arguments) for c in turn.tool_calls]
        outcomes.append((got == want, prompt[-1].content, want, got, turn.text))
    exact = sum(ok for ok, *_ in outcomes)
    report = f"student repeats {exact}/{len(outcomes)} training tool calls exactly (greedy)"
    details = "\n".join(f"  {'ok ' if ok else 'BAD'} {query!r}: teacher {want}, student {got} text {text[:60]!r}"
                        for ok, query, want, got, text in outcomes)
    assert exact >= 1, f"{report}:\n{details}"
    return report


@pytest.mark.slow
def test_own_agent_walkthrough_runs_as_written(tmp_path):
    started = time.perf_counter()
    port = free_port()
    state = tmp_path / ".state"
    state.mkdir()
    (tmp_path / "home").mkdir()
    blocks = [(lang, body) for lang, body, _ in doc_blocks() if lang == "bash"]
    assert any("distillery serve" in body for _, body in blocks)

    with ScriptedOpenAIServer(responder=tool_teacher, models=("gpt-4o",)) as teacher:
        substitutions = {PUBLIC_API: teacher.base_url, f"127.0.0.1:{DOC_PORT}": f"127.0.0.1:{port}",
                         f"--port {DOC_PORT}": f"--port {port}"}

        def localise(text: str) -> str:
            for old, new in substitutions.items():
                text = text.replace(old, new)
            return text

        shutil.copytree(EXAMPLE, tmp_path / "examples" / "own_agent",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in (tmp_path / "examples" / "own_agent").iterdir():
            path.write_text(localise(path.read_text()))

        shell = Shell(tmp_path, _clean_env(tmp_path), state)
        server: subprocess.Popen | None = None
        server_log = tmp_path / "serve.log"
        ran: list[tuple[str, str]] = []  # (block, output)
        reproduced = ""
        try:
            for _, body in blocks:
                script = localise(body)
                if script.strip().startswith("distillery serve"):
                    assert "\n" not in script.strip(), "the serve block should hold only `distillery serve ...`"
                    server = shell.background(script, server_log)
                    _wait_healthy(port, server, server_log)
                    continue
                ran.append((script, shell.run(script)))
                if "distillery build" in script:
                    check_parallel_text_free_calls(shell.cwd / _option(script, "--out") / "train.jsonl")
                if "distillery train" in script:
                    reproduced = check_student_reproduces_a_training_call(
                        shell.cwd / _option(script, "--out"), shell.cwd / _option(script, "--data"))
        finally:
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()

    # The agent through the gateway, on the official openai SDK: tool call -> tool result -> final answer.
    agent_runs = [output for script, output in ran if f"127.0.0.1:{port}" in script and "agent.py" in script]
    assert agent_runs, "the doc never runs the agent against the gateway"
    for output in agent_runs:
        steps = [line for line in output.splitlines() if line.startswith("[")]
        # The tier in brackets comes from the gateway's x-distillery-tier header (a model URI).
        assert steps and all(re.match(r"\[(hf|openai):", line) for line in steps), output
        calls = [line for line in steps if re.match(r"\[[^\]]+\] \w+\(\{.*\}\) -> ", line)]
        assert calls and not calls[0].split(" -> ", 1)[1].startswith("Error"), output
        assert steps[-1] not in calls and len(steps[-1].split("] ", 1)[1]) > 0, output

    elapsed = time.perf_counter() - started
    print(f"\n{reproduced}; walkthrough in {elapsed:.0f}s:\n" + "\n".join(shell.log))
