"""What the gateway itself costs: added latency and throughput over a trivial backend, on loopback.

    python benchmarks/gateway_overhead.py                      # defaults: 2000 sequential, 6000 concurrent
    python benchmarks/gateway_overhead.py --sequential 500 --requests 2000 --concurrency 16

Three servers answer the same OpenAI chat request, each in its own process under uvicorn (one worker),
measured one after another in the same run:

* `bare`: a minimal ASGI app that returns a fixed, prebuilt chat.completion body without reading
  the request: the floor of HTTP on loopback with this server stack (uvicorn, Python client).
* `gateway`: `distillery.serve.create_app` over `FixedBackend` (a routed step that returns a fixed
  turn at once): parsing, translation, routing record, headers, metrics; capture off.
* `gateway+capture`: the same with capture on (a SQLite store in a temporary directory).

The load comes from a second process: a small asyncio client writing raw HTTP/1.1 with keep-alive
(so the client's own cost stays low), bounded by a request count and a time limit. Latency is
measured with one connection, one request at a time; throughput with `--concurrency` connections.
The direct call of the backend (`await backend.step(...)`, in this process) is printed too.
"Added" latency is gateway minus bare at the same percentile.
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

REQUEST_BODY = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You answer stock questions."},
        {"role": "user", "content": "How many units of SKU-1042 are in Berlin?"},
    ],
    "tools": [{"type": "function", "function": {
        "name": "get_stock", "description": "Units of a product in stock in one city.",
        "parameters": {"type": "object", "properties": {"sku": {"type": "string"}, "city": {"type": "string"}},
                       "required": ["sku", "city"]}}}],
}
ANTHROPIC_BODY = {
    "model": "claude-opus-4-6", "max_tokens": 64,
    "messages": [{"role": "user", "content": "How many units of SKU-1042 are in Berlin?"}],
}


# --------------------------------------------------------------------------------------------------
# Servers (each runs in its own process: `--serve KIND --port N`)
# --------------------------------------------------------------------------------------------------


def bare_app():
    from distillery.serve.backend import FixedBackend, RoutedTurn
    from distillery.serve.openai_api import completion_body

    routed = RoutedTurn(turn=FixedBackend().turn, tier="fixed", confidence=1.0)
    body = json.dumps(completion_body([routed], model="gpt-4o", request_id="chatcmpl-bare", created=0,
                                      logprobs=False)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve(kind: str, port: int, store_dir: str | None) -> None:
    import uvicorn

    if kind == "bare":
        app = bare_app()
    else:
        from distillery.serve import FixedBackend, GatewaySettings, create_app

        store = None
        if kind == "gateway+capture":
            from distillery.store import SQLiteStore

            store = SQLiteStore(Path(store_dir) / "store.db")
        app = create_app(FixedBackend(), GatewaySettings(store=store))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")


# --------------------------------------------------------------------------------------------------
# Load (runs in its own process: `--load ...`)
# --------------------------------------------------------------------------------------------------


def request_bytes(path: str, body: dict, port: int) -> bytes:
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nanthropic-version: 2023-06-01\r\n\r\n")
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def load(port: int, raw: bytes, total: int, concurrency: int, time_limit_s: float) -> dict:
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + time_limit_s

    async def worker() -> None:
        nonlocal sent, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.set_write_buffer_limits(0)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while sent < total and time.perf_counter() < deadline:
            sent += 1
            start = time.perf_counter()
            writer.write(raw)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - start)
            errors += status != 200
        writer.close()

    # Warm up (imports, first-request paths) before measuring.
    warm_reader, warm_writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(50):
        warm_writer.write(raw)
        await read_response(warm_reader)
    warm_writer.close()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"n": len(latencies), "errors": errors, "elapsed_s": elapsed, "rps": len(latencies) / elapsed,
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def run_load(port: int, path: str, body: dict, total: int, concurrency: int, time_limit_s: float) -> dict:
    """The load generator in a second process, so client and server never share an interpreter."""
    command = [sys.executable, __file__, "--load", str(port), path, json.dumps(body), str(total), str(concurrency),
               str(time_limit_s)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=time_limit_s + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_direct(n: int) -> dict:
    from distillery.serve import FixedBackend, StepOptions
    from distillery.formats.openai import messages_from_wire, tools_from_wire

    backend = FixedBackend()
    messages, tools = messages_from_wire(REQUEST_BODY["messages"]), tools_from_wire(REQUEST_BODY["tools"])

    async def go() -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await backend.step(messages, tools, StepOptions())
            times.append(time.perf_counter() - start)
        return times

    times = asyncio.run(go())
    return {"p50_ms": 1000 * percentile(times, 50), "p99_ms": 1000 * percentile(times, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=2000, help="requests on one connection, for latency")
    parser.add_argument("--requests", type=int, default=6000, help="requests in the throughput run")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in the throughput run")
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds at most per run")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store-dir", help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port, args.store_dir)
    if args.load:
        port, path, body, total, concurrency, limit = args.load
        raw = request_bytes(path, json.loads(body), int(port))
        print(json.dumps(asyncio.run(load(int(port), raw, int(total), int(concurrency), float(limit)))))
        return

    cases = [
        ("bare", "/v1/chat/completions", REQUEST_BODY),
        ("gateway", "/v1/chat/completions", REQUEST_BODY),
        ("gateway", "/v1/chat/completions", {**REQUEST_BODY, "stream": True}),
        ("gateway", "/v1/messages", ANTHROPIC_BODY),
        ("gateway+capture", "/v1/chat/completions", REQUEST_BODY),
    ]
    print(f"cpus: {os.cpu_count()}  python {sys.version.split()[0]}  load from a second process, loopback")
    direct = measure_direct(args.sequential)
    print(f"backend called directly (in process): p50 {direct['p50_ms']:.4f} ms  p99 {direct['p99_ms']:.4f} ms")
    rows = []
    with tempfile.TemporaryDirectory() as store_dir:
        for kind, path, body in cases:
            port = free_port()
            server = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                                       "--store-dir", store_dir])
            try:
                wait_until_listening(port)
                latency = run_load(port, path, body, args.sequential, 1, args.time_limit)
                throughput = run_load(port, path, body, args.requests, args.concurrency, args.time_limit)
            finally:
                server.terminate()
                server.wait(timeout=30)
            label = f"{kind} {path}{' stream' if body.get('stream') else ''}"
            rows.append((label, latency, throughput))
    bare_latency = rows[0][1]
    print(f"\n{'server':<46} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} {'req/s':>8} "
          f"{'(conc)':>6} {'errors':>6}")
    for label, latency, throughput in rows:
        added50 = latency["p50_ms"] - bare_latency["p50_ms"]
        added99 = latency["p99_ms"] - bare_latency["p99_ms"]
        print(f"{label:<46} {latency['p50_ms']:>8.3f} {latency['p99_ms']:>8.3f} {added50:>10.3f} {added99:>10.3f} "
              f"{throughput['rps']:>8.0f} {args.concurrency:>6} {latency['errors'] + throughput['errors']:>6}")
    gateway = rows[1]
    print(f"\ngateway vs bare, sequential: added p50 {gateway[1]['p50_ms'] - bare_latency['p50_ms']:.3f} ms "
          f"(target < 2 ms); throughput {gateway[2]['rps']:.0f} req/s = {gateway[2]['rps'] / rows[0][2]['rps']:.2f}x bare "
          f"(target >= 500 req/s)")


if __name__ == "__main__":
    main()
