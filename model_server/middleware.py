"""Pure-ASGI request middleware: request id, body-size guard, prediction metrics and the access log.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it adds no task or stream per request, which
matters on the hot path.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_server.errors import PayloadTooLarge
from model_server.metrics import ServerMetrics

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("model_server.access")


def prediction_endpoint(path: str) -> str | None:
    """The ``endpoint`` label for prediction paths; None for health, metadata and metrics."""
    if path == "/predict":
        return "predict"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "infer"
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics, max_body_bytes: int, access_log_all: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.access_log_all = access_log_all

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        endpoint = prediction_endpoint(scope["path"])
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        if endpoint is not None:
            self.metrics.inflight_now.inc()
        try:
            if _declared_length(scope) > self.max_body_bytes:
                await _reject_too_large(send_with_id, request_id, self.max_body_bytes)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if endpoint is not None:
                self.metrics.inflight_now.dec()
                self.metrics.observe_request(endpoint, status, elapsed)
            if status >= 400 or self.access_log_all:
                access_log.log(
                    logging.WARNING if status >= 500 else logging.INFO,
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _SAFE_REQUEST_ID.match(value):
            return str(value.decode())
    return uuid.uuid4().hex


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _reject_too_large(send: Send, request_id: str, limit: int) -> None:
    error = PayloadTooLarge(f"request body is larger than {limit} bytes; split the batch")
    body: Any = orjson.dumps(error.body(request_id))
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
