"""Gateway throughput with and without batching across requests, on the offline world's teacher.

    python benchmarks/gateway_batching.py --clients 32 --requests 256

Starts `distillery serve` twice (as subprocesses, on loopback) over a one-tier cascade of
`world:teacher`: once with `--max-batch 1` (requests generated one at a time) and once with
`--max-batch 32` (concurrent requests to the tier generated as one batch). The same `--requests`
chat completions (the first step of offline-world validation tasks, with the world's tools,
greedy, max_tokens 96) are sent by `--clients` concurrent official `openai.AsyncOpenAI` clients.
Prints requests per second for both, their ratio, and whether every answer is identical.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

from distillery.world import SYSTEM_PROMPT
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(config: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "distillery.cli", "serve", "--cascade", str(config), "--port", str(port), "--no-capture",
         "--max-batch", str(max_batch), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("serve did not start within 120 s")


async def load(url: str, queries: list[str], clients: int) -> tuple[float, list[str]]:
    tools = [{"type": "function", "function": spec.model_dump()} for spec in toolbox().specs]
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    answers: list[str] = [""] * len(queries)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(queries)):
        queue.put_nowait(index)

    async def worker():
        while not queue.empty():
            index = queue.get_nowait()
            reply = await client.chat.completions.create(
                model="distillery", temperature=0, max_tokens=96, tools=tools,
                messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": queries[index]}])
            message = reply.choices[0].message
            answers[index] = (message.content or "") + json.dumps(
                [[c.function.name, c.function.arguments] for c in message.tool_calls or []])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(queries) / elapsed, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    queries = [task.query for task in generate_tasks("validation", args.requests, seed=args.seed)]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cascade.toml"
        config.write_text('[[tiers]]\nmodel = "world:teacher"\n')
        results = {}
        for max_batch in (1, 32):
            process, url = start(config, max_batch)
            try:
                asyncio.run(load(url, queries[: args.clients], args.clients))  # warm-up
                results[max_batch] = asyncio.run(load(url, queries, args.clients))
            finally:
                process.terminate()
                process.wait(timeout=60)
    (serial, serial_answers), (batched, batched_answers) = results[1], results[32]
    print(json.dumps({
        "clients": args.clients, "requests": args.requests,
        "requests_per_s_max_batch_1": round(serial, 2), "requests_per_s_max_batch_32": round(batched, 2),
        "throughput_ratio": round(batched / serial, 2),
        "identical_answers": sum(a == b for a, b in zip(serial_answers, batched_answers)),
    }, indent=2))


if __name__ == "__main__":
    main()
