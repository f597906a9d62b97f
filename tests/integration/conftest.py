from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from tests.redis_server import RedisServer
from tests.service import Service


@pytest.fixture(scope="session")
def service(redis_server: RedisServer) -> Iterator[Service]:
    svc = Service(redis_server.url, ADMIN_TOKEN="integration-token")
    yield svc
    svc.stop()


@pytest.fixture
def rdb(redis_server: RedisServer) -> redis.Redis:
    client = redis.Redis(port=redis_server.port)
    client.flushdb()  # our own server: nothing here was created by anyone else
    return client


@pytest.fixture
def keyname() -> Callable[[str], str]:
    """A message key as this Redis holds it: on one Redis, the name itself (cluster: tests/cluster)."""
    return lambda name: name


@pytest.fixture
def http(service: Service, rdb: redis.Redis) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        yield client
