"""ASGI middleware around the app's routes: a request id on every response and log line, the body
size cap (413 before the body is read in full), and an OpenAI-shaped 500 for anything unexpected
(logged with its traceback and request id).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Container
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coe.api.errors import error_body
from coe.logs import GRAPH, REQUEST_ID
from coe.metrics import UNKNOWN_GRAPH, ApiMetrics
from coe.pipeline import CALL_LISTENER

log = logging.getLogger("coe.api")


class BodyTooLarge(HTTPException):
    """More body than the cap arrived (raised from ``receive``; FastAPI passes HTTPExceptions on)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body too large: at most {limit} bytes are accepted.")


class _Exchange:
    """One request's response side: adds the id to the headers, knows whether it has started."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self.request_id = request_id
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = [*message.get("headers", []), (b"x-request-id", self.request_id.encode())]
            message = {**message, "headers": headers}
        await self._send(message)

    async def error(self, status: int, body: dict[str, Any]) -> None:
        """Send an error response, unless a response has already begun."""
        if self.started:
            return
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload})


class RequestGuard:
    """Request id, body cap and last-resort error handling for every HTTP request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        exchange = _Exchange(send, request_id)
        token = REQUEST_ID.set(request_id)
        try:
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body_bytes:
                # refused from the header alone: the body is never read
                detail = BodyTooLarge(self.max_body_bytes).detail
                await exchange.error(413, error_body(detail, "invalid_request_error", "request_too_large"))
                return
            await self.app(scope, self._capped(receive), exchange.send)
        except Exception:
            log.exception("internal error")
            message = "The server had an error while processing your request."
            await exchange.error(500, error_body(message, "server_error"))
        finally:
            REQUEST_ID.reset(token)

    def _capped(self, receive: Receive) -> Receive:
        """``receive`` that fails once more than the cap has arrived (bodies sent without a length)."""
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        return capped


CHAT = "/v1/chat/completions"
SSE = b"text/event-stream"
ERROR_EVENT = b'data: {"error"'


class Instrument:
    """Chat completion requests into ``metrics``: by graph (``GRAPH``, set by the handler; a name
    no graph serves counts as ``unknown``) and status, with their duration and, for streams, the
    time to the first event; and every expert call they make (``CALL_LISTENER``). Counter and
    histogram updates only: nothing here waits."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, served: Callable[[], Container[str]]) -> None:
        self.app = app
        self.metrics = metrics
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        first: float | None = None
        status = "500"
        streaming = False

        async def observed(message: Message) -> None:
            nonlocal first, status, streaming
            if message["type"] == "http.response.start":
                status = str(message["status"])
                streaming = any(k == b"content-type" and v.startswith(SSE) for k, v in message["headers"])
            elif streaming and message.get("body"):
                if first is None:
                    first = time.perf_counter()
                elif message["body"].startswith(ERROR_EVENT):
                    status = "stream_error"
            await send(message)

        graph_token = GRAPH.set("-")
        listener_token = CALL_LISTENER.set(self.metrics.observe_call)
        try:
            await self.app(scope, receive, observed)
        finally:
            graph = GRAPH.get()
            GRAPH.reset(graph_token)
            CALL_LISTENER.reset(listener_token)
            self._record(graph, status, started, first)

    def _record(self, graph: str, status: str, started: float, first: float | None) -> None:
        try:
            known = graph in self.served()
        except AttributeError:  # before start-up finished
            known = False
        label = graph if known else UNKNOWN_GRAPH
        self.metrics.requests.labels(label, status).inc()
        self.metrics.latency.labels(label).observe(time.perf_counter() - started)
        if first is not None:
            self.metrics.ttft.labels(label).observe(first - started)
