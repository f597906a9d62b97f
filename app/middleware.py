"""Observe: per request, a request id (X-Request-ID when the client sends a usable one, else made
here; echoed in the response and bound to every log record of the request), the request metrics
and the access log line."""

from __future__ import annotations

import os
import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs, metrics

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")  # safe to echo and to log as is


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _REQUEST_ID_RE.fullmatch(value):
                return value.decode()
            break
    return os.urandom(8).hex()  # secrets.token_hex(8), without its two Python layers


class Observe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logs.access_logger()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid = request_id(scope["headers"])
        status = 500  # what the client gets when the app raises before answering
        header = (REQUEST_ID_HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")  # a template, never the raw path: bounded labels
            metrics.observe_request(scope["method"], template, status, seconds)
            self.log.info("request", method=scope["method"], route=template, status=status,
                          duration_ms=round(seconds * 1000, 3), request_id=rid)
            structlog.contextvars.unbind_contextvars("request_id")
        return None
