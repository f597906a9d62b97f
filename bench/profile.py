"""Where a worker's CPU goes on the hot paths: pyinstrument over the service's ASGI app called
in-process (no HTTP client in the samples), a few requests in flight like a loaded worker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import uvloop
from pyinstrument import Profiler
from starlette.types import ASGIApp, Message

from app.config import Settings
from app.main import create_app
from app.models import encode

from .payloads import post_mix


async def _request(app: ASGIApp, method: str, path: str, query: str = "", body: bytes = b"") -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _drive(requests: list[Callable[[], Awaitable[int]]], in_flight: int) -> None:
    queue = iter(requests)

    async def worker() -> None:
        for make in queue:
            status = await make()
            if status != 200:
                raise RuntimeError(f"profiled request answered {status}")

    await asyncio.gather(*(worker() for _ in range(in_flight)))


async def _profile_all(redis_url: str, poll_after: int, requests: int, in_flight: int,
                       out_dir: Path) -> dict[str, Path]:
    app = create_app(Settings(redis_url=redis_url, log_level="warning"))  # as the bench runs gunicorn
    rng = random.Random(9)
    warmup = max(1, requests // 10)
    bodies = [encode(post_mix(rng, i, 1000)) for i in range(warmup + requests)]  # fresh ids: no duplicates
    # The poll goes first: after the POSTs its messages would no longer be among the recent copies,
    # and it would take the slower stream-index path.
    cases: dict[str, list[Callable[[], Awaitable[int]]]] = {
        "poll": [partial(_request, app, "GET", "/api/comments", f"after={poll_after}&limit=50")] * (warmup + requests),
        "post": [partial(_request, app, "POST", "/api/comments", body=b) for b in bodies],
    }
    written = {}
    async with app.router.lifespan_context(app):
        for name, calls in cases.items():
            await _drive(calls[:warmup], in_flight)  # not profiled: first calls load scripts, fill pools
            # Async mode off: samples show what the CPU runs; uvloop's own work and idle waits for
            # Redis show as the event loop's [self] time.
            profiler = Profiler(interval=0.0002, async_mode="disabled")
            with profiler:
                await _drive(calls[warmup:], in_flight)
            path = out_dir / f"profile-{name}.txt"
            path.write_text(profiler.output_text(unicode=True, time="percent_of_total", flat=True) + "\n"
                            + profiler.output_text(unicode=True, time="percent_of_total"))
            written[name] = path
    return written


def run(redis_url: str, poll_after: int, out_dir: Path, requests: int = 3000, in_flight: int = 8) -> dict[str, Path]:
    """Profiles POST /api/comments and a 50-message GET /api/comments?after=; returns the text files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return uvloop.run(_profile_all(redis_url, poll_after, requests, in_flight, out_dir))  # as the workers run
