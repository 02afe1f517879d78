"""How close does collection get to the ideal throughput of a slow teacher?

A local OpenAI-compatible server runs in a separate process and answers every chat completion
with a final answer after sleeping `--latency-ms` (asyncio.sleep, so it serves any number of
requests at once; uvicorn with httptools and uvloop when installed, as `uvicorn[standard]` does).
`TeacherCollector` sends `--tasks` single-step tasks through the real `openai` SDK provider
(`openai:gpt-4o` with `base_url` pointing at the server; aiohttp transport, the provider's default)
into a SQLite store in a temp dir, at each `--concurrency`. Side by side, in the same run: the raw
SDK alone (AsyncOpenAI's typed `create` plus a semaphore, on its default httpx2 transport and on
aiohttp) and distillery's OpenAI provider alone (no agent, no store), so the gap can be put where it
belongs: the SDK and HTTP stack, the provider's translation, or the agent and store.

    python benchmarks/collect_throughput.py                      # 500 tasks, 100 ms, concurrency 16/64/128
    python benchmarks/collect_throughput.py --tasks 2000 --latency-ms 50 --concurrency 64

Printed per concurrency: wall time, ideal (tasks x latency / concurrency), achieved/ideal
(ideal / wall), per-request overhead ((wall - ideal) x concurrency / tasks: the time each request
slot spent beyond the server's latency), and client CPU per request.
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

# -- the server (runs in its own process) --------------------------------------------------------


def serve(port: int, latency_s: float) -> None:
    """A bare ASGI app: the server's own overhead must stay far below the latency it simulates."""
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"].endswith("/health"):
            payload = b'{"ok":true}'
        else:
            request = json.loads(body)
            await asyncio.sleep(latency_s)
            payload = json.dumps(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": request.get("model", "gpt-4o"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "The answer is 42.", "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 8, "total_tokens": 58},
                }
            ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False, backlog=4096)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency-ms", str(latency_s * 1000)])
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return proc, base_url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("benchmark server did not start")


# -- the two clients -----------------------------------------------------------------------------


def run_collector(base_url: str, tasks: int, concurrency: int, progress: bool, processes: int = 1) -> tuple[float, float, int]:
    from distillery.collect import TeacherCollector
    from distillery.store import SQLiteStore

    queries = [f"benchmark question {i}" for i in range(tasks)]
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "store.db")
        collector = TeacherCollector(
            "openai:gpt-4o", store=store, concurrency=concurrency, progress=progress,
            model_options={"base_url": base_url, "api_key": "bench"}, keep_trajectories=False, processes=processes,
        )
        cpu, start = time.process_time(), time.perf_counter()
        result = collector.collect(queries)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert result.ok == tasks and store.count() == tasks, result.summary()
        store.close()
    return wall, cpu, result.ok


def run_raw_sdk(base_url: str, tasks: int, concurrency: int, aiohttp: bool = False) -> tuple[float, float, int]:
    """The typed `chat.completions.create` with a semaphore: the SDK's default httpx2 client, or aiohttp."""
    import openai

    async def main() -> int:
        http_client = openai.DefaultAioHttpClient() if aiohttp else None
        client = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0, http_client=http_client)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": f"benchmark question {i}"}], temperature=0.0
                )

        await asyncio.gather(*(one(i) for i in range(tasks)))
        await client.close()
        return tasks

    cpu, start = time.process_time(), time.perf_counter()
    done = asyncio.run(main())
    return time.perf_counter() - start, time.process_time() - cpu, done


def run_provider(base_url: str, tasks: int, concurrency: int) -> tuple[float, float, int]:
    """distillery's OpenAI provider alone (message translation, Turn parsing, pricing): no agent, no store."""
    from distillery.models import load_model
    from distillery.trajectory import Message

    model = load_model("openai:gpt-4o", base_url=base_url, api_key="bench")

    async def main() -> int:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await model.agenerate([Message(role="user", content=f"benchmark question {i}")], None, temperature=0.0)

        await asyncio.gather(*(one(i) for i in range(tasks)))
        await model.aclose()
        return tasks

    cpu, start = time.process_time(), time.perf_counter()
    done = asyncio.run(main())
    return time.perf_counter() - start, time.process_time() - cpu, done


def store_write_rates(count: int = 1000) -> dict[str, tuple[float, float]]:
    """Trajectories written per second, one transaction each, with synchronous NORMAL and FULL."""
    from distillery.store import SQLiteStore
    from distillery.trajectory import Step, Trajectory, Usage

    rates = {}
    for mode in ("NORMAL", "FULL"):
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(Path(tmp) / "store.db", synchronous=mode)
            rows = [
                Trajectory(task_id=f"t{i}", query=f"benchmark question {i}", model="openai:gpt-4o",
                           steps=[Step(text="The answer is 42.", usage=Usage(input_tokens=50, output_tokens=8))])
                for i in range(count)
            ]
            cpu, start = time.process_time(), time.perf_counter()
            for row in rows:
                store.put(row)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            rates[mode] = (count / wall, cpu / count * 1000)
            store.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=500, help="single-step tasks per measurement")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="server-side latency per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--progress", action="store_true", help="draw the rich progress bar during the collector runs")
    parser.add_argument("--processes", type=int, nargs="*", default=[], metavar="P",
                        help="also measure TeacherCollector(processes=P) for each P (client CPU then counts the parent only)")
    parser.add_argument("--repeats", type=int, default=1, help="measure each configuration this many times; the best is printed")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    if args.serve:
        serve(args.serve, latency)
        return

    server, base_url = start_server(latency)
    try:
        run_raw_sdk(base_url, min(args.tasks, 64), 16)  # warm up imports and the server
        print(f"collect throughput: {args.tasks} single-step tasks, server latency {args.latency_ms:g} ms, "
              f"openai SDK provider -> local server in a separate process, SQLite store in a temp dir")
        print(f"machine: {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}")
        header = f"{'client':<18}{'conc':>6}{'wall s':>9}{'ideal s':>9}{'achieved/ideal':>16}{'overhead ms/req':>17}{'client CPU ms/req':>19}"
        print(header)
        print("-" * len(header))
        for concurrency in args.concurrency:
            ideal = args.tasks * latency / concurrency
            clients = [
                ("raw SDK, httpx2", lambda: run_raw_sdk(base_url, args.tasks, concurrency)),
                ("raw SDK, aiohttp", lambda: run_raw_sdk(base_url, args.tasks, concurrency, aiohttp=True)),
                ("provider only", lambda: run_provider(base_url, args.tasks, concurrency)),
                ("TeacherCollector", lambda: run_collector(base_url, args.tasks, concurrency, args.progress)),
            ]
            for p in args.processes:
                clients.append((f"  processes={p}", lambda p=p: run_collector(base_url, args.tasks, concurrency, args.progress, p)))
            for name, run in clients:
                wall, cpu, _ = min((run() for _ in range(args.repeats)), key=lambda r: r[0])
                overhead_ms = (wall - ideal) * concurrency / args.tasks * 1000
                print(f"{name:<18}{concurrency:>6}{wall:>9.2f}{ideal:>9.2f}{ideal / wall:>15.0%} "
                      f"{overhead_ms:>16.1f}{cpu / args.tasks * 1000:>19.2f}")
        print("(ideal needs tasks/latency x concurrency requests per second; one event loop cannot exceed "
              "1000 / client-CPU-ms requests per second)")
        print()
        print("store writes (one transaction per trajectory, single-step trajectory):")
        for mode, (rate, cpu_ms) in store_write_rates().items():
            print(f"  synchronous={mode:<7}{rate:>9.0f} trajectories/s   {cpu_ms:.3f} ms CPU each")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
