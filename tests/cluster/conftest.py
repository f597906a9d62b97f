"""A real local Redis Cluster (tests/redis_cluster.py) for the tests in this package.

One cluster of 3 masters with a replica each serves the whole session. Every test here is marked
`cluster` and runs in `make test`; it is skipped only when redis-server/redis-cli cannot run a cluster.
Tests that kill nodes leave the cluster healthy again (all nodes up, replicas linked), so roles may
have changed between tests: read them live (masters(), replica_of(), node_for_key()).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app import keys
from tests.helpers import PARTITIONS
from tests.redis_cluster import RedisCluster, cluster_support
from tests.reliability.harness import services
from tests.service import Service

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    reason = cluster_support()
    if reason is not None:
        pytest.skip(f"no Redis Cluster here: {reason}")
    # As deploy/ configures it: the other masters keep serving while one master's slots fail over.
    cluster = RedisCluster(masters=3, replicas=1, extra=("--cluster-require-full-coverage", "no"))
    yield cluster
    cluster.close()


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session cluster, healthy and empty: every node up, replicas linked, every master flushed."""
    redis_cluster.wait_ok(30)
    redis_cluster.flushall()  # our own cluster: nothing here was created by anyone else
    return redis_cluster


# -- the service on the cluster: the fixtures the integration and reliability tests ask for ------

ADMIN_TOKEN = "cluster-token"


def cluster_env(cluster: RedisCluster, **extra: str) -> dict[str, str]:
    return {"REDIS_MODE": "cluster", "ADMIN_TOKEN": ADMIN_TOKEN, **extra}


@pytest.fixture(scope="session")
def service(redis_cluster: RedisCluster) -> Iterator[Service]:
    svc = Service(redis_cluster.url, **cluster_env(redis_cluster))
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def pair_of_services(redis_cluster: RedisCluster) -> Iterator[list[Service]]:
    """Two gunicorn masters, 2 workers each, on the cluster: two replicas behind a balancer."""
    with services(redis_cluster.url, 2, workers=2, **cluster_env(redis_cluster)) as svcs:
        yield svcs


@pytest.fixture
def rdb(cluster: RedisCluster) -> Iterator[redis.RedisCluster]:
    """redis-py's cluster client: single-key commands reach each key's master, scans every master."""
    client = cluster.client()
    yield client
    client.close()


@pytest.fixture
def keyname() -> Callable[[str], str]:
    """A message key as a cluster holds it: the name plus its partition's hash tag."""
    def tagged(name: str) -> str:
        return name + keys.partition_of(*keys.message_key_human(name), PARTITIONS, cluster=True).key_suffix
    return tagged


@pytest.fixture
def http(service: Service, rdb: redis.RedisCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        yield client
