"""The ceiling: the least a Starlette app under our gunicorn settings can do per request.

POST stores the raw body with one EVALSHA (TIME + ZADD, return the timestamp); GET answers one
ZRANGEBYSCORE of up to `limit` members. No validation, no indexes: the service's throughput is
reported as a ratio to this. Commands go through the service's own transport (app.wire.Pipe), so
the ceiling is what one round trip costs at best, not what a plain redis-py call costs. Started as `gunicorn -c gunicorn.conf.py bench.ceiling_app:app`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from hiredis import pack_command
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import Settings
from app.wire import Pipe

MESSAGES = "ceiling:messages"  # zset: ts -> posted body
POLL = "ceiling:poll"  # zset the GET reads, preloaded by the benchmark with messages like ours
APPEND = """
local t = redis.call('TIME')
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], ts, ARGV[1])
return ts
"""
JSON = "application/json"


async def post_comment(request: Request) -> Response:
    state = request.app.state
    command = pack_command(("EVALSHA", state.append_sha, 1, MESSAGES, await request.body()))
    ts = (await state.pipe.send(command, 1))[0]
    return Response(b'{"status":"success","timestamp":%d}' % ts, media_type=JSON)


async def get_comments(request: Request) -> Response:
    after = int(request.query_params.get("after") or 0)
    limit = int(request.query_params.get("limit") or 50)
    command = pack_command(("ZRANGE", POLL, f"({after}", "+inf", "BYSCORE", "LIMIT", 0, limit))
    rows = (await request.app.state.pipe.send(command, 1))[0]
    return Response(b'{"messages":[' + b",".join(rows) + b"]}", media_type=JSON)


async def readyz(request: Request) -> Response:
    await request.app.state.redis.ping()
    return Response(b'{"status":"ok"}', media_type=JSON)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # Same pool bounds as the service's Store, opened after the fork like the service's.
    defaults = Settings()
    client = aioredis.Redis.from_url(
        os.environ.get("REDIS_URL", defaults.redis_url),
        max_connections=defaults.redis_max_connections,
        socket_timeout=defaults.redis_timeout_s,
    )
    app.state.redis = client
    app.state.append_sha = await client.script_load(APPEND)
    app.state.pipe = Pipe(client.connection_pool, defaults.redis_timeout_s)
    try:
        yield
    finally:
        await app.state.pipe.close()
        await client.aclose()


app = Starlette(
    routes=[
        Route("/api/comments", post_comment, methods=["POST"]),
        Route("/api/comments", get_comments, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ],
    lifespan=lifespan,
)
