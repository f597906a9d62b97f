"""Fast preloads: exactly what Store.append_message does for each body, sent a batch per round
trip with Store.append_messages, so this stays in step with the service's append contract.
On a cluster (settings.cluster) the batch goes out as the service sends it: one write per node."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import replace
from itertools import islice
from typing import Any

import redis.asyncio as aioredis

from app import models
from app.config import Settings
from app.models import AppendPlan
from app.store import Store


class Appender:
    def __init__(self, client: aioredis.Redis | None, settings: Settings, batch: int = 1000,
                 store: Store | None = None) -> None:
        self.client = client
        self.settings = settings
        self.batch = batch
        self._store = store if store is not None else Store(client, settings)

    def commands(self, bodies: Iterable[dict[str, Any]]) -> list[AppendPlan]:
        """Validated appends for `bodies`, exactly as POST /api/comments plans them."""
        return [models.plan_append(body, self.settings) for body in bodies]

    async def run(self, plans: Sequence[AppendPlan]) -> list[int]:
        """Send prepared appends, pipelined; returns the timestamps. Any refusal is an error."""
        stamps: list[int] = []
        for start in range(0, len(plans), self.batch):
            results = await self._store.append_messages(plans[start:start + self.batch])
            refused = [r for r in results if r.status != "ok"]
            if refused:
                raise RuntimeError(f"preload append refused: {refused[0]!r}")
            stamps += [r.timestamp for r in results]
        return stamps
    async def append(self, bodies: Iterable[dict[str, Any]], concurrency: int = 3) -> list[int]:
        """Store `bodies`, a batch at a time so memory stays flat for big preloads. A few batches are
        in flight at once: Redis runs one while Python builds the next. Returns the timestamps."""
        it = iter(bodies)
        stamps: list[int] = []

        async def worker() -> None:
            while chunk := list(islice(it, self.batch)):
                stamps.extend(await self.run(self.commands(chunk)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return stamps


def preload(redis_url: str, settings: Settings, bodies: Iterable[dict[str, Any]]) -> list[int]:
    """Blocking form of Appender.append for the (synchronous) orchestrator."""

    async def go() -> list[int]:
        if settings.cluster:  # the service's own cluster wiring: slot map, one pipeline per node
            store = Store.from_settings(replace(settings, redis_url=redis_url))
            try:
                return await Appender(None, settings, store=store).append(bodies)
            finally:
                await store.close()
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await Appender(client, settings).append(bodies)
        finally:
            await client.aclose()

    return asyncio.run(go())
