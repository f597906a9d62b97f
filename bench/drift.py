"""Burst clock drift: appends as fast as one process sends them (Store.append_message, many in
flight, no HTTP) for a few seconds, each acknowledged timestamp compared with the wall clock at its
acknowledgement; then one more message, as the first one after the burst."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

import redis
import uvloop

from app import models
from app.config import Settings
from app.store import Store, open_store

from .payloads import post_mix

USERS = 1000  # as bench/wrk/post_comment.lua
_TEMPLATES = 500  # bodies cut once; each append gets a fresh id


@dataclass
class _Burst:
    settings: Settings
    templates: list[dict[str, Any]]
    ids: itertools.count[int]
    max_lead_ms: float = float("-inf")
    acknowledged: int = 0
    refused: int = 0

    async def append(self, store: Store) -> float | None:
        """One append; returns its timestamp minus the wall clock at acknowledgement (ms)."""
        n = next(self.ids)
        body = {**self.templates[n % len(self.templates)], "id": f"burst{n}"}
        result = await store.append_message(models.plan_append(body, self.settings))
        lead = result.timestamp - time.time() * 1000
        if result.status != "ok":
            self.refused += 1
            return None
        self.acknowledged += 1
        return lead


async def _run(settings: Settings, seconds: float, concurrency: int, max_messages: int) -> dict[str, Any]:
    rng = random.Random(4)
    burst = _Burst(settings, [post_mix(rng, i, USERS) for i in range(_TEMPLATES)], itertools.count())
    async with open_store(settings) as store:
        await burst.append(store)  # loads the script, opens a connection: not part of the burst
        burst.acknowledged = 0

        async def writer(stop_at: float) -> None:
            while time.monotonic() < stop_at and burst.acknowledged + burst.refused < max_messages:
                lead = await burst.append(store)
                if lead is not None:
                    burst.max_lead_ms = max(burst.max_lead_ms, lead)

        started = time.monotonic()
        await asyncio.gather(*(writer(started + seconds) for _ in range(concurrency)))
        elapsed, appends = time.monotonic() - started, burst.acknowledged
        after = await burst.append(store)
    return {
        "config": {"seconds": seconds, "concurrency": concurrency, "max_messages": max_messages},
        "appends": appends,
        "refused": burst.refused,
        "elapsed_s": round(elapsed, 2),
        "appends_per_s": round(appends / elapsed),
        "max_lead_ms": round(burst.max_lead_ms, 1) if appends else None,
        "first_after_lead_ms": None if after is None else round(after, 1),
    }


def run(client: redis.Redis, settings: Settings, seconds: float, concurrency: int = 32,
        max_messages: int = 200_000) -> dict[str, Any]:
    client.flushall()  # our private server: the store's clock starts with no lead from earlier phases
    return uvloop.run(_run(settings, seconds, concurrency, max_messages))
