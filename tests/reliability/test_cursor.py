"""Issue 11: the poll cursor. Followers of `cursor` (and one of `nextAfter`) on two service
instances see every acknowledged message exactly once while writers post to many humans (many
partitions); a cursor older than what the feeds still hold answers `reset: true`."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import redis

from app import keys
from tests.helpers import ETERNAL, ETERNAL_COLOR, ok
from tests.redis_server import RedisServer
from tests.reliability.harness import (
    Ack,
    Planned,
    StreamPoller,
    Tally,
    Writers,
    clients,
    humans,
    plan_messages,
    record,
    services,
)
from tests.service import Service

MAX_POLLS = 4000  # per follower; a limit-1 follower needs about one poll per message


class CursorFollower:
    """GET /api/comments?cursor=<the previous answer's cursor>&limit=..[&type=..], switching
    service instance on every request. The first request (no cursor yet) starts at after=0."""

    def __init__(self, name: str, http: Sequence[httpx.AsyncClient], limit: int, type_filter: str | None = None):
        self.name = name
        self.http = http
        self.limit = limit
        self.type_filter = type_filter
        self.ids: list[str] = []
        self.stamps: list[int] = []
        self.tally = Tally()
        self.polls = 0
        self.finished = False

    async def run(self, stop: asyncio.Event, deadline: float, interval_s: float = 0.02) -> None:
        cursor: str | None = None
        while time.monotonic() < deadline and self.polls < MAX_POLLS:
            final = stop.is_set()  # writers were done before this request: an empty last page ends it
            params: dict[str, Any] = {"limit": self.limit}
            if self.type_filter:
                params["type"] = self.type_filter
            if cursor is None:
                params["after"] = 0
            else:
                params["cursor"] = cursor
            client = self.http[self.polls % len(self.http)]
            self.polls += 1
            started = time.monotonic()
            try:
                r = await client.get("/api/comments", params=params)
            except httpx.TransportError as exc:
                self.tally.transport_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            self.tally.answer(r, started)
            if r.status_code != 200:
                await asyncio.sleep(0.05)
                continue
            data = r.json()
            if not isinstance(data.get("cursor"), str) or not data["cursor"]:
                self.tally.bad.append(f"{self.name}: no cursor in {str(data)[:200]}")
                return
            if data.get("reset") is not False:
                self.tally.bad.append(f"{self.name}: reset {data.get('reset')!r} with nothing trimmed")
            for m in data["messages"]:
                self.ids.append(m["id"])
                self.stamps.append(m["timestamp"])
            cursor = data["cursor"]
            if data["hasMore"]:
                continue
            if final and not data["messages"]:
                self.finished = True
                return
            if not data["messages"]:
                await asyncio.sleep(interval_s)


def check_follower(name: str, finished: bool, bad: list[str], ids: list[str], stamps: list[int],
                   expected: dict[str, Ack], allowed: set[str]) -> None:
    """Every expected message exactly once, with its acknowledged timestamp, in non-decreasing
    timestamp order; nothing outside `allowed` (sent ids of the followed type)."""
    assert not bad, f"{name}: {bad[:5]}"
    assert finished, f"{name} did not drain before its deadline"
    seen = Counter(ids)
    missed = sorted(set(expected) - set(seen))
    repeated = sorted(i for i, n in seen.items() if n > 1)
    foreign = sorted(i for i in seen if i not in allowed)
    assert not missed, f"{name} missed {len(missed)}: {missed[:5]}"
    assert not repeated, f"{name} saw {len(repeated)} more than once: {repeated[:5]}"
    assert not foreign, f"{name} saw {len(foreign)} it should not: {foreign[:5]}"
    wrong_ts = [i for i, ts in zip(ids, stamps) if i in expected and expected[i].timestamp != ts]
    assert not wrong_ts, f"{name}: timestamps differ from the acknowledged ones: {wrong_ts[:5]}"
    disorder = [(a, b) for a, b in itertools.pairwise(stamps) if b < a]
    assert not disorder, f"{name}: {len(disorder)} timestamps go backwards: {disorder[:3]}"


def message_type(planned: Planned) -> str:
    return "AI" if planned.body.get("message-type") == "AI" else "human"


async def test_cursor_followers_see_every_message_once_across_instances(
        pair_of_services: list[Service], rdb: redis.Redis) -> None:
    started = time.monotonic()
    writers_count, per_writer = 8, 80
    people = humans(40)  # many humans: many partitions
    plans = [plan_messages(w, per_writer, people, random.Random(1100 + w)) for w in range(writers_count)]
    http = clients(pair_of_services)
    deadline = time.monotonic() + 45
    writers = Writers()
    stop = asyncio.Event()
    followers = [
        CursorFollower("cursor limit 1", http, 1),
        CursorFollower("cursor limit 7", http[1:] + http[:1], 7),
        CursorFollower("cursor limit 200", http, 200),
        CursorFollower("cursor type=human limit 7", http[1:] + http[:1], 7, "human"),
        CursorFollower("cursor type=AI limit 1", http, 1, "AI"),
        CursorFollower("cursor type=AI limit 200", http[1:] + http[:1], 200, "AI"),
    ]
    next_after = StreamPoller("nextAfter limit 7", http, 7)
    try:
        polls = [asyncio.create_task(f.run(stop, deadline)) for f in followers]
        polls.append(asyncio.create_task(next_after.run(stop, deadline, after=0)))
        await asyncio.gather(*(writers.run(http, plan, deadline, random.Random(1200 + w), resend_share=0.1)
                               for w, plan in enumerate(plans)))
        await asyncio.sleep(0.01)  # past the writers' last millisecond, which a page may hold back
        stop.set()
        await asyncio.gather(*polls)
    finally:
        for c in http:
            await c.aclose()

    total = writers_count * per_writer
    assert not writers.tally.bad, writers.tally.bad[:5]
    assert writers.unfinished == 0 and len(writers.acked) == total, f"{len(writers.acked)}/{total} acknowledged"
    for f in followers:
        kinds = {f.type_filter} if f.type_filter else {"human", "AI"}
        allowed = {i for i, p in writers.sent.items() if message_type(p) in kinds}
        expected = {i: a for i, a in writers.acked.items() if i in allowed}
        assert expected, f"{f.name}: no traffic of its type"
        check_follower(f.name, f.finished, f.tally.bad, f.ids, f.stamps, expected, allowed)
    check_follower(next_after.name, next_after.finished, next_after.tally.bad, next_after.ids, next_after.stamps,
                   writers.acked, set(writers.sent))
    record("cursor followers", **{
        "messages written": total,
        "pollers": len(followers) + 1,
        "polls": sum(f.polls for f in followers) + next_after.polls,
        "lost": 0,
        "dup": 0,
        "5xx": sum(n for code, n in writers.tally.statuses.items() if code >= 500),
        "seconds": round(time.monotonic() - started, 1),
    })


def post(http: httpx.Client, user: str, color: str, text: str) -> dict[str, Any]:
    body = {"text": text, "username": user, "color": color, "message-type": "human",
            "botParams": {"ais": f"{ETERNAL}:{ETERNAL_COLOR}"}}
    data = ok(http.post("/api/comments", json=body))
    assert data["status"] == "success", data
    return data


def follow(http: httpx.Client, cursor: str, limit: int = 50, pages: int = 100) -> tuple[list[dict[str, Any]], str]:
    """Follow a cursor to the end (bounded); every page must answer reset: false."""
    seen: list[dict[str, Any]] = []
    for _ in range(pages):
        data = ok(http.get("/api/comments", params={"cursor": cursor, "limit": limit}))
        assert data["reset"] is False, data
        seen.extend(data["messages"])
        cursor = data["cursor"]
        if not data["hasMore"] and not data["messages"]:
            return seen, cursor
    raise AssertionError(f"the cursor did not reach the end in {pages} pages")


def test_cursor_older_than_the_feeds_answers_reset() -> None:
    server = RedisServer()
    try:
        with services(server.url, 1, FEED_WINDOW="20", PARTITIONS="2") as [svc], \
                httpx.Client(base_url=svc.base_url, timeout=10) as http:
            people = [(h.user, h.color) for h in humans(10)]
            for i in range(5):
                post(http, *people[i % len(people)], f"before {i}")
            time.sleep(0.01)  # past the last post's millisecond, which a page may hold back
            first = ok(http.get("/api/comments", params={"after": 0, "limit": 200}))
            assert len(first["messages"]) == 5 and first["reset"] is False, first
            old_cursor = first["cursor"]

            posted: list[tuple[str, str]] = []  # (id, partition tag), oldest first
            for i in range(200):  # 20 per partition stay in the feeds: the old cursor's place is gone
                user, color = people[i % len(people)]
                posted.append((post(http, user, color, f"burst {i}")["id"], keys.partition_of(user, color, 2).tag))
            held = {mid for tag in {t for _, t in posted} for mid in [m for m, t in posted if t == tag][-20:]}
            time.sleep(0.01)

            page = ok(http.get("/api/comments", params={"cursor": old_cursor, "limit": 50}))
            assert page["reset"] is True, page
            assert page["messages"], page
            rest, cursor = follow(http, page["cursor"])
            after_reset = [m["id"] for m in page["messages"] + rest]
            assert len(after_reset) == len(set(after_reset)), "a message was repeated after the reset"
            assert set(after_reset) <= {m for m, _ in posted}, "the reset page went back before the burst"
            assert held <= set(after_reset), f"{len(held - set(after_reset))} messages the feeds hold were skipped"
            assert len(after_reset) < len(posted), "nothing was trimmed, so there was nothing to reset"
            stamps = [m["timestamp"] for m in page["messages"] + rest]
            assert stamps == sorted(stamps)

            # Following on from there is an ordinary cursor again.
            later = [post(http, *people[i % len(people)], f"later {i}")["id"] for i in range(10)]
            time.sleep(0.01)
            seen, _ = follow(http, cursor, limit=3)
            assert sorted(m["id"] for m in seen) == sorted(later)

            bad = http.get("/api/comments", params={"cursor": "!!not a cursor!!"})
            assert bad.status_code == 400, bad.text
            assert bad.json()["field"] == "cursor" and isinstance(bad.json()["error"], str), bad.text
    finally:
        server.close()
