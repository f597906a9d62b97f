"""The service as the README recommends for one Redis that stays one: PARTITIONS=1 with
FEED_WINDOW=48000, on a private redis-server (the partition count is recorded in Redis at first
start, so this service cannot share the integration tests' server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from app import keys
from tests.redis_server import RedisServer
from tests.reliability.harness import services
from tests.service import Service

ONE_PARTITION = {"PARTITIONS": "1", "FEED_WINDOW": "48000"}


@pytest.fixture(scope="session")
def one_partition_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def service(one_partition_redis: RedisServer) -> Iterator[Service]:
    svc = Service(one_partition_redis.url, ADMIN_TOKEN="one-partition-token", **ONE_PARTITION)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def pair_of_services(one_partition_redis: RedisServer) -> Iterator[list[Service]]:
    """Two gunicorn masters, 2 workers each, on the one-partition store (the reliability checks)."""
    with services(one_partition_redis.url, 2, workers=2, ADMIN_TOKEN="one-partition-token", **ONE_PARTITION) as svcs:
        yield svcs


@pytest.fixture
def rdb(one_partition_redis: RedisServer) -> redis.Redis:
    client = redis.Redis(port=one_partition_redis.port)
    # Our own server: nothing here was created by anyone else. The recorded partition count stays.
    for key in client.scan_iter(count=1000):
        if key != keys.PARTITIONS_KEY.encode():
            client.delete(key)
    return client
