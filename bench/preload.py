"""Fast preloads: the append script run by pipelined EVALSHA, with exactly the KEYS/ARGV that
Store.append_message sends (Store.append_call builds them), so this stays in step with the
service whenever the script's contract changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import redis.asyncio as aioredis

from app import models
from app.config import Settings
from app.store import Store

Call = tuple[Sequence[Any], Sequence[Any]]  # keys, args of append_message.lua


class Appender:
    def __init__(self, client: aioredis.Redis, settings: Settings, batch: int = 1000) -> None:
        self.client = client
        self.settings = settings
        self.batch = batch
        self._store = Store(client, settings)  # only its pure append_call is used
        self._sha, self._source = self._store.append_script
        self._loaded = False

    def commands(self, bodies: Iterable[dict[str, Any]]) -> list[Call]:
        """The KEYS/ARGV that would store `bodies`, exactly as Store.append_message builds them."""
        return [self._store.append_call(models.plan_append(body, self.settings)) for body in bodies]

    async def run(self, calls: Sequence[Call]) -> list[int]:
        """Send prepared calls, pipelined; returns the timestamps. Any refusal is an error."""
        stamps: list[int] = []
        for start in range(0, len(calls), self.batch):
            if not self._loaded:
                await self.client.script_load(self._source)
                self._loaded = True
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args in calls[start:start + self.batch]:
                    pipe.evalsha(self._sha, len(keys), *keys, *args)
                replies = await pipe.execute()
            for reply in replies:
                if reply[0] != b"ok":
                    raise RuntimeError(f"preload append refused: {reply!r}")
                stamps.append(int(reply[1]))
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
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await Appender(client, settings).append(bodies)
        finally:
            await client.aclose()

    return asyncio.run(go())
