"""A real local Redis Cluster (tests/redis_cluster.py) for the tests in this package.

One cluster of 3 masters with a replica each serves the whole session. Every test here is marked
`cluster` and runs in `make test`; it is skipped only when redis-server/redis-cli cannot run a cluster.
Tests that kill nodes leave the cluster healthy again (all nodes up, replicas linked), so roles may
have changed between tests: read them live (masters(), replica_of(), node_for_key()).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_cluster import RedisCluster, cluster_support

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
    cluster = RedisCluster(masters=3, replicas=1)
    yield cluster
    cluster.close()


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session cluster, healthy and empty: every node up, replicas linked, every master flushed."""
    redis_cluster.wait_ok(30)
    redis_cluster.flushall()  # our own cluster: nothing here was created by anyone else
    return redis_cluster
