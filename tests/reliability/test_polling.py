"""1. Linearizable enough for polling: two service instances on one Redis, concurrent writers with
retries, pollers on the global stream and on pair views, against both instances."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import pytest
import redis

from tests.helpers import ETERNAL, ETERNAL_COLOR, GODMODE, GODMODE_COLOR, stats
from tests.reliability.harness import (
    PairPoller,
    StreamPoller,
    Writers,
    check_poller,
    check_redis,
    clients,
    humans,
    plan_messages,
    record,
)
from tests.service import Service


@dataclass(frozen=True)
class Scale:
    writers: int
    per_writer: int
    stream_pollers: int
    pair_pollers: int
    seconds: float  # hard deadline for the whole load
    stream_limit: int = 50  # small pages, so pollers follow hasMore too
    resend_share: float = 0.25


FAST = Scale(writers=10, per_writer=80, stream_pollers=4, pair_pollers=4, seconds=45)
SOAK = Scale(writers=16, per_writer=1000, stream_pollers=6, pair_pollers=6, seconds=200, stream_limit=200)


async def polling_load(svcs: list[Service], rdb: redis.Redis, scale: Scale, seed: int) -> dict[str, int]:
    total = scale.writers * scale.per_writer
    # conv: keys keep 300 messages and pair views answer at most 1000: stay well below both.
    people = humans(max(3, total // 200))
    plans = [plan_messages(w, scale.per_writer, people, random.Random(seed * 100 + w)) for w in range(scale.writers)]
    http = clients(svcs)
    deadline = time.monotonic() + scale.seconds
    start_after = 0
    writers = Writers()
    stop = asyncio.Event()

    followed = [p for p in people[: scale.pair_pollers // 2]]
    pairs = [(h.user, h.color, ai, color) for h in followed for ai, color in ((ETERNAL, ETERNAL_COLOR), (GODMODE, GODMODE_COLOR))]
    stream = [StreamPoller(f"stream{i}", http[i % 2:] + http[: i % 2], scale.stream_limit) for i in range(scale.stream_pollers)]
    pair_pollers = [PairPoller(f"pair{i}", http[i % 2:] + http[: i % 2], 1000, pair) for i, pair in enumerate(pairs)]
    try:
        polls = [asyncio.create_task(p.run(stop, deadline, after=start_after)) for p in (*stream, *pair_pollers)]
        await asyncio.gather(*(writers.run(http, plan, deadline, random.Random(seed + w), scale.resend_share)
                               for w, plan in enumerate(plans)))
        stop.set()
        await asyncio.gather(*polls)
    finally:
        for c in http:
            await c.aclose()

    assert not writers.tally.bad, writers.tally.bad[:5]
    assert writers.unfinished == 0 and len(writers.acked) == total, f"{len(writers.acked)}/{total} acknowledged"
    for poller in stream:
        check_poller(poller, writers.acked, writers.sent)
    for poller in pair_pollers:
        expected = {i: a for i, a in writers.acked.items() if a.pair == poller.pair}
        assert expected, f"{poller.name}: no traffic on {poller.pair}"
        check_poller(poller, expected, {i: p for i, p in writers.sent.items() if p.pair == poller.pair})
    stored = check_redis(rdb, writers.acked)
    counters = stats(rdb)
    assert counters["messages"] == total, counters
    return {
        "messages written": total,
        "posts (incl. retries)": sum(writers.tally.statuses.values()),
        "duplicates verified": writers.tally.duplicates_checked,
        "keys": stored["keys"],
        "pollers": len(stream) + len(pair_pollers),
        "polls": sum(p.polls for p in (*stream, *pair_pollers)),
        "max latency ms": round(1000 * max(writers.tally.max_latency_s, *(p.tally.max_latency_s for p in stream))),
        "lost": 0,
        "dup": 0,
        "5xx": sum(n for code, n in writers.tally.statuses.items() if code >= 500),
    }


async def test_two_instances_writers_and_pollers_nothing_lost_or_repeated(
        pair_of_services: list[Service], rdb: redis.Redis) -> None:
    started = time.monotonic()
    figures = await polling_load(pair_of_services, rdb, FAST, seed=1)
    record("polling (fast)", **figures, seconds=round(time.monotonic() - started, 1))


@pytest.mark.soak
async def test_soak_two_instances_writers_and_pollers(pair_of_services: list[Service], rdb: redis.Redis) -> None:
    started = time.monotonic()
    figures = await polling_load(pair_of_services, rdb, SOAK, seed=2)
    record("polling (soak)", **figures, seconds=round(time.monotonic() - started, 1))
