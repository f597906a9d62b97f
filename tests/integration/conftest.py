from __future__ import annotations

from collections.abc import Iterator

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


