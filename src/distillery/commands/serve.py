"""`distillery serve`: the gateway on uvicorn. Teams switch an existing agent over by changing its base URL."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from distillery.commands.options import choice, input_file, number, parsed, sqlite_store
from distillery.commands.routing import cascade_help, print_warnings
from distillery.errors import ConfigError

err_console = Console(stderr=True)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's


def _parse_map(entries: list[str]) -> dict[str, str | int]:
    mapping: dict[str, str | int] = {}
    for entry in entries:
        name, sep, target = entry.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not name or not target:
            raise ConfigError(f"--map {entry!r}: write NAME=cascade or NAME=<tier index>, e.g. claude-opus-4-6=cascade")
        if target == "cascade":
            mapping[name] = "cascade"
        elif target.isdigit():
            mapping[name] = int(target)
        else:
            raise ConfigError(f"--map {entry!r}: the target must be 'cascade' or a tier index (0 = cheapest tier)")
    return mapping


def serve(
    cascade: Path = typer.Option(..., "--cascade", "-c", callback=input_file(), help="The cascade config (cascade.toml; example above): tiers cheapest "
                                 "first, teacher last, with calibrated thresholds. Every request is routed through it, one "
                                 "model step per request."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Anything but loopback needs an API key "
                             "(--api-key or DISTILLERY_API_KEY)."),
    port: int = typer.Option(8000, callback=number(1, 65535), help="Port to listen on (1-65535). Clients use base_url http://HOST:PORT/v1 (OpenAI SDK) "
                             "or http://HOST:PORT (Anthropic SDK)."),
    api_key: list[str] = typer.Option([], "--api-key", help="A key clients must send (Authorization: Bearer KEY or "
                                      "x-api-key: KEY). Repeat for several. Default: $DISTILLERY_API_KEY "
                                      "(comma-separated). Keys are never logged or captured."),
    store: Path = typer.Option(Path(".distillery/store.db"), callback=sqlite_store(must_exist=False), help="Trajectory store that captures every exchange "
                               "(tags: gateway, escalated). Build the next round with `distillery build --tag escalated`."),
    no_capture: bool = typer.Option(False, "--no-capture", help="Do not write exchanges to the trajectory store."),
    model_name: str = typer.Option("distillery", "--model-name", help="The model name /v1/models lists for the cascade."),
    model_map: list[str] = typer.Option([], "--map", callback=parsed(lambda entries: _parse_map(entries)), help="Map a requested model name: NAME=cascade, or NAME=INDEX to "
                                        "pin a tier (0 = cheapest). Repeatable, e.g. --map claude-opus-4-6=cascade "
                                        "--map teacher=1. Unmapped names go to the cascade unless --strict-models."),
    strict_models: bool = typer.Option(False, "--strict-models", help="Answer 404 for model names that are neither "
                                       "--model-name nor mapped with --map."),
    max_body_bytes: int = typer.Option(4 * 1024 * 1024, callback=number(1), help="Largest request body accepted; bigger ones get 413."),
    request_timeout: float = typer.Option(300.0, callback=number(0, low_open=True), help="Seconds a request may take in total (all tiers) before a 504. "
                                          "Per-tier timeouts and the fallback policy come from the cascade config."),
    drain_timeout: float = typer.Option(30.0, callback=number(0), help="On SIGTERM/Ctrl-C: seconds to let in-flight requests finish "
                                        "before closing; queued captures are then written."),
    capture_queue: int = typer.Option(10_000, callback=number(1), help="Exchanges waiting to be written at most; when full, new ones are "
                                      "dropped and counted (distillery_capture_total{result=\"dropped\"}), never waited for."),
    max_output_tokens: int = typer.Option(64_000, "--max-output-tokens", callback=number(1), help="The most output tokens a "
                                          "request may ask for (max_tokens); above it the gateway answers 400 naming "
                                          "the limit, as the real APIs do, instead of clamping."),
    max_batch: int = typer.Option(32, "--max-batch", callback=number(1), help="Concurrent requests that reach the "
                                  "same local (hf:, world:) tier are generated as one batch of at most this many; 1 "
                                  "generates them one at a time. Hosted tiers are called concurrently anyway."),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated", help="Listen beyond loopback without "
                                               "an API key (only behind a proxy that authenticates)."),
    log_level: str = typer.Option("info", callback=choice(*LOG_LEVELS), help="uvicorn log level: critical, error, "
                                  "warning, info, debug, trace."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log one line per request."),
) -> None:
    """Serve the cascade over OpenAI- and Anthropic-compatible HTTP (POST /v1/chat/completions, POST /v1/messages).

    Each request runs one routed model step: the cheapest confident tier answers, the rest escalate.
    The routing decision is made before the first byte, so streams never switch model midway.
    """
    import uvicorn

    from distillery.routing.config import config_warnings, load_cascade_config
    from distillery.serve.app import GatewaySettings, create_app
    from distillery.serve.auth import check_bind, keys_from
    from distillery.serve.backend import CascadeBackend

    keys = keys_from(api_key)
    check_bind(host, keys, allow_unauthenticated=allow_unauthenticated)
    mapping = _parse_map(model_map)
    config = load_cascade_config(cascade)
    print_warnings(config_warnings(config))  # before loading models, which can take a while
    backend = CascadeBackend.from_config(config, max_batch=max_batch)
    for name, target in mapping.items():
        if isinstance(target, int) and target >= len(backend.tier_names):
            raise ConfigError(f"--map {name}={target}: {cascade} has tiers 0..{len(backend.tier_names) - 1}")
    trajectory_store = None
    if not no_capture:
        from distillery.store import SQLiteStore

        trajectory_store = SQLiteStore(store)
    settings = GatewaySettings(
        api_keys=keys, store=trajectory_store, capture_queue=capture_queue, max_body_bytes=max_body_bytes,
        request_timeout_s=request_timeout, served_name=model_name, model_map=mapping, strict_models=strict_models,
        shutdown_flush_s=drain_timeout, max_output_tokens=max_output_tokens,
    )
    app = create_app(backend, settings)
    tiers = " -> ".join(backend.tier_names)
    err_console.print(f"[bold]distillery gateway[/] on http://{host}:{port}  tiers: {tiers}", highlight=False)
    err_console.print(f"capture: {'off' if trajectory_store is None else store}   auth: {'on' if keys else 'off (loopback only)'}",
                      highlight=False)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                timeout_graceful_shutdown=drain_timeout)


def register(app: typer.Typer) -> None:
    app.command("serve", help=cascade_help(serve.__doc__))(serve)
