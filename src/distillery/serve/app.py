"""The gateway app: OpenAI- and Anthropic-compatible endpoints over one routed step per request.

    app = create_app(CascadeBackend.from_config("cascade.toml"), GatewaySettings(store=SQLiteStore(...)))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Every request is parsed into neutral messages, routed by the backend (the whole decision, and the
whole answer, exist before the first byte is written), then written back in the API's own shape,
as one JSON body or as an SSE stream. Routing facts go out in headers (`x-distillery-tier`,
`x-distillery-confidence`, `x-distillery-cost`, `x-distillery-escalated`) and in a `distillery`
field of the body. The exchange is queued for the trajectory store and never awaited.

Routes are plain Starlette routes on the FastAPI app: the bodies are parsed by hand so every
malformed request gets the error shape its API documents, and a request does not pay for
FastAPI's dependency solving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from distillery.errors import DistilleryError, ModelError
from distillery.serve import anthropic_api, openai_api
from distillery.serve.auth import is_authorized
from distillery.serve.backend import Backend, GatewayError, RoutedTurn, StepOptions, gather_steps, json_dumps
from distillery.serve.capture import CaptureWriter, Exchange
from distillery.serve.metrics import GatewayMetrics

log = logging.getLogger("distillery.serve")

DEFAULT_SERVED_NAME = "distillery"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_OUTPUT_TOKENS = 64_000
DEFAULT_REQUEST_TIMEOUT_S = 300.0
CASCADE_TARGET = "cascade"


@dataclass
class GatewaySettings:
    """How the gateway behaves; the CLI fills this from its options.

    `model_map` maps a requested model name to "cascade" or to a tier index (pinning that tier).
    Names not in the map go to the cascade unless `strict_models` is set (then 404).
    """

    api_keys: list[str] = field(default_factory=list)
    store: Any = None  # a TrajectoryStore; None switches capture off
    capture_queue: int = 10_000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    served_name: str = DEFAULT_SERVED_NAME
    model_map: dict[str, str | int] = field(default_factory=dict)
    strict_models: bool = False
    shutdown_flush_s: float = 30.0
    # The most output tokens a request may ask for. Real APIs answer 400 above their model's limit
    # instead of clamping silently; 64k is the largest hosted teacher limit in prices.toml's models.
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS


class _Api:
    """What differs between the two APIs for errors: the body shape."""

    def __init__(self, name: str, module: Any):
        self.name = name
        self.module = module

    def error(self, status: int, message: str, *, param: str | None = None,
              headers: dict[str, str] | None = None) -> Response:
        body = self.module.error_body(status, message, param=param)
        return Response(json_dumps(body), status_code=status, media_type="application/json", headers=headers)


OPENAI = _Api("openai", openai_api)
ANTHROPIC = _Api("anthropic", anthropic_api)


def _float_list(value: Any, where: str) -> list[float]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        value = [value]
    out = []
    for v in value:
        try:
            number = float(v)
        except (TypeError, ValueError):
            raise GatewayError(f"{where}: {v!r} is not a number", param=where) from None
        if isinstance(v, bool) or not 0.0 <= number <= 1.0:
            raise GatewayError(f"{where}: {v!r} is outside [0, 1]", param=where)
        out.append(number)
    return out


class Gateway:
    """The request handlers and their shared state (backend, settings, metrics, capture)."""

    def __init__(self, backend: Backend, settings: GatewaySettings):
        self.backend = backend
        self.settings = settings
        self.tier_names = list(backend.tier_names)
        self.metrics = GatewayMetrics(self.tier_names)
        self.metrics.set_calibration(getattr(backend, "calibration", None) or {})
        self.capture: CaptureWriter | None = None
        if settings.store is not None:
            self.capture = CaptureWriter(settings.store, max_queue=settings.capture_queue,
                                         on_result=lambda result: self.metrics.capture.labels(result).inc())
        self.served_by = getattr(backend, "name", None) or "gateway"

    # -- request plumbing ------------------------------------------------------------------------

    async def read_json(self, request: Request) -> Any:
        """The body as JSON, refusing bodies over the size limit before reading them whole."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise GatewayError(f"request body of {int(declared)} bytes exceeds the gateway's limit of {limit} bytes "
                             "(--max-body-bytes)", status=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise GatewayError(f"request body exceeds the gateway's limit of {limit} bytes (--max-body-bytes)",
                                 status=413)
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GatewayError(f"the request body is not valid JSON: {exc}") from None

    def apply_routing(self, request: Request, model: str, overrides: dict[str, Any], options: StepOptions) -> None:
        """Model-name mapping, then per-request overrides: headers first, the body's `distillery` object over them."""
        target = self.settings.model_map.get(model)
        if target is None and model in (self.settings.served_name, CASCADE_TARGET):
            target = CASCADE_TARGET
        if target is None:
            if self.settings.strict_models:
                known = ", ".join(sorted({self.settings.served_name, *self.settings.model_map}))
                raise GatewayError(f"model {model!r} is not served here; known: {known}", param="model", status=404)
            target = CASCADE_TARGET
        if target != CASCADE_TARGET:
            options.tier = self.tier_index(target)
        headers = request.headers
        tier = overrides.get("tier", headers.get("x-distillery-tier"))
        threshold = overrides.get("threshold", headers.get("x-distillery-threshold"))
        if tier is not None:
            options.tier = self.tier_index(tier)
        if threshold is not None:
            options.thresholds = _float_list(threshold, "distillery.threshold")

    def check_max_tokens(self, api: _Api, max_tokens: int | None) -> None:
        limit = self.settings.max_output_tokens
        if max_tokens is None or max_tokens <= limit:
            return
        if api is OPENAI:
            message = (f"max_tokens is too large: {max_tokens}. This model supports at most {limit} completion tokens, "
                       f"whereas you provided {max_tokens}.")
        else:
            message = f"max_tokens: {max_tokens} > {limit}, which is the maximum allowed number of output tokens"
        raise GatewayError(message, param="max_tokens")

    def tier_index(self, tier: Any) -> int:
        """A tier named by index (0 = cheapest) or by model URI."""
        if isinstance(tier, int) and not isinstance(tier, bool):
            index = tier
        elif isinstance(tier, str) and tier.strip().lstrip("-").isdigit():
            index = int(tier)
        elif isinstance(tier, str) and tier in self.tier_names:
            index = self.tier_names.index(tier)
        else:
            raise GatewayError(f"distillery.tier: {tier!r} is neither a tier index nor one of {', '.join(self.tier_names)}",
                             param="distillery.tier")
        if not 0 <= index < len(self.tier_names):
            raise GatewayError(f"distillery.tier: {index} is outside 0..{len(self.tier_names) - 1}", param="distillery.tier")
        return index

    async def route(self, api: _Api, messages, tools, options: StepOptions, n: int) -> list[RoutedTurn]:
        try:
            return await asyncio.wait_for(gather_steps(self.backend, messages, tools, options, n),
                                          self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise GatewayError(f"no answer within the gateway's request timeout of {self.settings.request_timeout_s:g}s "
                             "(--request-timeout)", status=504) from None
        except GatewayError:
            raise
        except ModelError as exc:
            # The cascade already applied its fallback policy; what is left is a failure to report.
            raise GatewayError(f"upstream model failed: {exc}", status=502) from None

    def routing_headers(self, routed: list[RoutedTurn], request_id: str) -> dict[str, str]:
        first = routed[0]
        headers = {
            "x-request-id": request_id,
            "x-distillery-tier": first.tier,
            "x-distillery-tier-index": str(first.tier_index),
            "x-distillery-escalated": "true" if first.escalated else "false",
            "x-distillery-cost": f"{sum(r.cost_usd for r in routed):.6g}",
        }
        if first.confidence is not None:
            headers["x-distillery-confidence"] = f"{first.confidence:.6f}"
        return headers

    def record(self, api: _Api, model: str, request_id: str, messages, tools, routed: list[RoutedTurn]) -> None:
        for i, r in enumerate(routed):
            self.metrics.observe_step(r)
            if self.capture is not None:
                self.capture.submit(Exchange(api=api.name, requested_model=model, served_by=self.served_by,
                                             request_id=request_id, messages=messages, tools=tools, routed=r,
                                             choice_index=i))

    async def handle(self, request: Request, api: _Api) -> Response:
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        status = 500
        try:
            if not is_authorized(request.headers, self.settings.api_keys):
                status = 401
                return api.error(401, "invalid or missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                                 headers={"www-authenticate": "Bearer"})
            response = await self._answer(request, api, started)
            status = response.status_code
            return response
        except GatewayError as exc:
            status = exc.status
            return api.error(exc.status, str(exc), param=exc.param)
        except ClientDisconnect:
            status = 499
            return Response(status_code=499)
        except DistilleryError as exc:
            status = 500
            log.warning("%s request failed: %s", api.name, exc)
            return api.error(500, str(exc))
        except Exception as exc:  # a bug or a model's unexpected exception: answer in the API's shape
            status = 500
            log.exception("%s request failed", api.name)
            return api.error(500, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(api.name, str(status)).inc()

    async def _answer(self, request: Request, api: _Api, started: float) -> Response:
        body = await self.read_json(request)
        if api is OPENAI:
            parsed = openai_api.parse_request(body)
            n = parsed.n
        else:
            parsed = anthropic_api.parse_request(body)
            n = 1
        self.check_max_tokens(api, parsed.options.max_tokens)
        self.apply_routing(request, parsed.model, parsed.overrides, parsed.options)
        routed = await self.route(api, parsed.messages, parsed.tools, parsed.options, n)
        self.metrics.latency.labels(api.name).observe(time.perf_counter() - started)
        if api is OPENAI:
            request_id, created = openai_api.new_ids()
        else:
            request_id = anthropic_api.new_message_id()
        headers = self.routing_headers(routed, request_id)
        self.record(api, parsed.model, request_id, parsed.messages, parsed.tools, routed)
        if api is OPENAI:
            if parsed.stream:
                chunks = openai_api.stream_chunks(routed, model=parsed.model, request_id=request_id, created=created,
                                                  logprobs=parsed.options.logprobs, include_usage=parsed.include_usage)
                return _sse_response(chunks, headers)
            payload = openai_api.completion_body(routed, model=parsed.model, request_id=request_id, created=created,
                                                 logprobs=parsed.options.logprobs)
        else:
            if parsed.stream:
                events = anthropic_api.stream_events(routed[0], model=parsed.model, message_id=request_id,
                                                     thinking=parsed.thinking)
                return _sse_response(events, headers)
            payload = anthropic_api.message_body(routed[0], model=parsed.model, message_id=request_id,
                                                 thinking=parsed.thinking)
        return Response(json_dumps(payload), media_type="application/json", headers=headers)

    # -- endpoints -------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self.handle(request, OPENAI)

    async def messages(self, request: Request) -> Response:
        return await self.handle(request, ANTHROPIC)

    async def list_models(self, request: Request) -> Response:
        anthropic_client = "anthropic-version" in request.headers
        api = ANTHROPIC if anthropic_client else OPENAI
        if not is_authorized(request.headers, self.settings.api_keys):
            return api.error(401, "invalid or missing API key")
        names = list(dict.fromkeys([self.settings.served_name, *self.settings.model_map]))
        created = int(time.time())
        if anthropic_client:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
            data = [{"type": "model", "id": n, "display_name": n, "created_at": stamp} for n in names]
            payload: dict[str, Any] = {"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]}
        else:
            payload = {"object": "list",
                       "data": [{"id": n, "object": "model", "created": created, "owned_by": "distillery"} for n in names]}
        return Response(json_dumps(payload), media_type="application/json")

    async def health(self, request: Request) -> Response:
        queued = self.capture.queue.qsize() if self.capture is not None else 0
        payload = {"status": "ok", "tiers": self.tier_names, "capture": self.capture is not None,
                   "capture_queue": queued}
        return Response(json_dumps(payload), media_type="application/json")

    async def prometheus(self, request: Request) -> Response:
        if not is_authorized(request.headers, self.settings.api_keys):
            return OPENAI.error(401, "invalid or missing API key")
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def report(self, request: Request) -> Response:
        """The latest `distillery report` written for this cascade's config (auth as for /metrics)."""
        if not is_authorized(request.headers, self.settings.api_keys):
            return OPENAI.error(401, "invalid or missing API key")
        from distillery.report.registry import latest_report

        source = getattr(self.backend, "source", None)
        path = latest_report(source)
        if path is None:
            return OPENAI.error(404, f"no report for the cascade {source}: run `distillery eval --config {source} --out "
                                     "runs/eval.json`, then `distillery report runs/eval.json`")
        return Response(path.read_bytes(), media_type="text/html; charset=utf-8")


def _sse_response(chunks, headers: dict[str, str]) -> Response:
    """The event stream as one body.

    The whole answer exists before the first byte (routing is decided first), so the events are
    written in one go: the client parses the same event sequence as from a token-by-token stream.
    A chunked `StreamingResponse` added ~2.5 ms per streamed answer on loopback (BENCHMARKS.md).
    """
    return Response(b"".join(chunks), media_type="text/event-stream",
                    headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})


def create_app(backend: Backend, settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway as an ASGI app. Capture starts and is flushed with the app's lifespan."""
    gateway = Gateway(backend, settings or GatewaySettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if gateway.capture is not None:
            gateway.capture.start()
        try:
            yield
        finally:
            # uvicorn has drained in-flight requests by now; write what they captured.
            if gateway.capture is not None:
                await gateway.capture.close(gateway.settings.shutdown_flush_s)

    app = FastAPI(title="distillery gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    app.add_route("/v1/chat/completions", gateway.chat_completions, methods=["POST"])
    app.add_route("/v1/messages", gateway.messages, methods=["POST"])
    app.add_route("/v1/models", gateway.list_models, methods=["GET"])
    app.add_route("/health", gateway.health, methods=["GET"])
    app.add_route("/metrics", gateway.prometheus, methods=["GET"])
    app.add_route("/report", gateway.report, methods=["GET"])
    return app
