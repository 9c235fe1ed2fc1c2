"""Pure-ASGI edge middleware: request-body size limits (413) and per-route Prometheus metrics.

Written as raw ASGI (not ``BaseHTTPMiddleware``) because it sits on every request of the hot path.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.scoring.telemetry import Metrics

logger = logging.getLogger(__name__)


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` once the streamed body passes the limit; answered with 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body must be at most {limit} bytes")


def _json_response(status: int, detail: str) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class EdgeMiddleware:
    """Enforce body limits and record request metrics.

    Parameters
    ----------
    app
        The wrapped ASGI app.
    metrics
        Where counts and latencies go.
    max_body_bytes
        Limit for every request except uploads.
    max_upload_bytes
        Limit for paths starting with ``upload_prefix``.
    upload_prefix
        Path prefix of upload endpoints (batch scoring, artifact upload).
    insecure_dev
        The service runs without requiring API keys: every request is logged with a warning.

    Notes
    -----
    The limit is checked twice: against ``Content-Length`` before the app runs, and on the bytes
    actually streamed (chunked bodies have no length, and a client may lie about it).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        max_upload_bytes: int,
        upload_prefixes: tuple[str, ...] = ("/v1/batch/", "/v1/models/upload"),
        insecure_dev: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_prefixes = upload_prefixes
        self.insecure_dev = insecure_dev

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        limit = (
            self.max_upload_bytes if path.startswith(self.upload_prefixes) else self.max_body_bytes
        )
        state: dict[str, Any] = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await _reply(
                    send_wrapper, 413, f"request body must be at most {limit} bytes; got {declared}"
                )
                return
            if declared == -1:
                await _reply(send_wrapper, 400, "content-length must be a non-negative integer")
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLargeError(limit)
                return message

            try:
                await self.app(scope, limited_receive, send_wrapper)
            except BodyTooLargeError as e:
                if state["started"]:
                    raise
                await _reply(send_wrapper, 413, str(e.detail))
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics = self.metrics
            metrics.child(metrics.requests, method, label, str(state["status"])).inc()
            metrics.child(metrics.latency, method, label).observe(time.perf_counter() - started)
            if self.insecure_dev:
                logger.warning(
                    "INSECURE-DEV, no API key required: %s %s -> %s", method, path, state["status"]
                )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


async def _reply(send: Send, status: int, detail: str) -> None:
    start, body = _json_response(status, detail)
    await send(start)
    await send(body)
