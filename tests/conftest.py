from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import fakeredis
import httpx
import pytest
import redis
import redis.asyncio as aioredis

from app.config import Settings
from app.store import Store
from tests.redis_server import RedisServer
from tests.service import Service


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


# -- the service's HTTP tests: each package that runs them (integration, one_partition, cluster)
# -- gives its own `service` and `rdb`; the cluster overrides `keyname` and `http` too.


@pytest.fixture
def keyname() -> Callable[[str], str]:
    """A message key as this Redis holds it: on one Redis, the name itself (cluster: tests/cluster)."""
    return lambda name: name


@pytest.fixture
def http(service: Service, rdb: redis.Redis) -> Iterator[httpx.Client]:
    """A client of the package's service; `rdb` first, so each test starts from an empty store."""
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        yield client
