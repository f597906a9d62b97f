"""2. Queue: many bot workers claim-next/complete concurrently on two instances; each pending
message is processed exactly once; a claimer that dies leaves its message reclaimable."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import redis

from tests.helpers import ai_reply, human, locate, queue_sizes, store_partitions, stored
from tests.redis_server import RedisServer
from tests.reliability.harness import Tally, clients, record, request, services
from tests.service import Service


class Bots:
    """Bot workers on the real loop: claim-next, score, answer, complete."""

    def __init__(self, http: Sequence[httpx.AsyncClient], deadline: float) -> None:
        self.http = http
        self.deadline = deadline
        self.tally = Tally()
        self.claims: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        self.abandoned: list[str] = []
        self.attempts: dict[str, int] = {}
        self.contended = 0

    async def call(self, rng: random.Random, method: str, url: str, **kw: Any) -> dict[str, Any] | None:
        r = await request(self.http, self.tally, method, url, deadline=self.deadline, rng=rng, allowed=(200, 409), **kw)
        if r is None:
            return None
        if r.status_code == 409:
            self.contended += 1
            return None
        data: dict[str, Any] = r.json()
        return data

    async def worker(self, name: str, rng: random.Random, done: asyncio.Event, die_share: float = 0.0,
                     answer: bool = True) -> None:
        generation = 0
        while time.monotonic() < self.deadline:
            worker_id = f"{name}-{generation}"
            claim = await self.call(rng, "POST", "/api/queue/claim-next", json={"workerId": worker_id})
            if claim is None:
                continue
            if not claim["success"]:
                if done.is_set():
                    return
                await asyncio.sleep(0.05)
                continue
            msg = claim["message"]
            self.claims[msg["id"]] += 1
            self.attempts[msg["id"]] = msg["botParams"].get("attempts", 0)
            assert msg["botParams"]["status"] == "processing" and msg["botParams"]["claimedBy"] == worker_id
            if rng.random() < die_share:  # this worker dies holding the claim; a new one takes its place
                self.abandoned.append(msg["id"])
                generation += 1
                continue
            if answer:
                await self.call(rng, "PATCH", f"/api/comments/{msg['id']}", json={"eqScore": rng.randrange(101)})
                reply = ai_reply(msg["id"], f"re: {msg['text']}", human_user=msg["username"], human_color=msg["color"])
                reply["id"] = f"re-{msg['id']}"
                await self.call(rng, "POST", "/api/comments", json=reply)
            if await self.call(rng, "POST", "/api/queue/complete", json={"messageId": msg["id"]}) is not None:
                self.completed[msg["id"]] += 1


async def post_questions(http: Sequence[httpx.AsyncClient], ids: list[str], deadline: float, rng: random.Random,
                         tally: Tally, askers: int = 5) -> None:
    for mid in ids:
        body = human(f"question {mid}", user=f"Asker{rng.randrange(askers)}", id=mid)
        body["botParams"]["priority"] = rng.randrange(10)
        r = await request(http, tally, "POST", "/api/comments", json=body, deadline=deadline, rng=rng)
        assert r is not None and r.status_code == 200, r


def assert_all_complete(rdb: redis.Redis, ids: list[str]) -> None:
    layout = store_partitions(rdb)
    assert queue_sizes(rdb) == (0, 0)
    assert all(rdb.hlen(p.contexts) == 0 and rdb.hlen(p.claims) == 0 for p in layout)
    for mid in ids:
        where = locate(rdb, mid)
        assert where is not None, mid
        (raw,) = [r for r in stored(rdb, where[1], where[0]) if r.startswith(b'{"id":"%s"' % mid.encode())]
        assert b'"status":"complete"' in raw, raw
    for p in layout:  # no in-flight bytes left behind
        assert all(int(v.split()[1]) == 0 for v in rdb.hvals(p.sizes))


async def queue_load(svcs: list[Service], rdb: redis.Redis, messages: int, bots: int, producers: int,
                     seconds: float, seed: int) -> dict[str, Any]:
    http = clients(svcs)
    deadline = time.monotonic() + seconds
    ids = [f"q{seed}x{i}" for i in range(messages)]
    done = asyncio.Event()
    workers = Bots(http, deadline)
    posting = Tally()
    try:
        tasks = [asyncio.create_task(workers.worker(f"worker-{i}", random.Random(seed * 1000 + i), done))
                 for i in range(bots)]
        # question + reply per message: ~200 per conv: key, below the 300 it keeps
        askers = max(5, messages // 100)
        await asyncio.gather(*(post_questions(http, ids[p::producers], deadline, random.Random(p), posting, askers)
                               for p in range(producers)))
        done.set()
        await asyncio.gather(*tasks)
    finally:
        for c in http:
            await c.aclose()
    assert not posting.bad and not workers.tally.bad, (posting.bad + workers.tally.bad)[:5]
    twice = {i: n for i, n in workers.claims.items() if n != 1}
    assert not twice, f"claimed more than once: {list(twice.items())[:5]}"
    assert sorted(workers.claims) == sorted(ids), f"claimed {len(workers.claims)}/{len(ids)}"
    assert all(workers.completed[i] == 1 for i in ids), "a message was not completed exactly once"
    assert_all_complete(rdb, ids)
    return {"messages written": 2 * messages, "bot workers": bots, "claims": sum(workers.claims.values()),
            "409 contended": workers.contended, "lost": 0, "dup": 0,
            "5xx": sum(n for code, n in workers.tally.statuses.items() if code >= 500)}


async def test_bot_workers_on_two_instances_process_each_message_exactly_once(
        pair_of_services: list[Service], rdb: redis.Redis) -> None:
    started = time.monotonic()
    figures = await queue_load(pair_of_services, rdb, messages=150, bots=8, producers=3, seconds=45, seed=3)
    record("queue (fast)", **figures, seconds=round(time.monotonic() - started, 1))


@pytest.mark.soak
async def test_soak_bot_workers_exactly_once(pair_of_services: list[Service], rdb: redis.Redis) -> None:
    started = time.monotonic()
    figures = await queue_load(pair_of_services, rdb, messages=3000, bots=12, producers=4, seconds=150, seed=4)
    record("queue (soak)", **figures, seconds=round(time.monotonic() - started, 1))


async def test_dead_claimers_messages_are_reclaimed_after_the_timeout(shared_redis: RedisServer,
                                                                      rdb: redis.Redis) -> None:
    started = time.monotonic()
    rng = random.Random(5)
    with services(shared_redis.url, 1, workers=2, CLAIM_TIMEOUT_S="1") as (svc,):
        http = clients([svc])
        deadline = time.monotonic() + 30
        ids = [f"d{i}" for i in range(40)]
        tally = Tally()
        await post_questions(http, ids, deadline, rng, tally)

        # A claimer that dies mid-request: the claim is made, its answer never read.
        async with httpx.AsyncClient(base_url=svc.base_url, timeout=10) as raw:
            r = await raw.post("/api/queue/claim-next", json={"workerId": "vanished"})
            vanished = r.json()["message"]["id"]
        async with httpx.AsyncClient(base_url=svc.base_url, timeout=0.001) as impatient:
            for _ in range(3):
                try:
                    await impatient.post("/api/queue/claim-next", json={"workerId": "impatient"})
                except httpx.TimeoutException:
                    pass

        bots = Bots(http, deadline)
        done = asyncio.Event()
        # 20% of claims die with their worker; the rest run to completion. Workers stop only once
        # the queue is empty *and* nothing is processing, i.e. every expired claim came back.
        async def until_drained() -> None:
            while time.monotonic() < deadline:
                if queue_sizes(rdb) == (0, 0):
                    done.set()
                    return
                await asyncio.sleep(0.1)

        try:
            await asyncio.gather(until_drained(), *(bots.worker(f"bot{i}", random.Random(i), done, die_share=0.2,
                                                                answer=False) for i in range(4)))
        finally:
            for c in http:
                await c.aclose()
        assert done.is_set(), "queue did not drain before the deadline"
        assert not bots.tally.bad and not tally.bad, (bots.tally.bad + tally.bad)[:5]
        assert bots.abandoned, "no claimer died: the test proved nothing"
        assert bots.claims[vanished] >= 1, "the vanished claimer's message never came back"
        for mid in [*bots.abandoned, vanished]:
            assert bots.attempts[mid] >= 1 or bots.claims[mid] > 1, f"{mid} was never reclaimed"
        assert sorted(bots.completed) == sorted(ids) and set(bots.completed.values()) == {1}
        assert_all_complete(rdb, ids)
    record("queue dead claimers", **{"messages written": len(ids), "bot workers": 4,
                                     "claims": sum(bots.claims.values()) + 1,
                                     "faults": len(bots.abandoned) + 4, "lost": 0, "dup": 0,
                                     "seconds": round(time.monotonic() - started, 1)})
