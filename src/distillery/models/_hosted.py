"""What the hosted providers (Anthropic, OpenAI) share: one SDK client per event loop, and SDK errors
turned into ours.

Retries are the collector's job, not the SDK's: the SDK clients are built with `max_retries=0`
and every failure becomes either a `TransientModelError` (worth retrying; carries the status and
the server's `retry-after` hint) or a plain `ModelError` (retrying will not help). One policy for
both providers, so the collector can treat them alike.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import email.utils
import functools
import importlib.util
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

from distillery.errors import ConfigError, ModelError, TransientModelError
from distillery.models.base import AsyncChatModel
from distillery.trajectory import Turn

log = logging.getLogger("distillery.models")

T = TypeVar("T")

# Worth retrying, as both official SDKs decide it for their own retries: request timeout (408),
# lock timeout (409), rate limit (429) and every server error (5xx, including Anthropic's 529
# "overloaded").
TRANSIENT_STATUSES = frozenset({408, 409, 429})

# How the SDK client talks HTTP. Both SDKs default to httpx2; their `DefaultAioHttpClient` keeps
# the SDK's whole request/response/error path and swaps only the transport for aiohttp, which costs
# about half the client CPU per request (benchmarks/collect_throughput.py). At 64 requests in
# flight that CPU is what limits a collection, so "auto" takes aiohttp whenever it is installed.
HTTP_TRANSPORTS = ("auto", "aiohttp", "httpx")

# Keep error lines readable: a provider's error body can be long (validation details, HTML pages).
MAX_MESSAGE_CHARS = 500
# How much of a malformed response body an error message quotes.
BODY_EXCERPT_CHARS = 160

# The HTTP responses the SDK client received during one `agenerate` call (appended by a response
# hook on the client, read when parsing a response fails). A ContextVar holding a list: each call
# (each collection run) sets its own list, and the tasks a call starts (Anthropic's n samples) copy
# the context and so append to the same list; concurrent calls never see each other's responses.
_responses: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("distillery_responses", default=None)


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """The server's wait hint in seconds, from `retry-after-ms` or `retry-after` (seconds or HTTP date).

    Returns None when there is no usable hint. A date in the past gives 0.
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now_dt = datetime.fromtimestamp(now if now is not None else time.time(), tz=timezone.utc)
    return max(0.0, (when - now_dt).total_seconds())


def check_http_transport(uri: str, transport: str) -> str:
    """`transport` resolved to "aiohttp" or "httpx"; a one-line ConfigError for anything else."""
    if transport not in HTTP_TRANSPORTS:
        raise ConfigError(f"{uri}: http_transport={transport!r} is not one of {', '.join(HTTP_TRANSPORTS)}")
    has_aiohttp = importlib.util.find_spec("aiohttp") is not None
    if transport == "aiohttp" and not has_aiohttp:
        raise ConfigError(f"{uri}: http_transport='aiohttp' needs the aiohttp package: pip install aiohttp")
    if transport == "auto":
        return "aiohttp" if has_aiohttp else "httpx"
    return transport


async def _remember_response(response: Any) -> None:
    """An HTTP client response hook: keep the response, so a body the SDK cannot parse can be quoted."""
    responses = _responses.get()
    if responses is not None:
        responses.append(response)


def http_client(sdk: Any, transport: str, timeout_s: float) -> Any | None:
    """The `http_client=` argument for an `anthropic`/`openai` async client (None: the SDK default).

    Either transport gets the SDK's own defaults (`DefaultAioHttpClient`, `DefaultAsyncHttpxClient`:
    connection limits, redirects) plus a response hook that remembers the responses of the running
    `agenerate` call, so that a malformed body is reported with its status and an excerpt
    (`malformed_response_error`). `timeout_s` bounds each request (connect, each read, write).
    An SDK release without aiohttp support falls back to its default client under "auto"
    (`check_http_transport` resolved it to "aiohttp" because the package is installed).
    """
    hooks = {"response": [_remember_response]}
    if transport == "aiohttp":
        try:
            return sdk.DefaultAioHttpClient(timeout=timeout_s, event_hooks=hooks)
        except (AttributeError, ImportError, RuntimeError):
            log.warning("%s %s has no aiohttp transport; using its default httpx client", sdk.__name__, sdk.__version__)
    try:
        return sdk.DefaultAsyncHttpxClient(timeout=timeout_s, event_hooks=hooks)
    except (AttributeError, TypeError):  # an SDK without it: its own default client, no hook
        return None


def body_excerpt(body: Any, limit: int = BODY_EXCERPT_CHARS) -> str:
    """The start of a response body as one quoted line (`'{"id": "chatcmpl-…'`), for error messages."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body[: limit * 4]).decode("utf-8", "replace")
    text = " ".join(str(body).split())
    if not text:
        return "empty body"
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def _response_body(response: Any) -> Any:
    """What the response's body was, if the SDK has read it (it has, before parsing it)."""
    try:
        return response.content
    except Exception:  # not read (a stream), or the client variant does not keep it
        return None


def malformed_response_error(
    uri: str, exc: Exception, response: Any = None, *, secrets: Iterable[str | None] = ()
) -> ModelError | None:
    """A failure to understand a response the server sent, as a one-line error naming the model, the
    HTTP status and the start of the body; None when `exc` did not come from a response.

    `response` is the HTTP response the SDK received (from the client's response hook). Without
    it, only a `JSONDecodeError` is recognised (it carries the text it failed on). A 2xx body that
    is truncated, not JSON, or not the API's shape is most often a proxy or connection hiccup, so
    the error is transient: the collector retries it like a 5xx.
    """
    body = _response_body(response) if response is not None else None
    if isinstance(exc, json.JSONDecodeError):
        body = exc.doc if body is None else body
        reason = f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
    elif response is not None:
        reason = f"not the API's response shape ({type(exc).__name__}: {exc})"
    else:
        return None
    status = getattr(response, "status_code", None)
    where = f"HTTP {status}" if status is not None else "response"
    excerpt = body_excerpt(body) if body is not None else "body not available"
    message = one_line(f"{uri}: {where}: malformed response body, {reason}; body: {excerpt}", secrets=secrets)
    return TransientModelError(message, status=status)


def reporting_malformed_responses(agenerate: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a provider's `agenerate` so that a response its SDK or parser cannot read (a truncated
    body, HTML from a proxy, JSON of the wrong shape) raises `malformed_response_error`'s one line,
    not a bare `JSONDecodeError` or `AttributeError`. Other errors pass through unchanged."""

    @functools.wraps(agenerate)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        responses: list[Any] = []
        token = _responses.set(responses)
        try:
            return await agenerate(self, *args, **kwargs)
        except TransientModelError as error:
            timeout = getattr(self, "timeout_s", None)
            if timeout and str(error).endswith("request timed out"):  # say which limit it hit
                raise TransientModelError(f"{error} (no answer within {timeout:g} s)", status=error.status) from None
            raise
        except ModelError:
            raise
        except Exception as exc:
            error = malformed_response_error(
                getattr(self, "uri", type(self).__name__), exc, responses[-1] if responses else None,
                secrets=[getattr(self, "_api_key", None)],
            )
            if error is None:
                raise
            raise error from exc
        finally:
            _responses.reset(token)

    wrapper._reports_malformed = True  # type: ignore[attr-defined]
    return wrapper


def one_line(text: str, *, secrets: Iterable[str | None] = ()) -> str:
    """Collapse whitespace, cut to a readable length, and blank out any secret that slipped in."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(str(text).split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text


def _api_message(body: Any, fallback: str) -> str:
    """The human-readable message inside a provider's error body, whichever envelope it uses."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            kind = error.get("type")
            return f"{kind}: {error['message']}" if kind else str(error["message"])
        if isinstance(error, str):
            return error
    if isinstance(body, str) and body.strip():
        return f"body: {body_excerpt(body)}"  # not the API's envelope (an HTML page from a proxy): its start
    return fallback


def to_model_error(exc: Exception, sdk: Any, provider: str, *, secrets: Iterable[str | None] = ()) -> ModelError:
    """Map an exception from the official `anthropic` or `openai` SDK (passed as `sdk`) to ours.

    Both SDKs share the class names used here (`APIStatusError`, `APITimeoutError`,
    `APIConnectionError`). The message is one line and never contains the API key.
    """
    secrets = list(secrets)
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        request_id = headers.get("request-id") or headers.get("x-request-id")
        detail = _api_message(exc.body, exc.message)
        if request_id:
            detail += f" (request id {request_id})"
        message = one_line(f"{provider}: HTTP {status}: {detail}", secrets=secrets)
        # Both SDKs obey this non-standard header before their own status rules; so do we.
        should_retry = headers.get("x-should-retry")
        transient = status in TRANSIENT_STATUSES or status >= 500
        if should_retry in ("true", "false"):
            transient = should_retry == "true"
        if transient:
            return TransientModelError(message, status=status, retry_after=parse_retry_after(headers))
        return ModelError(message)
    refused = _connection_failure(exc)
    if isinstance(exc, sdk.APITimeoutError) and refused is None:
        return TransientModelError(one_line(f"{provider}: request timed out", secrets=secrets))
    if isinstance(exc, sdk.APIConnectionError):
        cause = refused or exc.__cause__ or exc.__context__
        reason = f"{type(cause).__name__}: {cause}" if cause else exc.message
        url = getattr(getattr(exc, "request", None), "url", None)
        where = f" to {url.scheme}://{url.host}:{url.port or ''}" if url is not None else ""
        return TransientModelError(one_line(f"{provider}: connection failed{where}: {reason}", secrets=secrets))
    if isinstance(exc, sdk.APIResponseValidationError):
        problem = f"{provider}: response did not match the API schema: {exc.message}"
        return ModelError(one_line(problem, secrets=secrets))
    return ModelError(one_line(f"{provider}: {type(exc).__name__}: {exc}", secrets=secrets))


def _connection_failure(exc: BaseException) -> OSError | None:
    """The socket error (refused, reset, unreachable) under an SDK exception, if there is one.

    The SDKs' aiohttp transport reports every aiohttp connection error, a refused connection
    included, as httpx's `ConnectTimeout`, so the SDK calls it a timeout. The cause chain still
    holds the real error; a user chasing a wrong port deserves "connection failed", not "timed out".
    """
    seen = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run awaitables concurrently and return their results in order.

    On the first failure the others are cancelled (no point paying for samples we will throw away)
    and that failure is raised as is, not wrapped in an ExceptionGroup.
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    if not tasks:
        return []
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    if failed:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        raise failed[0].exception()
    return [t.result() for t in tasks]


async def _close_at_loop_shutdown(client: Any) -> AsyncIterator[None]:
    """Close `client` when its event loop shuts down.

    `asyncio.run` (and `asyncio.Runner`) finalise every suspended async generator on the loop
    before closing it (`loop.shutdown_asyncgens()`), so parking this generator at its `yield`
    gives the client's connections a clean close on the loop they belong to, even when the
    caller (an `Agent.run`, a script's `asyncio.run(...)`) never closes it explicitly.
    """
    try:
        yield
    finally:
        await client.close()


class HostedChatModel(AsyncChatModel):
    """An `AsyncChatModel` backed by an official SDK's async client.

    An async HTTP client belongs to the event loop it first ran on, so this keeps one client per
    running loop, closed when that loop shuts down (or by `aclose()`). `generate()` runs each call
    on a fresh loop (`asyncio.run`), so repeated blocking calls never share a dead client.
    """

    provider: str = ""
    # Set by each provider's __init__; `client_options` reads them.
    base_url: str | None
    timeout_s: float
    extra_headers: dict[str, str]
    http_transport: str
    _api_key: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every provider's `agenerate` reports an unreadable response as one line with the model,
        # the HTTP status and a body excerpt (see `reporting_malformed_responses`).
        super().__init_subclass__(**kwargs)
        agenerate = cls.__dict__.get("agenerate")
        if agenerate is not None and not getattr(agenerate, "_reports_malformed", False):
            cls.agenerate = reporting_malformed_responses(agenerate)

    def __init__(self) -> None:
        # loop -> (client, the generator that closes it at loop shutdown; kept here because the
        # loop itself only holds a weak reference to it)
        self._clients: dict[asyncio.AbstractEventLoop, tuple[Any, AsyncIterator[None]]] = {}
        self._clients_lock = threading.Lock()
        self._warned: set[str] = set()

    def _make_client(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def client_options(self, sdk: Any) -> dict[str, Any]:
        """The keyword arguments for the `anthropic`/`openai` (`sdk`) async client of this model."""
        return dict(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=0,  # the collector owns retries
            timeout=self.timeout_s,
            default_headers=self.extra_headers or None,
            http_client=http_client(sdk, self.http_transport, self.timeout_s),
        )

    async def client(self) -> Any:
        """The SDK client for the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            # A loop that was closed without an orderly shutdown cannot use its client any more.
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            entry = self._clients.get(loop)
            created = entry is None
            if created:
                client = self._make_client()
                entry = self._clients[loop] = (client, _close_at_loop_shutdown(client))
        if created:
            await anext(entry[1])  # runs to the `yield` at once: the loop now tracks the generator
        return entry[0]

    async def aclose(self) -> None:
        """Close the running loop's client (its connection pool) now."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.pop(loop, None)
        if entry is not None:
            await entry[1].aclose()

    def generate(self, messages, tools=None, **kwargs) -> list[Turn]:
        """Blocking `agenerate`: a fresh event loop per call, whose client closes with it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(messages, tools, **kwargs))
        # Called from code that already runs a loop (a notebook cell): asyncio.run cannot nest,
        # so the call runs on its own loop in a worker thread while this one waits.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.agenerate(messages, tools, **kwargs)).result()

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log a warning the first time it applies to this model, not on every call."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def __repr__(self) -> str:
        # Never the API key.
        return f"{type(self).__name__}({getattr(self, 'uri', '')!r})"
