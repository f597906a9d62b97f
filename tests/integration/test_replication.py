"""REDIS_WAIT_REPLICAS on one Redis with a replica: a 200 means the replica has the write, even when
the write had to be run again after NOSCRIPT (a restarted or freshly promoted node)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hiredis import pack_command

from app import models
from app.config import Settings
from app.errors import StoreUnavailable
from app.store import Store
from tests.helpers import human, locate
from tests.redis_server import RedisServer


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer("--repl-diskless-sync-delay", "0")  # the replica syncs at once, not after 5 s
    replica = RedisServer("--replicaof", "127.0.0.1", str(primary.port))
    try:
        deadline = time.monotonic() + 10
        while redis.Redis(port=replica.port).info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        yield primary, replica
    finally:
        replica.close()
        primary.close()


async def test_a_write_run_again_after_noscript_is_acknowledged_by_the_replica(
        primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    primary, replica = primary_and_replica
    settings = dataclasses.replace(Settings(redis_url=primary.url), redis_wait_replicas=1)
    store = Store.from_settings(settings)
    batches: list[bytes] = []
    link = store.wire.link  # type: ignore[union-attr]
    send = link.send

    async def spy(packed: bytes, count: int) -> list[Any]:
        batches.append(packed)
        return await send(packed, count)

    link.send = spy  # type: ignore[method-assign]
    try:
        redis.Redis(port=primary.port).script_flush()  # as after a restart or a failover
        body = human(text="acknowledged twice over")
        result = await store.append_message(models.plan_append(body, settings))
        assert result.status == "ok"
        assert locate(redis.Redis(port=replica.port), body["id"]) is not None  # on the replica at the 200
        writes = [b for b in batches if b"EVALSHA" in b]
        wait = pack_command(("WAIT", 1, settings.wait_ms))
        assert len(writes) == 2 and all(b.endswith(wait) for b in writes)  # the rerun waited for the replica too
    finally:
        await store.close()


async def test_too_few_replicas_answer_503(primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    primary, _ = primary_and_replica
    settings = dataclasses.replace(Settings(redis_url=primary.url, redis_timeout_s=0.2), redis_wait_replicas=2)
    store = Store.from_settings(settings)
    try:
        with pytest.raises(StoreUnavailable, match="acknowledged by 1 of 2 replicas"):
            await store.append_message(models.plan_append(human(text="one replica short"), settings))
    finally:
        await store.close()
