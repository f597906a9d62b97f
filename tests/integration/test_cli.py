"""The operator CLI against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from tests.helpers import (
    ETERNAL,
    ETERNAL_COLOR,
    GODMODE,
    GODMODE_COLOR,
    HUMAN,
    HUMAN_COLOR,
    ai_reply,
    godmode_question,
    godmode_session_posts,
    human,
    ok,
)
from tests.redis_server import RedisServer
from tests.service import ROOT, Service


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], check=False, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "REDIS_URL": redis_url}, timeout=60)


def test_health_exit_codes(redis_server: RedisServer) -> None:
    assert cli(redis_server.url, "health").returncode == 0
    down = cli("redis://127.0.0.1:1/0", "health")
    assert down.returncode == 1 and "unavailable" in down.stderr


def test_stats_sessions_and_rebuild(http: httpx.Client, redis_server: RedisServer) -> None:
    q = godmode_question("Why?")
    http.post("/api/comments", json=q)
    for body in godmode_session_posts(q["id"], "cli-1", entities=3):
        assert http.post("/api/comments", json=body).status_code == 200
    stats = json.loads(cli(redis_server.url, "stats").stdout)
    assert stats["messages"] == 7 and stats["keys"] == {"conv": 1, "godmode": 1}
    listing = cli(redis_server.url, "sessions", HUMAN, HUMAN_COLOR).stdout
    assert ":cli-1\t6 messages" in listing and "'Why?'" in listing
    assert cli(redis_server.url, "rebuild-indexes").returncode == 1  # needs --yes
    rebuilt = cli(redis_server.url, "rebuild-indexes", "--yes")
    assert rebuilt.returncode == 0 and json.loads(rebuilt.stdout)["messages"] == 7
    assert cli(redis_server.url, "sessions", "Hu*man", HUMAN_COLOR).returncode == 1


# -- moving and rebuilding a populated store (service stopped) ---------------------------------

MOVERS = [(f"Mover{i}", f"{40000000 + i:09d}") for i in range(6)]


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@dataclass
class Populated:
    """What populate() stored, for the checks after a move or a rebuild."""

    session_id: str
    pending: dict[str, Any]  # the body of the question still pending
    processing: dict[str, Any]  # the body of the claimed question
    claim_token: str
    again: dict[str, Any]  # an acknowledged body, re-posted later: must answer duplicate
    again_ts: int


def populate(http: httpx.Client) -> Populated:
    """Several humans with conversations and replies, a God Mode session, a pending and a claimed
    question, and PATCHed eqScores."""
    chats = []
    for i, (user, color) in enumerate(MOVERS):
        for n in range(3):
            body = human(f"chat {n} of {user}", entity=None, user=user, color=color,
                         botParams={"ais": f"{ETERNAL}:{ETERNAL_COLOR}"})
            ok(http.post("/api/comments", json=body))
            chats.append(body)
        reply = ai_reply(chats[-1]["id"], f"reply to {user}", human_user=user, human_color=color)
        ok(http.post("/api/comments", json=reply))
        ok(http.patch(f"/api/comments/{reply['id']}", json={"eqScore": 10 + i}))
    ok(http.patch(f"/api/comments/{chats[0]['id']}", json={"eqScore": 72}))

    gm_user, gm_color = MOVERS[0]
    question = godmode_question("Why move?", user=gm_user, color=gm_color)
    ok(http.post("/api/comments", json=question))
    claimed = ok(http.post("/api/queue/claim", json={"messageId": question["id"], "workerId": "gm-bot"}))
    for body in godmode_session_posts(question["id"], "move-1", entities=3, human_user=gm_user,
                                      human_color=gm_color):
        ok(http.post("/api/comments", json=body))
    ok(http.post("/api/queue/complete", json={"messageId": question["id"], "claimToken": claimed["claimToken"]}))

    pending = human("still pending?", user=MOVERS[1][0], color=MOVERS[1][1], context=["Human: one", "AI: two"])
    pending["botParams"]["priority"] = 7
    ok(http.post("/api/comments", json=pending))
    processing = human("being answered", user=MOVERS[2][0], color=MOVERS[2][1])
    ok(http.post("/api/comments", json=processing))
    claim = ok(http.post("/api/queue/claim", json={"messageId": processing["id"], "workerId": "bot-1"}))
    ok(http.patch(f"/api/comments/{processing['id']}", json={"eqScore": 33}))
    again = chats[-2]
    [again_ts] = [m["timestamp"] for m in follow(http)[0] if m["id"] == again["id"]]
    return Populated("move-1", pending, processing, claim["claimToken"], again, again_ts)


def follow(http: httpx.Client) -> tuple[list[dict[str, Any]], str]:
    """The global poll from after=0 to the end (bounded)."""
    params: dict[str, Any] = {"after": 0, "limit": 1000}
    messages: list[dict[str, Any]] = []
    for _ in range(20):
        data = ok(http.get("/api/comments", params=params))
        assert data["reset"] is False, data  # nothing of an intact store is missing from the feeds
        messages += data["messages"]
        params = {"cursor": data["cursor"]}
        if not data["hasMore"]:
            return messages, data["cursor"]
    raise AssertionError("the poll still had more after 20 pages")


def views(http: httpx.Client) -> dict[str, Any]:
    """What clients read: the global poll (in timestamp order; equal timestamps of different humans
    may come in either order), the God Mode sessions and pair view, and the stats."""
    time.sleep(0.01)  # a poll holds back the current millisecond's messages
    user, color = MOVERS[0]
    pair = {"humanUsername": user, "humanColor": color, "aiUsername": GODMODE, "aiColor": GODMODE_COLOR}
    poll = follow(http)[0]
    stamps = [m["timestamp"] for m in poll]
    assert stamps == sorted(stamps), "the poll is not in timestamp order"
    return {
        "poll": sorted(poll, key=lambda m: (m["timestamp"], m["id"])),
        "sessions": ok(http.get("/api/godmode-sessions", params={"humanUsername": user, "humanColor": color})),
        "pair": ok(http.get("/api/conversation", params=pair)),
        "stats": ok(http.get("/api/admin/stats")),
    }


def snapshot(rdb: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: rdb.dump(key) for key in rdb.scan_iter(count=1000)}


def test_repartition_moves_a_populated_store(private_redis: RedisServer) -> None:
    rdb = redis.Redis(port=private_redis.port)
    svc = Service(private_redis.url)  # the default 12 partitions
    try:
        with httpx.Client(base_url=svc.base_url, timeout=10) as http:
            stored = populate(http)
            before = views(http)
    finally:
        svc.stop()
    stats = before["stats"]
    assert (stats["pending"], stats["processing"], stats["keys"]) == (1, 1, {"conv": 7, "godmode": 1}), stats
    assert stats["globalScore"] == 72 + 33 + sum(10 + i for i in range(len(MOVERS))), stats
    assert before["sessions"]["total"] == 1, before["sessions"]

    untouched = snapshot(rdb)
    refused = cli(private_redis.url, "repartition", "--to", "5")
    assert refused.returncode == 1 and "--yes" in refused.stderr, refused.stderr
    assert snapshot(rdb) == untouched, "repartition without --yes changed the store"

    moved = cli(private_redis.url, "repartition", "--to", "5", "--yes")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["messages"] == stats["messages"], moved.stdout
    assert "PARTITIONS=5" in moved.stderr, moved.stderr
    assert rdb.get("store:partitions") == b"5"

    svc = Service(private_redis.url, PARTITIONS="5")
    try:
        with httpx.Client(base_url=svc.base_url, timeout=10) as http:
            after = views(http)
            assert after["stats"] == stats
            ids = [m["id"] for m in after["poll"]]
            assert len(ids) == len(set(ids)) == stats["messages"], ids
            assert after["poll"] == before["poll"]  # every message once, unchanged (eqScores, states)
            assert after["sessions"] == before["sessions"] and after["pair"] == before["pair"]
            [session] = after["sessions"]["sessions"]
            assert (session["sessionId"], session["messageCount"]) == (stored.session_id, 6), session

            dup = ok(http.post("/api/comments", json=stored.again))
            assert (dup["status"], dup["timestamp"]) == ("duplicate", stored.again_ts), dup

            claimed = ok(http.post("/api/queue/claim-next", json={"workerId": "bot-2"}))
            assert claimed["success"] and claimed["message"]["id"] == stored.pending["id"], claimed
            assert claimed["message"]["context"] == stored.pending["context"], claimed["message"]
            empty = ok(http.post("/api/queue/claim-next", json={"workerId": "bot-2"}))
            assert (empty["success"], empty["totalPending"]) == (False, 0), empty

            done = http.post("/api/queue/complete", json={"messageId": stored.processing["id"],
                                                          "claimToken": stored.claim_token})
            assert done.status_code == 200, done.text
            ok(http.post("/api/queue/complete", json={"messageId": stored.pending["id"],
                                                      "claimToken": claimed["claimToken"]}))
            final = ok(http.get("/api/admin/stats"))
            assert (final["pending"], final["processing"], final["messages"]) == (0, 0, stats["messages"]), final
    finally:
        svc.stop()


def test_rebuild_indexes_restores_every_partition_key(private_redis: RedisServer) -> None:
    rdb = redis.Redis(port=private_redis.port)
    svc = Service(private_redis.url)
    try:
        with httpx.Client(base_url=svc.base_url, timeout=10) as http:
            populate(http)
            before = views(http)
    finally:
        svc.stop()

    partition_keys = [k for k in rdb.scan_iter(count=1000) if b"{p" in k]
    assert len(partition_keys) > 12
    rdb.delete(*partition_keys)
    left = {k.decode().split(":", 1)[0] for k in rdb.scan_iter(count=1000)}
    assert left == {"conv", "godmode", "store"}, left

    assert cli(private_redis.url, "rebuild-indexes").returncode == 1  # needs --yes
    rebuilt = cli(private_redis.url, "rebuild-indexes", "--yes")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["messages"] == before["stats"]["messages"], rebuilt.stdout

    svc = Service(private_redis.url)
    try:
        with httpx.Client(base_url=svc.base_url, timeout=10) as http:
            after = views(http)
    finally:
        svc.stop()
    assert after["stats"] == before["stats"]
    assert after["poll"] == before["poll"]
    assert after["sessions"] == before["sessions"] and after["pair"] == before["pair"]
