from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from app.config import Settings
from app.store import Store
from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture(params=["fakeredis", "redis-server"])
async def store(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Store]:
    """The same test body runs on fakeredis (Lua via lupa) and on a real redis-server."""
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        redis.Redis(port=server.port).flushdb()
        client = aioredis.Redis.from_url(server.url)
    store = Store(client, settings)
    yield store
    await store.close()
