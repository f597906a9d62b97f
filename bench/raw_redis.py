"""Phase 5: the storage tier alone. Pipelined EVALSHA of the append script, the same message mix
as the HTTP POST test, so its rate bounds what any number of web workers could reach."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from app.config import Settings

from . import redis_probe
from .payloads import post_mix
from .preload import Appender

USERS = 1000  # as bench/wrk/post_comment.lua


async def _timed_appends(redis_url: str, settings: Settings, messages: int, pipelines: int) -> tuple[int, float]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        appender = Appender(client, settings)
        rng = random.Random(3)
        calls = appender.commands(post_mix(rng, i, USERS) for i in range(messages))  # built before timing
        slices = [calls[i::pipelines] for i in range(pipelines)]
        started = time.perf_counter()
        done = await asyncio.gather(*(appender.run(part) for part in slices))
        return sum(len(stamps) for stamps in done), time.perf_counter() - started
    finally:
        await client.aclose()


def run(client: redis.Redis, redis_url: str, settings: Settings, messages: int, pipelines: int = 3) -> dict[str, Any]:
    before = redis_probe.snapshot(client)
    appended, seconds = asyncio.run(_timed_appends(redis_url, settings, messages, pipelines))
    cost = redis_probe.cost(before, redis_probe.snapshot(client))
    usec = cost.usec_per_call("evalsha") or 0.0
    return {
        "messages": appended,
        "pipelines": pipelines,
        "seconds": round(seconds, 3),
        "appends_per_s": round(appended / seconds),
        "redis_usec_per_append": round(usec, 2),
        "redis_cpu_us_per_append": round(cost.cpu_us_per(appended) or 0.0, 2),
        "single_thread_ceiling_per_s": round(1e6 / usec) if usec else None,
    }
