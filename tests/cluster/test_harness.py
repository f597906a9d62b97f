"""The cluster harness does what tests and bench rely on: topology, a cluster client, failover, rejoin."""

from __future__ import annotations

import itertools
import time

import redis

from tests.redis_cluster import SLOTS, RedisCluster

FAILOVER_TIMEOUT = 15  # seconds; with cluster-node-timeout 1000 ms a failover takes about 2-3 s


def acknowledged_write(cluster: RedisCluster, key: str, value: str) -> int:
    """SET on the key's master, then WAIT until one replica has it; answers the master's port."""
    port = cluster.node_for_key(key)
    with redis.Redis(port=port, single_connection_client=True) as client:  # WAIT covers this connection's writes
        assert client.set(key, value)
        assert client.wait(1, 1000) == 1
    return port


def read_on_replica(port: int, key: str) -> bytes | None:
    with redis.Redis(port=port, single_connection_client=True) as client:
        client.execute_command("READONLY")  # else a cluster replica answers MOVED
        value: bytes | None = client.get(key)
        return value


def test_three_masters_each_with_a_replica_and_every_slot(cluster: RedisCluster) -> None:
    masters = cluster.masters()
    assert len(masters) == 3 and len(cluster.ports) == 6
    covered = sorted(r for _, ranges in masters for r in ranges)
    assert covered[0][0] == 0 and covered[-1][1] == SLOTS - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(covered))  # no gap, no overlap
    replicas = [cluster.replica_of(port) for port, _ in masters]
    assert len({*replicas, *(port for port, _ in masters)}) == 6
    for port in cluster.ports:
        with cluster.node(port) as client:
            info = client.cluster("INFO")
            assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == SLOTS
    for port, _ in masters:
        with cluster.node(port) as client:
            assert client.info("replication")["connected_slaves"] == 1
    assert cluster.node_for_slot(0) == masters[0][0] and cluster.node_for_slot(SLOTS - 1) == masters[-1][0]


def test_key_written_through_the_cluster_client_is_readable(cluster: RedisCluster) -> None:
    with cluster.client() as client:
        keys = {f"harness:{i}": f"value {i}" for i in range(20)}  # spread over the three masters
        for key, value in keys.items():
            assert client.set(key, value)
        assert {key: client.get(key) for key in keys} == {k: v.encode() for k, v in keys.items()}
    assert len({cluster.node_for_key(key) for key in keys}) == 3
    with cluster.node(cluster.node_for_key("harness:0")) as node:
        assert node.get("harness:0") == b"value 0"  # stored on the master CLUSTER NODES names for its slot


def test_killed_master_is_replaced_by_its_replica_and_keeps_an_acknowledged_write(cluster: RedisCluster) -> None:
    key = "harness:failover"
    master = acknowledged_write(cluster, key, "kept")
    replica = cluster.replica_of(master)
    with cluster.client() as client:  # made before the kill: it must find the promoted node by itself
        assert client.get(key) == b"kept"
        started = time.monotonic()
        cluster.kill(master)
        try:
            promoted = cluster.wait_failover(master, FAILOVER_TIMEOUT)
            assert time.monotonic() - started < FAILOVER_TIMEOUT
            assert promoted == replica and cluster.node_for_key(key) == replica
            assert master not in [port for port, _ in cluster.masters()]
            assert client.get(key) == b"kept"
        finally:
            cluster.restart(master)
            cluster.wait_ok(30)


def test_restarted_master_rejoins_as_replica_of_the_promoted_node(cluster: RedisCluster) -> None:
    key = "harness:rejoin"
    master = acknowledged_write(cluster, key, "synced")
    cluster.kill(master)
    try:
        promoted = cluster.wait_failover(master, FAILOVER_TIMEOUT)
    finally:
        cluster.restart(master)
    cluster.wait_ok(30)
    assert cluster.replica_of(promoted) == master
    assert master not in [port for port, _ in cluster.masters()]
    with cluster.node(master) as node:
        replication = node.info("replication")
        assert replication["role"] == "slave" and replication["master_port"] == promoted
        assert replication["master_link_status"] == "up"
    assert read_on_replica(master, key) == b"synced"  # resynced from the promoted node (it kept no data itself)
