"""Fast preloads: the append script run by pipelined EVALSHA, with exactly the KEYS/ARGV that
Store.append_message sends. Store itself builds them, on a recording stand-in for its client, so
this stays in step with the service whenever the script's contract changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import redis.asyncio as aioredis

from app import models
from app.config import Settings
from app.store import Store

Call = tuple[str, Sequence[Any], Sequence[Any]]  # script source, keys, args


class _RecordedScript:
    def __init__(self, source: str, calls: list[Call]) -> None:
        self.source = source
        self.calls = calls

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> list[bytes]:
        self.calls.append((self.source, keys, args))
        return [b"ok", b"0", b""]  # the reply shape Store.append_message parses


class _RecordingClient:
    """Duck-types the client Store registers its scripts on; calls are recorded, not sent."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def register_script(self, source: str) -> _RecordedScript:
        return _RecordedScript(source, self.calls)


class Appender:
    def __init__(self, client: aioredis.Redis, settings: Settings, batch: int = 1000) -> None:
        self.client = client
        self.settings = settings
        self.batch = batch
        self._recorder = _RecordingClient()
        self._store = Store(self._recorder, settings)  # type: ignore[arg-type]
        self._shas: dict[str, str] = {}

    async def commands(self, bodies: Iterable[dict[str, Any]]) -> list[Call]:
        """The EVALSHA calls that would store `bodies`, built by Store, nothing sent. The recorded
        script never suspends, so concurrent callers cannot interleave their records."""
        calls: list[Call] = []
        for body in bodies:
            await self._store.append_message(models.plan_append(body, self.settings))
            calls.append(self._recorder.calls.pop())
        return calls

    async def run(self, calls: Sequence[Call]) -> list[int]:
        """Send prepared calls, pipelined; returns the timestamps. Any refusal is an error."""
        stamps: list[int] = []
        for start in range(0, len(calls), self.batch):
            async with self.client.pipeline(transaction=False) as pipe:
                for source, keys, args in calls[start:start + self.batch]:
                    pipe.evalsha(await self._sha(source), len(keys), *keys, *args)
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
                stamps.extend(await self.run(await self.commands(chunk)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return stamps

    async def _sha(self, source: str) -> str:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = await self.client.script_load(source)
        return sha


def preload(redis_url: str, settings: Settings, bodies: Iterable[dict[str, Any]]) -> list[int]:
    """Blocking form of Appender.append for the (synchronous) orchestrator."""

    async def go() -> list[int]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await Appender(client, settings).append(bodies)
        finally:
            await client.aclose()

    return asyncio.run(go())
