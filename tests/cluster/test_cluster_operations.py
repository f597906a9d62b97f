"""Operating the service on a cluster: what an operator and a prober see, and the cases only a
cluster has (keys spread over masters, scripts lost on every node, prefix scans on every master)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import redis
from redis.crc import key_slot

from app import keys
from tests.cluster.conftest import ADMIN_TOKEN
from tests.helpers import (
    ETERNAL,
    ETERNAL_COLOR,
    HUMAN,
    HUMAN_COLOR,
    PARTITIONS,
    godmode_question,
    godmode_session_posts,
    human,
    ok,
)
from tests.redis_cluster import RedisCluster
from tests.service import ROOT, Service

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PEOPLE = [(f"Spread{i}", f"{30000000 + i:09d}") for i in range(40)]


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "REDIS_MODE": "cluster"}
    return subprocess.run([sys.executable, "-m", "app", *args], check=False, cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=60)


def post_spread(http: httpx.Client) -> list[str]:
    """One message from each of 40 humans: every partition, so every master, gets some."""
    return [ok(http.post("/api/comments", json=human(text=f"from {user}", user=user, color=color)))["key"]
            for user, color in PEOPLE]


def test_readyz_reports_the_cluster_state(http: httpx.Client) -> None:
    assert ok(http.get("/readyz")) == {"status": "ok", "redis": True, "cluster": "ok"}


def test_message_keys_carry_their_partitions_tag_and_prefix_scans_still_list_them(
        http: httpx.Client, rdb: redis.RedisCluster, cluster: RedisCluster) -> None:
    written = post_spread(http)
    for key in written:
        user, color = keys.message_key_human(key)
        p = keys.partition_of(user, color, PARTITIONS, cluster=True)
        assert key == keys.conv_key(user, color, ETERNAL, ETERNAL_COLOR) + p.tag  # the seed's name + the tag
        assert rdb.keyslot(key) == rdb.keyslot(p.feed)  # one slot with its partition: one script writes both
    masters = {port for port, _ in cluster.masters()}
    assert {cluster.node_for_key(key) for key in written} == masters  # spread over every master
    # The seed's prefix scan, run on every master, lists exactly the human's keys.
    user, color = PEOPLE[0]
    found = [k.decode() for port in masters for k in cluster.node(port).scan_iter(match=f"conv:{user}:{color}:*")]
    assert found == [written[0]]


def test_list_keys_walks_every_master_and_purge_empties_them(http: httpx.Client, cluster: RedisCluster) -> None:
    written = set(post_spread(http))
    listed: list[str] = []
    cursor = None
    for _ in range(100):  # bounded: 40 keys, pages of 7
        page = ok(http.get("/api/admin/list-keys", params={"limit": 7, **({"cursor": cursor} if cursor else {})},
                           headers=AUTH))
        listed += page["keys"]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert set(listed) == written and len(listed) == len(written)
    assert ok(http.post("/api/admin/purge", headers=AUTH))["success"]
    assert sum(cluster.node(port).dbsize() for port, _ in cluster.masters()) <= 1  # store:partitions stays


def test_scripts_flushed_on_every_master_are_reloaded(http: httpx.Client, cluster: RedisCluster) -> None:
    post_spread(http)
    for port, _ in cluster.masters():
        cluster.node(port).script_flush()
    post_spread_again = [ok(http.post("/api/comments", json=human(text="again", user=u, color=c))) for u, c in PEOPLE]
    assert all(r["status"] == "success" for r in post_spread_again)
    assert len(ok(http.get("/api/comments", params={"limit": 200}))["messages"]) == 2 * len(PEOPLE)


def test_cli_stats_sessions_and_rebuild_on_a_cluster(http: httpx.Client, cluster: RedisCluster) -> None:
    q = godmode_question("Why a cluster?")
    ok(http.post("/api/comments", json=q))
    for body in godmode_session_posts(q["id"], "cl-1", entities=3):
        ok(http.post("/api/comments", json=body))
    post_spread(http)
    stats = json.loads(cli(cluster.url, "stats").stdout)
    assert stats["messages"] == 7 + len(PEOPLE) and stats["keys"] == {"conv": 1 + len(PEOPLE), "godmode": 1}
    assert ":cl-1{" in cli(cluster.url, "sessions", HUMAN, HUMAN_COLOR).stdout  # the key as a cluster holds it
    rebuilt = cli(cluster.url, "rebuild-indexes", "--yes")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["messages"] == 7 + len(PEOPLE)
    listed = ok(http.get("/api/godmode-sessions", params={"humanUsername": HUMAN, "humanColor": HUMAN_COLOR}))
    assert [s["sessionId"] for s in listed["sessions"]] == ["cl-1"]
    refused = cli(cluster.url, "repartition", "--to", "6", "--yes")
    assert refused.returncode != 0 and "cluster" in refused.stderr


def test_a_dead_cluster_answers_503_with_retry_after(cluster: RedisCluster) -> None:
    """Start-up needs a reachable node; a service whose every master is gone answers JSON 503s."""
    svc = Service(cluster.url, REDIS_MODE="cluster", REDIS_TIMEOUT_S="1")
    try:
        with httpx.Client(base_url=svc.base_url, timeout=10) as http:
            ok(http.post("/api/comments", json=human(text="before")))
            ports = [port for port, _ in cluster.masters()]
            for port in ports:
                cluster.node(port).client_pause(3000, all=True)  # every master stalls past the timeout
            r = http.post("/api/comments", json=human(text="during"))
            assert r.status_code == 503 and r.headers["Retry-After"] and "error" in r.json()
    finally:
        svc.stop()


async def test_start_up_names_masters_short_of_the_replicas_writes_wait_for(cluster: RedisCluster) -> None:
    from app.config import load_settings
    from app.store import open_store

    for wanted, short in ((1, 0), (2, 3)):  # each master has one replica
        settings = load_settings({"REDIS_URL": cluster.url, "REDIS_MODE": "cluster", "REDIS_WAIT_REPLICAS": str(wanted)})
        async with open_store(settings) as store:
            warnings = await store.check_replicas()
        assert len(warnings) == short and all("REDIS_WAIT_REPLICAS=2" in w for w in warnings)


def migrate_slot(cluster: RedisCluster, slot: int, to_port: int) -> dict[int, str]:
    """The first half of a rebalance: the slot MIGRATING on its master, IMPORTING on `to_port`, and
    its keys MIGRATEd there. Returns the masters' node ids by port."""
    source_port = cluster.node_for_slot(slot)
    ids = {n.port: n.id for n in cluster.nodes() if n.is_master}
    source, target = cluster.node(source_port), cluster.node(to_port)
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source_port])
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to_port])
    for _ in range(1000):  # bounded: a partition's keys, 100 at a time
        names = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not names:
            break
        source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *names)
    return ids


def assign_slot(cluster: RedisCluster, slot: int, to_port: int, ids: dict[int, str]) -> None:
    """The second half: every master learns the slot's new owner."""
    for port in ids:
        cluster.node(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[to_port])


def move_slot(cluster: RedisCluster, slot: int, to_port: int) -> None:
    """What a rebalance does to one slot."""
    assign_slot(cluster, slot, to_port, migrate_slot(cluster, slot, to_port))


def test_a_partition_moved_to_another_master_keeps_serving_without_a_restart(
        http: httpx.Client, cluster: RedisCluster) -> None:
    user, color = PEOPLE[1]
    p = keys.partition_of(user, color, PARTITIONS, cluster=True)
    slot = key_slot(p.tag.strip("{}").encode())
    before = [ok(http.post("/api/comments", json=human(text=f"before {i}", user=user, color=color)))["id"]
              for i in range(5)]
    home = cluster.node_for_slot(slot)
    elsewhere = next(port for port, _ in cluster.masters() if port != home)
    move_slot(cluster, slot, elsewhere)
    try:
        # The service's slot map still names the old master: it answers MOVED, the service reads the
        # new map and sends again, and the client sees a plain 200.
        after = [ok(http.post("/api/comments", json=human(text=f"after {i}", user=user, color=color)))["id"]
                 for i in range(5)]
        view = ok(http.get("/api/conversation", params={"humanUsername": user, "humanColor": color,
                                                       "aiUsername": ETERNAL, "aiColor": ETERNAL_COLOR}))
        assert [m["id"] for m in view] == before + after
        assert cluster.node_for_slot(slot) == elsewhere
    finally:
        move_slot(cluster, slot, home)  # the next tests find the slots as created


def test_a_partition_mid_migration_answers_quickly_and_serves_once_moved(
        http: httpx.Client, cluster: RedisCluster) -> None:
    """A rebalance in progress: the slot is MIGRATING on its master and IMPORTING on another, its keys
    already moved. The old master answers ASK; the service sends ASKING + the script to the new one
    (loading the script there first). Redis still refuses a script that touches keys the import has
    not created (TRYAGAIN), so a write may answer a JSON 503 with Retry-After: a bounded answer, never
    a redirect loop or a 500. Once the slot is assigned, 200s again without a restart."""
    user, color = PEOPLE[2]
    p = keys.partition_of(user, color, PARTITIONS, cluster=True)
    slot = key_slot(p.tag.strip("{}").encode())
    before = ok(http.post("/api/comments", json=human(text="before", user=user, color=color)))["id"]
    home = cluster.node_for_slot(slot)
    elsewhere = next(port for port, _ in cluster.masters() if port != home)
    ids = migrate_slot(cluster, slot, elsewhere)
    try:
        cluster.node(elsewhere).script_flush()  # the importing node has never seen our scripts
        started = time.monotonic()
        during = http.post("/api/comments", json=human(text="during", user=user, color=color))
        assert time.monotonic() - started < 3
        assert during.status_code in (200, 503), during.text
        if during.status_code == 503:
            assert during.headers["Retry-After"] and "error" in during.json()
    finally:
        assign_slot(cluster, slot, elsewhere, ids)  # the move completes
    try:
        after = ok(http.post("/api/comments", json=human(text="after", user=user, color=color)))["id"]
        view = ok(http.get("/api/conversation", params={"humanUsername": user, "humanColor": color,
                                                       "aiUsername": ETERNAL, "aiColor": ETERNAL_COLOR}))
        expected = [before, during.json()["id"], after] if during.status_code == 200 else [before, after]
        assert [m["id"] for m in view] == expected
    finally:
        move_slot(cluster, slot, home)  # where the next tests expect it


def test_a_cluster_nobody_answers_is_a_clean_503_at_start_up() -> None:
    import asyncio

    from app.config import load_settings
    from app.errors import StoreUnavailable
    from app.store import open_store
    from tests.redis_server import free_port

    async def start() -> None:
        settings = load_settings({"REDIS_URL": f"redis://127.0.0.1:{free_port()}", "REDIS_MODE": "cluster",
                                  "REDIS_TIMEOUT_S": "1"})
        async with open_store(settings, attempts=2, delay_s=0.05):
            pass

    try:
        asyncio.run(start())
    except StoreUnavailable:
        return
    raise AssertionError("open_store succeeded against no cluster")
