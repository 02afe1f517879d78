"""A scripted HTTP server on 127.0.0.1 for testing API clients against the real wire format.

The provider-specific servers (`tests.wire.anthropic_server`, `tests.wire.openai_server`) add
their routes to this base. A test queues the responses the server will give, in order, and reads
back what the client sent:

    with ScriptedOpenAIServer() as server:
        server.enqueue(chat_completion([choice("hi")]))          # 200 with this JSON body
        server.enqueue((429, error_body, {"retry-after": "3"}))  # status, body, headers
        server.enqueue(lambda request: ...)                      # computed from the request
        ... client(base_url=server.base_url) ...
        server.requests[0].json["messages"]

A queued callable receives the `RecordedRequest` and returns either of the other two forms; it
is how a test makes the server check what it received (as the real API would) and answer 400
otherwise. An async callable may wait before answering (e.g. until several requests are in
flight, which proves a client really sends them concurrently). When the queue is empty the
server asks `responder` (if one was given) or answers 400 with a message that says nothing was
queued, so a test that under-scripts fails loudly.

The server runs uvicorn in a background thread on a port the OS picks, so tests can run in
parallel and never collide.
"""

from __future__ import annotations

import inspect
import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


@dataclass
class RecordedRequest:
    """One request as the server received it. Header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    query: dict[str, str] = field(default_factory=dict)


# What a test can queue: a JSON body (status 200), (status, body[, headers]), or a callable that
# computes one of those from the request.
Reply = Union[dict, list, tuple]
Scripted = Union[Reply, Callable[[RecordedRequest], Reply]]


class ScriptedServer:
    """Base class: records every request and answers from a queue. Subclasses add routes."""

    def __init__(self, responder: Callable[[RecordedRequest], Reply] | None = None):
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Scripted] = deque()
        self.app = FastAPI()
        self.add_routes(self.app)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port: int | None = None

    # --- subclass hooks -------------------------------------------------------------------

    def add_routes(self, app: FastAPI) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def not_found_body(self, message: str) -> dict:
        """The provider's error body shape for a request the test did not script."""
        return {"error": {"message": message, "type": "invalid_request_error"}}

    @property
    def base_url(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- scripting ------------------------------------------------------------------------

    def enqueue(self, *replies: Scripted) -> None:
        """Queue replies, served in order, one per request."""
        self._queue.extend(replies)

    def reset(self) -> None:
        """Forget queued replies and recorded requests (for a server shared by several tests)."""
        self._queue.clear()
        self.requests.clear()

    @property
    def pending(self) -> int:
        """Replies queued but not yet served."""
        return len(self._queue)

    async def handle(self, request: Request) -> Response:
        """Record the request and answer with the next scripted reply."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = raw.decode("utf-8", "replace")
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body,
            query=dict(request.query_params),
        )
        self.requests.append(recorded)
        if self._queue:
            reply = self._queue.popleft()
        elif self.responder is not None:
            reply = self.responder
        else:
            message = f"scripted server: no reply queued for {request.method} {request.url.path}"
            return JSONResponse(self.not_found_body(message), status_code=400)
        if callable(reply):
            reply = reply(recorded)
            if inspect.isawaitable(reply):  # an async callable may wait, e.g. for other requests
                reply = await reply
        return to_response(reply)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        # Bind first, so the port is known before the server thread starts and never races.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True, name="scripted-server"
        )
        self._thread.start()
        deadline = 10.0
        while not self._server.started and deadline > 0 and self._thread.is_alive():
            threading.Event().wait(0.01)
            deadline -= 0.01
        if not self._server.started:
            raise RuntimeError("scripted server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def to_response(reply: Reply) -> Response:
    """A queued reply as an HTTP response: a JSON body, or (status, body[, headers])."""
    if isinstance(reply, tuple):
        status, body, *rest = reply
        headers = rest[0] if rest else {}
        if isinstance(body, (dict, list)):
            return JSONResponse(body, status_code=status, headers=headers)
        return Response(content=body or b"", status_code=status, headers=headers, media_type="text/plain")
    return JSONResponse(reply)
