"""The bare framework: what Starlette under our gunicorn settings costs with no storage at all.

POST /api/comments decodes the body with msgspec and answers the service's JSON
(`{"id","timestamp","status":"success","key"}`, timestamp from time.time()); GET /api/comments
answers a page body captured from our service for the same query. Comparing the service with this
separates the framework's share of a request from ours (validation, Redis, response assembly).

The GET bodies come from the directory named by BARE_POLL_DIR: `<limit>.json` is answered for
`?limit=<limit>` (the bench captures one file per GET kind it measures); another limit is a 404.
Started as `gunicorn -c gunicorn.conf.py bench.bare_app:app`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json"
POLL_DIR_ENV = "BARE_POLL_DIR"
_decoder = msgspec.json.Decoder()


def _key(body: dict[str, Any]) -> str:
    """The conv: key our service names in its answer, read from the body's fields as they come."""
    params = body.get("botParams") or {}
    if body.get("message-type") == "AI":
        human = f"{params.get('humanUsername')}:{params.get('humanColor')}"
        ai = f"{body.get('username')}:{body.get('color')}"
    else:
        human = f"{body.get('username')}:{body.get('color')}"
        ai = params.get("ais") or "platform:platform"
    return f"conv:{human}:{ai}"


async def post_comment(request: Request) -> Response:
    body = _decoder.decode(await request.body())
    answer = {"id": body.get("id") or secrets.token_hex(6), "timestamp": int(time.time() * 1000),
              "status": "success", "key": _key(body)}
    return Response(msgspec.json.encode(answer), media_type=JSON)


async def get_comments(request: Request) -> Response:
    int(request.query_params.get("after") or 0)  # parsed like any handler would, then unused
    page = request.app.state.pages.get(int(request.query_params.get("limit") or 200))
    if page is None:
        return Response(b'{"error":"no captured page for this limit"}', 404, media_type=JSON)
    return Response(page, media_type=JSON)


async def readyz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


def load_pages(directory: str | None) -> dict[int, bytes]:
    if not directory:
        return {}
    return {int(path.stem): path.read_bytes() for path in Path(directory).glob("*.json") if path.stem.isdigit()}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.pages = load_pages(os.environ.get(POLL_DIR_ENV))  # read once per worker, before any request
    yield


app = Starlette(
    routes=[
        Route("/api/comments", post_comment, methods=["POST"]),
        Route("/api/comments", get_comments, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ],
    lifespan=lifespan,
)
