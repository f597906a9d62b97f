"""Store and its Lua scripts, each test on fakeredis and on a real redis-server.

Most tests end with `check_indexes`: every size record, counter, id record, feed copy and queue
entry of every partition agrees with what the message keys really hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from importlib import resources
from typing import Any

import fakeredis
import msgspec
import pytest
import redis

from app import keys, metrics, models, queue, scripts, sessions
from app.config import ConfigError, Settings
from app.errors import Conflict, NotFound, StoreUnavailable
from app.keys import Partition
from app.models import decode, encode
from app.scripts import AppendResult
from app.sessions import PAGE_MAX_BYTES
from app.store import FeedPage, Store
from tests.helpers import (
    ETERNAL,
    ETERNAL_COLOR,
    GODMODE,
    GODMODE_COLOR,
    HUMAN,
    HUMAN_COLOR,
    ai_reply,
    expected_member,
    godmode_question,
    godmode_session_posts,
    human,
    uid,
)
from tests.redis_server import RedisServer

CONV = keys.conv_key(HUMAN, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR)
ROOM = keys.conv_key(HUMAN, HUMAN_COLOR, keys.PLATFORM, keys.PLATFORM)
SESSION = "1763027011418-1mmzaea"
SESSION_KEY = keys.godmode_key(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, SESSION)
COUNTERS = ("convKeys", "godmodeKeys", "messages", "bytes", "globalScore")


async def counters(store: Store) -> dict[str, int]:
    """What /api/admin/stats reports."""
    return msgspec.to_builtins(models.stats_body(await store.stats()))  # type: ignore[no-any-return]


def _other_human() -> str:
    """A human whose messages live in another of the 12 default partitions than HUMAN's."""
    home = keys.partition_index(HUMAN, HUMAN_COLOR, 12)
    return next(n for n in (f"Other{i}" for i in range(100)) if keys.partition_index(n, HUMAN_COLOR, 12) != home)


OTHER = _other_human()


def chat(text: str = "just chatting", **extra: Any) -> dict[str, Any]:
    """A human message to TheEternal that is not queued: stored in CONV next to queued questions."""
    return human(text, entity=None, botParams={"ais": f"{ETERNAL}:{ETERNAL_COLOR}"}, **extra)


def worker(name: str) -> bytes:
    return encode(name)


async def post(store: Store, body: dict[str, Any]) -> AppendResult:
    return await store.append_message(models.plan_append(body, store.settings))


async def post_ok(store: Store, body: dict[str, Any]) -> AppendResult:
    result = await post(store, body)
    assert result.status == "ok", result
    return result


def with_settings(store: Store, **changes: Any) -> Store:
    return Store(store.redis, dataclasses.replace(store.settings, **changes))


async def commands_called(store: Store, *commands: str) -> int:
    """How many times Redis ran these commands so far, from scripts too (a real server's INFO)."""
    stats = await store.redis.info("commandstats")
    return sum(int(stats[f"cmdstat_{name}"]["calls"]) for name in commands if f"cmdstat_{name}" in stats)


def home(store: Store, user: str = HUMAN) -> Partition:
    return store.partition_of(user, HUMAN_COLOR)


async def raw_in(store: Store, key: str) -> list[bytes]:
    return list(await store.redis.zrange(key, 0, -1))


async def messages_in(store: Store, key: str) -> list[dict[str, Any]]:
    return [decode(m) for m in await raw_in(store, key)]


async def ids_in(store: Store, key: str) -> list[str]:
    return [m["id"] for m in await messages_in(store, key)]


async def size_record(store: Store, key: str) -> tuple[int, int, int] | None:
    record = await store.redis.hget(home(store, keys.message_key_human(key)[0]).sizes, key)
    if record is None:
        return None
    total, inflight, count = record.split()
    return int(total), int(inflight), int(count)


async def stored(store: Store, message_id: str, key: str = CONV) -> dict[str, Any]:
    [found] = [m for m in await messages_in(store, key) if m["id"] == message_id]
    return found


async def poll(store: Store, after: int | tuple[int, ...] = 0, limit: int = 100,
               type_mark: bytes | None = None) -> FeedPage:
    """GET /api/comments as Store serves it; waits out the millisecond a poll holds back."""
    await asyncio.sleep(0.003)
    positions = after if isinstance(after, tuple) else (after,) * len(store.partitions)
    return await store.read_feed(positions, limit, type_mark)


async def follow(store: Store, limit: int, by_cursor: bool = False) -> tuple[list[str], int]:
    """Every page from the start, as a nextAfter (or cursor) follower reads them: (ids, pages)."""
    seen: list[str] = []
    after: int | tuple[int, ...] = 0
    for pages in range(1, 500):
        page = (await poll(store, after, limit)).page
        seen += [decode(m)["id"] for m in page.messages]
        after = page.positions if by_cursor else page.next_after
        if not page.has_more:
            return seen, pages
    raise AssertionError("the follower never finished")


async def snapshot(store: Store) -> dict[bytes, Any]:
    """Every key in Redis with its type and content."""
    out: dict[bytes, Any] = {}
    for key in sorted(await store.redis.keys("*")):
        kind = (await store.redis.type(key)).decode()
        if kind == "zset":
            value: Any = await store.redis.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            value = await store.redis.hgetall(key)
        elif kind == "string":
            value = await store.redis.get(key)
        else:
            value = None
        out[key] = (kind, value)
    return out


async def check_indexes(store: Store) -> None:
    """Every partition's indexes agree with the message keys."""
    r = store.redis
    totals = dict.fromkeys(COUNTERS[:4], 0)
    indexed: set[str] = set()
    for p in store.partitions:
        sizes = {k.decode(): v.decode() for k, v in (await r.hgetall(p.sizes)).items()}
        ids = {k.decode(): v.decode() for k, v in (await r.hgetall(p.ids)).items()}
        pending = {m.decode() for m in await r.zrange(p.pending, 0, -1)}
        processing = {m.decode() for m in await r.zrange(p.processing, 0, -1)}
        held: dict[str, tuple[bytes, float]] = {}
        counts = dict.fromkeys(COUNTERS[:4], 0)
        for key, record in sizes.items():
            assert store.partition_of(*keys.message_key_human(key)) == p, key
            rows = await r.zrange(key, 0, -1, withscores=True)
            total = sum(len(m) for m, _ in rows)
            inflight = sum(len(m) for m, _ in rows if decode(m)["id"] in pending | processing)
            assert record == f"{total} {inflight} {len(rows)}", key
            counts["messages"] += len(rows)
            counts["bytes"] += total
            counts["convKeys" if key.startswith("conv:") else "godmodeKeys"] += 1
            for member, score in rows:
                message = decode(member)
                assert math.floor(score) == message["timestamp"]
                assert ids[message["id"]] == f"{message['timestamp']} {message['domain']} {key}"
                held[message["id"]] = (member, score)
                status = message.get("botParams", {}).get("status")
                assert (message["id"] in pending) == (status == "pending"), message
                assert (message["id"] in processing) == (status == "processing"), message
        meta = {k.decode(): int(v) for k, v in (await r.hgetall(p.meta)).items()}
        for name, value in counts.items():
            assert meta.get(name, 0) == value, (p, name)
            totals[name] += value
        for member, score in await r.zrange(p.feed, 0, -1, withscores=True):
            if member != keys.FEED_MARK.encode():
                copy = held.get(decode(member)["id"])
                assert copy is None or copy == (member, score), member  # in-place updates reach the copy
        assert {m.decode() for m in await r.hkeys(p.claims)} <= processing
        assert {m.decode() for m in await r.hkeys(p.contexts)} <= pending | processing
        indexed |= set(sizes)
    for pattern in keys.MESSAGE_PATTERNS:
        assert {k.decode() async for k in r.scan_iter(match=pattern)} <= indexed
    stats = await store.stats()
    for name, value in totals.items():
        assert stats.get(name, 0) == value, name


# -- append_message -----------------------------------------------------------------------------


async def test_append_message_first_write_creates_key_and_indexes(store: Store) -> None:
    body = human()
    before = int(time.time() * 1000)
    result = await post_ok(store, body)
    assert result.key == CONV and result.domain == "saywhatwant.app"
    assert before - 50 <= result.timestamp <= time.time() * 1000 + 50  # the partition's Redis time
    [raw] = await raw_in(store, CONV)
    assert raw == expected_member(models.plan_append(body, store.settings), result.timestamp, "saywhatwant.app")
    message = decode(raw)
    assert message["botParams"]["status"] == "pending" and message["botParams"]["humanUsername"] == HUMAN
    assert "context" not in message  # kept with the queue entry, not in the key's bytes
    p = home(store)
    assert await size_record(store, CONV) == (len(raw), len(raw), 1)  # a pending message's bytes are in flight
    assert (await store.redis.hget(p.ids, body["id"])).decode() == f"{result.timestamp} saywhatwant.app {CONV}"
    assert await store.redis.zrange(p.feed, 0, -1, withscores=True) == [(raw, result.timestamp)]
    assert await store.redis.zscore(p.pending, body["id"]) == keys.queue_rank_base(5) + result.timestamp
    assert decode(await store.redis.hget(p.contexts, body["id"])) == body["context"]
    stats = await store.stats()
    assert {k: stats[k] for k in ("messages", "convKeys", "godmodeKeys", "pending", "bytes")} == {
        "messages": 1, "convKeys": 1, "godmodeKeys": 0, "pending": 1, "bytes": len(raw)}
    others = [k for q in store.partitions if q != p for k in q.own_keys()]
    assert await store.redis.exists(*others) == 0  # one partition written, nothing global
    await check_indexes(store)


async def test_append_message_same_id_is_a_duplicate_and_changes_nothing(store: Store) -> None:
    body = human()
    first = await post_ok(store, body)
    before = await snapshot(store)
    again = await post(store, {**body, "text": "changed"})
    assert again.status == "duplicate" and again.timestamp == first.timestamp and again.key == CONV
    # The same id for another conversation of the same human is the same message, wherever it is asked.
    elsewhere = await post(store, {**body, "botParams": {"entity": "other", "priority": 5}})
    assert elsewhere.status == "duplicate" and elsewhere.key == CONV
    assert await snapshot(store) == before


async def test_append_message_timestamps_follow_redis_time_never_back(store: Store) -> None:
    start = int(time.time() * 1000)
    results = [await post_ok(store, chat(f"n{i}")) for i in range(30)]
    stamps = [r.timestamp for r in results]
    assert stamps == sorted(stamps) and start - 50 <= stamps[0] and stamps[-1] <= time.time() * 1000 + 50
    # The key reads in commit order, even within one millisecond.
    assert [m["text"] for m in await messages_in(store, CONV)] == [f"n{i}" for i in range(30)]
    # A partition clock ahead of Redis time (restored, or another primary's): never before it.
    p = home(store)
    ahead = int(time.time() * 1000) + 60_000
    await store.redis.hset(p.meta, mapping={"clock": ahead, "seq": 0})
    later = [await post_ok(store, chat(f"later{i}")) for i in range(3)]
    assert [r.timestamp for r in later] == [ahead] * 3  # equal timestamps are allowed
    assert [m["text"] for m in await messages_in(store, CONV)][-3:] == ["later0", "later1", "later2"]
    other = await post_ok(store, human(entity=None, user=OTHER))
    assert other.timestamp < ahead  # clocks are per partition
    await check_indexes(store)


async def test_append_message_same_millisecond_orders_by_commit_not_by_id(store: Store) -> None:
    p = home(store)
    ahead = int(time.time() * 1000) + 60_000
    await store.redis.hset(p.meta, mapping={"clock": ahead, "seq": 0})
    for message_id in ("zzz", "mmm", "aaa"):  # ids in falling byte order
        await post_ok(store, chat(id=message_id))
    rows = await store.redis.zrange(CONV, 0, -1, withscores=True)
    assert [decode(m)["id"] for m, _ in rows] == ["zzz", "mmm", "aaa"]
    assert [decode(m)["timestamp"] for m, _ in rows] == [ahead] * 3  # JSON timestamps stay whole ms
    assert [math.floor(s) for _, s in rows] == [ahead] * 3 and len({s for _, s in rows}) == 3
    # A millisecond that is full moves on to the next one.
    await store.redis.hset(p.meta, mapping={"clock": ahead, "seq": 1023})
    assert (await post_ok(store, chat())).timestamp == ahead + 1
    await check_indexes(store)


async def test_append_message_lost_meta_takes_the_clock_from_the_feed(store: Store) -> None:
    p = home(store)
    ahead = int(time.time() * 1000) + 60_000
    await store.redis.hset(p.meta, mapping={"clock": ahead, "seq": 0})
    first = await post_ok(store, chat())
    await store.redis.delete(p.meta)
    again = await post_ok(store, chat())
    assert first.timestamp == ahead and again.timestamp >= first.timestamp
    [(_, s1), (_, s2)] = await store.redis.zrange(CONV, 0, -1, withscores=True)
    assert s1 < s2  # still after the previous message
    await store.rebuild_indexes()  # counters lost with the meta come back
    await check_indexes(store)


async def test_append_message_ai_reply_takes_question_domain(store: Store) -> None:
    question = human(domain="shittosay.app")
    await post_ok(store, question)
    reply = ai_reply(question["id"])
    result = await post_ok(store, reply)
    assert result.key == CONV and result.domain == "shittosay.app"
    answer = await stored(store, reply["id"])
    assert answer["domain"] == "shittosay.app" and answer["botParams"]["status"] == "complete"
    assert answer["botParams"]["completedAt"] == answer["timestamp"]
    own = await post_ok(store, ai_reply(question["id"], domain="own.app"))
    assert own.domain == "own.app"
    orphan = await post_ok(store, ai_reply("never-posted"))
    assert orphan.domain == store.settings.default_domain
    assert await store.redis.zscore(home(store).pending, reply["id"]) is None  # answers are not queued
    await check_indexes(store)


async def test_append_message_conv_window_keeps_newest(store: Store) -> None:
    store = with_settings(store, conv_window=5)
    bodies = [human(entity=None, ais=None, text=f"n{i}") for i in range(8)]
    for body in bodies:
        await post_ok(store, body)
    assert [m["text"] for m in await messages_in(store, ROOM)] == [f"n{i}" for i in range(3, 8)]
    page = (await poll(store)).page
    assert [decode(m)["text"] for m in page.messages] == [f"n{i}" for i in range(3, 8)]  # trimmed copies go too
    p = home(store)
    assert {m.decode() for m in await store.redis.zrange(p.lapses, 0, -1)} == {b["id"] for b in bodies[:3]}
    stats = await store.stats()
    assert stats["messages"] == 5 and stats["convKeys"] == 1
    await check_indexes(store)


async def test_append_message_conv_trims_for_bytes_but_never_in_flight(store: Store) -> None:
    store = with_settings(store, max_key_bytes=4096)
    queued = human(text="keep me " + "q" * 300)  # pending: must survive every trim
    await post_ok(store, queued)
    replies = [ai_reply(queued["id"], f"r{i} " + "x" * 600) for i in range(12)]
    for reply in replies:
        await post_ok(store, reply)
    kept = await ids_in(store, CONV)
    assert kept[0] == queued["id"] and kept[-1] == replies[-1]["id"]
    assert kept[1:] == [r["id"] for r in replies][-(len(kept) - 1):]  # the oldest answers went
    total, inflight, count = await size_record(store, CONV) or (0, 0, 0)
    assert total <= 4096 and inflight == len((await raw_in(store, CONV))[0]) and count == len(kept)
    await check_indexes(store)


async def test_append_message_many_in_flight_at_head_are_skipped(store: Store) -> None:
    store = with_settings(store, conv_window=10)
    pending_ids = []
    for i in range(6):
        body = human(text=f"pending {i}")
        pending_ids.append(body["id"])
        await post_ok(store, body)
    for i in range(10):
        await post_ok(store, ai_reply(pending_ids[0], f"answer {i}"))
    kept = await messages_in(store, CONV)
    assert len(kept) == 10
    assert [m["id"] for m in kept[:6]] == pending_ids
    assert [m["text"] for m in kept[6:]] == [f"answer {i}" for i in range(6, 10)]
    await check_indexes(store)


async def test_append_message_behind_a_long_queue_costs_a_few_calls_not_three_per_queued(store: Store) -> None:
    """A conversation whose oldest 250 messages wait for a bot: each append at the window used to
    step over them one ZRANGE and two ZSCOREs at a time (~750 calls inside one script, blocking
    Redis for everyone); batches that double keep it to a few calls per batch."""
    if isinstance(store.redis, fakeredis.FakeAsyncRedis):
        pytest.skip("counts commands with a real server's INFO commandstats")
    store = with_settings(store, conv_window=260)
    questions = [human(text=f"q{i}") for i in range(250)]
    for q in questions:
        await post_ok(store, q)
    for i in range(10):
        await post_ok(store, ai_reply(questions[0]["id"], f"a{i}"))

    before = await commands_called(store, "zrange", "zscore", "zmscore")
    await post_ok(store, ai_reply(questions[0]["id"], "over the window"))
    assert await commands_called(store, "zrange", "zscore", "zmscore") - before <= 40
    kept = await messages_in(store, CONV)
    assert [m["id"] for m in kept[:250]] == [q["id"] for q in questions]  # the queue is never trimmed
    assert kept[250]["text"] == "a1" and kept[-1]["text"] == "over the window"  # the oldest answer went
    await check_indexes(store)


async def test_a_refused_backlog_post_costs_a_few_calls_not_two_per_queued(store: Store) -> None:
    """A conversation whose queued messages fill its bytes: every further POST is a 413 backlog, and
    each re-counts the queue (it may have moved). That count was two ZSCOREs per message."""
    if isinstance(store.redis, fakeredis.FakeAsyncRedis):
        pytest.skip("counts commands with a real server's INFO commandstats")
    store = with_settings(store, max_key_bytes=60_000)
    while (result := await post(store, human(text="q" * 200))).status == "ok":
        pass
    assert result.status == "backlog" and len(await ids_in(store, CONV)) > 50

    before = await commands_called(store, "zscore", "zmscore")
    assert (await post(store, human(text="q" * 200))).status == "backlog"
    assert await commands_called(store, "zscore", "zmscore") - before <= 10
    await check_indexes(store)


async def test_append_message_window_yields_when_everything_is_in_flight(store: Store) -> None:
    store = with_settings(store, conv_window=3)
    questions = [human(text=f"q{i}") for i in range(5)]
    for q in questions:
        await post_ok(store, q)  # none may be trimmed: the window grows past 3
    assert await ids_in(store, CONV) == [q["id"] for q in questions]
    await post_ok(store, chat("after"))
    assert len(await ids_in(store, CONV)) == 6
    await check_indexes(store)


async def test_append_message_backlog_of_in_flight_is_413_and_writes_nothing(store: Store) -> None:
    store = with_settings(store, max_key_bytes=2048)
    first = [human(text=f"{i} " + "p" * 500) for i in range(2)]
    for body in first:
        await post_ok(store, body)
    before = await snapshot(store)
    refused = human(text="one too many " + "p" * 500)
    result = await post(store, refused)
    assert result.status == "backlog" and result.limit == 2048 and result.key == CONV
    assert result.current == sum(map(len, await raw_in(store, CONV)))  # the in-flight bytes
    assert await snapshot(store) == before
    # Completing a question frees room: the refused id left no record and is accepted now.
    claimed, token, _, _ = await queue.claim_next(store, worker("w"))
    assert claimed is not None
    await queue.complete(store, claimed["id"], token)
    assert (await post(store, refused)).status == "ok"
    await check_indexes(store)


async def test_append_message_full_godmode_session_is_refused_unchanged(store: Store) -> None:
    store = with_settings(store, max_key_bytes=8192)
    question = godmode_question()
    await post_ok(store, question)
    posts = godmode_session_posts(question["id"], SESSION, entities=20, answer_bytes=500)
    results = [await post(store, p) for p in posts]
    statuses = [r.status for r in results]
    assert "too_large" in statuses and statuses.index("too_large") > 0
    assert all(r.key == SESSION_KEY for r in results)
    kept = await raw_in(store, SESSION_KEY)
    assert len(kept) == statuses.count("ok") and sum(map(len, kept)) <= 8192
    refused = [p["id"] for p, r in zip(posts, results, strict=True) if r.status != "ok"]
    assert await store.redis.hmget(home(store).ids, refused) == [None] * len(refused)  # no records
    too_large = next(r for r in results if r.status == "too_large")
    assert too_large.current + too_large.size > 8192 >= too_large.size
    await check_indexes(store)


async def test_append_message_larger_than_limit_leaves_no_record(store: Store) -> None:
    store = with_settings(store, max_key_bytes=2048)
    body = human(entity=None, text="x" * 3000)
    before = await snapshot(store)
    result = await post(store, body)
    assert result.status == "too_large" and result.size > 2048 and result.limit == 2048 and result.key == ROOM
    assert await snapshot(store) == before  # no key, no id record, no counters
    assert (await poll(store)).page.messages == []
    assert (await post(store, {**body, "text": "shorter"})).status == "ok"  # the same id, smaller, succeeds
    await check_indexes(store)


async def test_append_message_trimmed_id_stays_a_duplicate_until_its_record_lapses(store: Store) -> None:
    store = with_settings(store, conv_window=2, idempotency_ttl_s=3600)
    first = human(entity=None)
    await post_ok(store, first)
    for _ in range(3):
        await post_ok(store, human(entity=None))
    assert first["id"] not in await ids_in(store, ROOM)
    assert (await post(store, first)).status == "duplicate"  # a retry of a trimmed message is no new message
    p = home(store)
    lapses = await store.redis.zscore(p.lapses, first["id"])
    assert lapses is not None and lapses > time.time() * 1000 + 3500_000
    await store.redis.zadd(p.lapses, {first["id"]: 1})  # as if the hour had passed
    assert (await post(store, first)).status == "ok"
    assert await store.redis.zscore(p.lapses, first["id"]) is None
    # A trim sweeps lapsed records away.
    [swept, *_] = [m.decode() for m in await store.redis.zrange(p.lapses, 0, -1)]
    await store.redis.zadd(p.lapses, {swept: 1})
    await post_ok(store, human(entity=None))
    assert await store.redis.hexists(p.ids, swept) == 0 and await store.redis.zscore(p.lapses, swept) is None
    await check_indexes(store)


async def test_append_message_wrong_message_key_type_is_refused_without_writes(store: Store) -> None:
    await store.redis.set(CONV, "operator typo")
    before = await snapshot(store)
    with pytest.raises(Conflict):
        await post(store, human())
    assert await snapshot(store) == before


COMPANIONS = ("feed", "ids", "lapses", "meta", "sizes", "pending", "processing", "contexts", "sessions",
              "pair_sessions", "session_ids")
SESSION_INDEXES = ("sessions", "pair_sessions", "session_ids")


def companion_key(p: Partition, companion: str) -> str:
    if companion == "sessions":
        return p.sessions(HUMAN, HUMAN_COLOR)
    if companion == "pair_sessions":
        return p.pair_sessions(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR)
    return str(getattr(p, companion))


@pytest.mark.parametrize("companion", COMPANIONS)
async def test_append_message_wrong_companion_type_is_refused_without_writes(store: Store, companion: str) -> None:
    store = with_settings(store, conv_window=1)  # the next post to CONV trims: every companion is read
    await post_ok(store, chat("already here"))
    p = home(store)
    name = companion_key(p, companion)
    await store.redis.delete(name)
    await store.redis.set(name, "not mine")
    before = await snapshot(store)
    if companion in SESSION_INDEXES:
        body = godmode_session_posts("q1", SESSION, entities=1)[0]
    else:
        body = human()  # queued, trims the chat
    with pytest.raises(Conflict):
        await post(store, body)
    assert await snapshot(store) == before  # the message key and every index unchanged


async def test_append_message_heals_a_deleted_message_key(store: Store) -> None:
    for i in range(3):
        await post_ok(store, human(entity=None, text=f"room {i}"))
    await post_ok(store, chat())
    await post_ok(store, human())  # queued
    await store.redis.delete(ROOM)
    assert (await store.stats())["messages"] == 5  # counted until the key is written again
    again = await post_ok(store, human(entity=None, text="room again"))
    assert await size_record(store, ROOM) == (len((await raw_in(store, ROOM))[0]), 0, 1)
    stats = await store.stats()
    assert (stats["messages"], stats["convKeys"]) == (3, 2)
    assert again.key == ROOM
    await check_indexes(store)


async def test_append_message_never_trims_in_flight_after_the_key_was_deleted_and_refilled(store: Store) -> None:
    store = with_settings(store, conv_window=3)
    old = human(text="old question")
    await post_ok(store, old)
    await post_ok(store, chat("old chat"))
    saved = await store.redis.zrange(CONV, 0, -1, withscores=True)
    await store.redis.delete(CONV)
    fresh = human(text="fresh question")
    await post_ok(store, fresh)
    # An operator restores the old members next to the new one, behind the service.
    await store.redis.zadd(CONV, dict(saved))
    for i in range(6):
        await post_ok(store, chat(f"c{i}"))
    kept = await ids_in(store, CONV)
    assert old["id"] in kept and fresh["id"] in kept  # both still pending: never trimmed
    assert [m["text"] for m in await messages_in(store, CONV) if m["id"] not in (old["id"], fresh["id"])] == ["c5"]
    await check_indexes(store)
    claimed = {(await queue.claim_next(store, worker("w")))[0]["id"] for _ in range(2)}  # type: ignore[index]
    assert claimed == {old["id"], fresh["id"]}


async def test_append_message_feed_keeps_its_window_and_marks_what_it_dropped(store: Store) -> None:
    store = with_settings(store, feed_window=4)
    bodies = [human(entity=None, text=f"t{i}") for i in range(45)]
    for body in bodies:
        await post_ok(store, body)
    p = home(store)
    feed = await store.redis.zrange(p.feed, 0, -1, withscores=True)
    mark = dict(feed).get(keys.FEED_MARK.encode())
    copies = [(m, s) for m, s in feed if m != keys.FEED_MARK.encode()]
    assert mark is not None and 4 <= len(copies) <= 4 + 32
    rows = await store.redis.zrange(ROOM, 0, -1, withscores=True)
    assert len(rows) == 45  # the key keeps them all (conv window 300)
    assert copies == [(m, s) for m, s in rows if s > mark]  # the newest ones, exactly those past the mark
    assert max(s for _, s in rows if s <= mark) == mark
    page = (await poll(store)).page
    assert page.reset and page.messages == [m for m, _ in copies]  # from the oldest copy still held
    assert not (await poll(store, page.next_after)).page.reset
    assert not (await poll(store, math.floor(mark))).page.reset  # has all of the mark's millisecond


async def test_append_message_heals_a_deleted_feed(store: Store) -> None:
    for i in range(3):
        await post_ok(store, chat(f"c{i}"))
    p = home(store)
    clock = int(await store.redis.hget(p.meta, "clock"))
    await store.redis.delete(p.feed)
    fresh = await post_ok(store, chat("after the loss"))
    assert await store.redis.zscore(p.feed, keys.FEED_MARK) == clock  # what the feed held may be gone
    page = (await poll(store)).page
    assert page.reset and [decode(m)["text"] for m in page.messages] == ["after the loss"]
    follow_up = (await poll(store, page.positions)).page
    assert not follow_up.reset and follow_up.messages == []
    assert fresh.timestamp >= clock
    await check_indexes(store)


async def test_read_feed_cursor_learns_of_a_feed_deleted_while_its_partition_was_quiet(store: Store) -> None:
    await post_ok(store, chat("seen"))
    cursor = (await poll(store)).page.positions
    p = home(store)
    missed = [(await post_ok(store, chat(f"missed {i}"))).timestamp for i in range(3)]
    await post_ok(store, chat("elsewhere", username=OTHER))  # other partitions move on meanwhile
    await store.redis.delete(p.feed)  # lost behind the service while the partition is quiet
    quiet = (await poll(store, cursor)).page
    assert not quiet.reset and [decode(m)["text"] for m in quiet.messages] == ["elsewhere"]
    # The partition's own position did not move past what it delivered, so its next append's mark
    # (the newest timestamp the lost feed may have held) tells the follower about the gap.
    assert quiet.positions[p.index] < missed[-1]
    await post_ok(store, chat("after the loss"))
    page = (await poll(store, quiet.positions)).page
    assert page.reset and [decode(m)["text"] for m in page.messages] == ["after the loss"]


@pytest.mark.parametrize("lost", [*COMPANIONS, "message key"])
async def test_append_message_heals_any_key_deleted_behind_it(store: Store, lost: str) -> None:
    question = godmode_question()
    await post_ok(store, question)
    for body in godmode_session_posts(question["id"], SESSION, entities=1, answer_bytes=10, synthesis_bytes=10):
        await post_ok(store, body)
    await post_ok(store, human())
    p = home(store)
    name = CONV if lost == "message key" else companion_key(p, lost)
    await store.redis.delete(name)
    late_q = human(text="after the loss")
    assert (await post(store, late_q)).status == "ok"
    assert late_q["id"] in await ids_in(store, CONV)
    assert (await post(store, godmode_session_posts(question["id"], SESSION, entities=0)[0])).status == "ok"
    claimed, token, _, _ = await queue.claim_next(store, worker("w"))
    assert claimed is not None
    await queue.update_score(store, claimed["id"], 9)
    await queue.complete(store, claimed["id"], token)
    await queue.pending(store, 10)
    await poll(store)
    await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 50)
    await store.read_session(HUMAN, HUMAN_COLOR, None, None, SESSION)
    await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, 0, 100)
    await store.rebuild_indexes()  # and the operator's fix restores every count
    await check_indexes(store)


async def test_append_message_godmode_indexes_its_session(store: Store) -> None:
    question = godmode_question()
    await post_ok(store, question)
    posts = godmode_session_posts(question["id"], SESSION, entities=2, answer_bytes=10, synthesis_bytes=10)
    for body in posts:
        assert (await post_ok(store, body)).key == SESSION_KEY
    p = home(store)
    member = keys.session_member(GODMODE, GODMODE_COLOR, SESSION).encode()
    [(_, first_score)] = await store.redis.zrange(SESSION_KEY, 0, 0, withscores=True)
    for index in (p.sessions(HUMAN, HUMAN_COLOR), p.pair_sessions(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR)):
        assert await store.redis.zrange(index, 0, -1, withscores=True) == [(member, first_score)]
    assert await store.redis.hgetall(p.session_ids) == {
        keys.session_id_field(HUMAN, HUMAN_COLOR, SESSION).encode(): member}
    stats = await store.stats()
    assert (stats["godmodeKeys"], stats["convKeys"], stats["messages"]) == (1, 1, 1 + len(posts))
    assert all(m["botParams"]["status"] == "complete" for m in await messages_in(store, SESSION_KEY))
    await check_indexes(store)


# -- read_feed ----------------------------------------------------------------------------------


@pytest.mark.parametrize("by_cursor", [False, True])
async def test_read_feed_followers_see_every_message_once_in_order(store: Store, by_cursor: bool) -> None:
    sent = []
    for i in range(7):
        q = human(text=f"q{i}", user=(HUMAN, OTHER)[i % 2])
        sent.append(q["id"])
        await post_ok(store, q)
        await asyncio.sleep(0.002)  # distinct milliseconds: the order across partitions is the post order
        r = ai_reply(q["id"], f"a{i}", human_user=q["username"])
        sent.append(r["id"])
        await post_ok(store, r)
        await asyncio.sleep(0.002)
    seen, pages = await follow(store, 3, by_cursor=by_cursor)
    assert seen == sent and pages == 5


async def test_a_reply_its_contract_cannot_read_is_observed_as_a_failed_script(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bool]] = []
    monkeypatch.setattr(Store, "observer", lambda name, seconds, ok: seen.append((name, ok)))

    def unreadable(self: Any, reply: Any) -> None:
        raise ValueError(f"unexpected reply {reply!r}")

    monkeypatch.setattr(scripts.ReadMessage, "decode", unreadable)
    with pytest.raises(ValueError):
        await store.read_message(store.partitions[0], "no-such-id")
    assert seen == [("read_message", False)]  # the script-latency metric says ok="false"


async def test_read_feed_equal_timestamps_are_never_split(store: Store) -> None:
    soon = int(time.time() * 1000) + 500  # time for six appends through fakeredis's Lua on a loaded machine
    for user in (HUMAN, OTHER):
        await store.redis.hset(home(store, user).meta, mapping={"clock": soon, "seq": 0})
    bodies = [human(entity=None, user=(HUMAN, OTHER)[i % 2], text=f"t{i}") for i in range(6)]
    results = [await post_ok(store, body) for body in bodies]
    assert {r.timestamp for r in results} == {soon}  # one millisecond, two partitions
    await asyncio.sleep(max(0.0, soon / 1000 - time.time()) + 0.01)
    page = (await store.read_feed((0,) * 12, 4, None)).page
    assert sorted(decode(m)["id"] for m in page.messages) == sorted(b["id"] for b in bodies)  # longer than a page
    assert page.next_after == soon and page.has_more
    assert (await store.read_feed(page.positions, 4, None)).page.messages == []


async def test_read_feed_type_filter_and_global_score(store: Store) -> None:
    q = human()
    await post_ok(store, q)
    await post_ok(store, ai_reply(q["id"], eqScore=7))
    await post_ok(store, human(entity=None, user=OTHER, eqScore=5))
    humans = await poll(store, type_mark=models.TYPE_MARKS["human"])
    ais = await poll(store, type_mark=models.TYPE_MARKS["ai"])
    assert [decode(m)["message-type"] for m in humans.page.messages] == ["human", "human"]
    assert [decode(m)["message-type"] for m in ais.page.messages] == ["AI"]
    assert humans.global_score == 12 and humans.page.next_after == ais.page.next_after


async def test_read_feed_holds_back_what_is_newer_than_redis_time(store: Store) -> None:
    seen = await post_ok(store, chat("now"))
    ahead = int(time.time() * 1000) + 60_000
    await store.redis.hset(home(store).meta, mapping={"clock": ahead, "seq": 0})
    await post_ok(store, chat("ahead of the clock"))
    page = (await poll(store)).page
    assert [decode(m)["text"] for m in page.messages] == ["now"]
    assert page.next_after == seen.timestamp and not page.has_more


# -- claim_message ------------------------------------------------------------------------------


async def test_claim_message_next_priority_then_age_across_partitions(store: Store) -> None:
    low = human(text="low")
    older = human(text="older", user=OTHER)
    high = human(text="high", user=OTHER)
    high["botParams"]["priority"] = 9
    for body in (older, low, high):
        await post_ok(store, body)
        await asyncio.sleep(0.002)
    first, token1, total, remaining = await queue.claim_next(store, worker("worker-1"))
    assert first is not None and first["id"] == high["id"] and (total, remaining) == (3, 2)
    assert first["context"] == high["context"] and first["botParams"]["claimedBy"] == "worker-1"
    assert first["botParams"]["status"] == "processing" and first["botParams"]["claimedAt"] >= first["timestamp"]
    second, token2, total, remaining = await queue.claim_next(store, worker("worker-2"))
    assert second is not None and second["id"] == older["id"] and (total, remaining) == (2, 1)
    third, token3, _, _ = await queue.claim_next(store, worker("worker-3"))
    assert third is not None and third["id"] == low["id"]
    assert len({token1, token2, token3}) == 3 and all((token1, token2, token3))
    assert await queue.claim_next(store, worker("worker-4")) == (None, "", 0, 0)
    assert (await stored(store, high["id"], keys.conv_key(OTHER, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR))
            )["botParams"]["claimedBy"] == "worker-1"
    p = home(store, OTHER)
    assert (await store.redis.hget(p.claims, high["id"])).decode() == token1
    await check_indexes(store)


async def test_claim_message_two_claimers_exactly_one_wins(store: Store) -> None:
    body = human()
    await post_ok(store, body)
    outcomes = await asyncio.gather(
        *(queue.claim(store, body["id"], worker(f"w{i}")) for i in range(8)), return_exceptions=True
    )
    won = [o for o in outcomes if isinstance(o, tuple)]
    assert len(won) == 1 and won[0][0]["id"] == body["id"] and won[0][1]
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, tuple))
    await check_indexes(store)


async def test_claim_message_concurrent_claim_next_serves_each_message_once(store: Store) -> None:
    bodies = [human(text=f"q{i}", user=(HUMAN, OTHER)[i % 2]) for i in range(10)]
    for body in bodies:
        await post_ok(store, body)
    outcomes = await asyncio.gather(*(queue.claim_next(store, worker(f"w{i}")) for i in range(14)))
    served = [m["id"] for m, _, _, _ in outcomes if m is not None]
    assert sorted(served) == sorted(b["id"] for b in bodies)
    stats = await store.stats()
    assert (stats["pending"], stats["processing"]) == (0, 10)
    await check_indexes(store)


async def test_claim_message_by_id_refusals(store: Store) -> None:
    with pytest.raises(NotFound):
        await queue.claim(store, uid(), worker("w"))
    talk = chat()
    await post_ok(store, talk)
    with pytest.raises(Conflict, match="not queued"):
        await queue.claim(store, talk["id"], worker("w"))
    q = human()
    await post_ok(store, q)
    message, token = await queue.claim(store, q["id"], worker("w"))
    assert message["botParams"]["status"] == "processing" and message["context"] == q["context"] and token
    with pytest.raises(Conflict, match="processing"):
        await queue.claim(store, q["id"], worker("w2"))
    await queue.complete(store, q["id"], token)
    with pytest.raises(Conflict, match="complete"):
        await queue.claim(store, q["id"], worker("w2"))
    gone = human(user=OTHER)
    await post_ok(store, gone)
    await store.redis.delete(keys.conv_key(OTHER, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR))
    with pytest.raises(NotFound):
        await queue.claim(store, gone["id"], worker("w"))
    p = home(store, OTHER)
    assert await store.redis.zscore(p.pending, gone["id"]) is None and not await store.redis.hexists(p.contexts,
                                                                                                   gone["id"])


async def test_claim_message_requeues_expired_claims_with_attempts(store: Store) -> None:
    store = with_settings(store, claim_timeout_s=1)
    bodies = [human(text=f"q{i}") for i in range(3)]
    for body in bodies:
        await post_ok(store, body)
    tokens = {}
    for _ in bodies:
        message, token, _, _ = await queue.claim_next(store, worker("crashed-worker-with-a-long-name"))
        assert message is not None
        tokens[message["id"]] = token
    p = home(store)
    await store.redis.zadd(p.processing, {b["id"]: 1 for b in bodies}, xx=True)  # claimed long ago
    await store.requeue_expired(store.partitions)
    for body in bodies:
        back = (await stored(store, body["id"]))["botParams"]
        assert (back["status"], back["claimedBy"], back["claimedAt"], back["attempts"]) == ("pending", None, None, 1)
    assert await store.redis.hlen(p.claims) == 0 and await store.redis.hlen(p.contexts) == 3
    await check_indexes(store)
    again, new_token, total, _ = await queue.claim_next(store, worker("w2"))
    assert again is not None and again["id"] == bodies[0]["id"] and total == 3  # its place in line is kept
    assert again["botParams"]["claimedBy"] == "w2" and again["botParams"]["attempts"] == 1
    assert again["context"] == bodies[0]["context"]
    with pytest.raises(Conflict, match="claimed again"):
        await queue.complete(store, again["id"], tokens[again["id"]])
    await queue.complete(store, again["id"], new_token)
    await check_indexes(store)


async def test_claim_message_requeues_every_expired_claim(store: Store) -> None:
    store = with_settings(store, claim_timeout_s=60)  # none expires while claiming; the ZADD below ages them
    bodies = [human(entity="e", ais=None, text=f"q{i}") for i in range(130)]
    for body in bodies:
        await post_ok(store, body)
    for _ in bodies:
        assert (await queue.claim_next(store, worker("w")))[0] is not None
    p = home(store)
    await store.redis.zadd(p.processing, {b["id"]: 1 for b in bodies}, xx=True)
    timeouts_before = metrics.CLAIM_TIMEOUTS._value.get()
    message, _, total, remaining = await queue.claim_next(store, worker("w2"))
    assert message is not None and (total, remaining) == (130, 129)  # more than one call's 100
    assert metrics.CLAIM_TIMEOUTS._value.get() - timeouts_before == 130  # each counted once
    stats = await store.stats()
    assert (stats["pending"], stats["processing"]) == (129, 1)
    await check_indexes(store)


async def test_claim_message_drops_entries_whose_message_vanished(store: Store) -> None:
    gone, kept = human(text="gone"), human(text="kept", user=OTHER)
    await post_ok(store, gone)
    await asyncio.sleep(0.002)
    await post_ok(store, kept)
    await store.redis.delete(CONV)  # an operator deleted the conversation by hand
    claimed, _, total, remaining = await queue.claim_next(store, worker("w"))
    assert claimed is not None and claimed["id"] == kept["id"] and (total, remaining) == (1, 0)
    p = home(store)
    assert await store.redis.zscore(p.pending, gone["id"]) is None
    assert await store.redis.hexists(p.contexts, gone["id"]) == 0
    assert await queue.claim_next(store, worker("w")) == (None, "", 0, 0)


async def test_claim_message_drops_a_stray_pending_entry_of_a_claimed_message(store: Store) -> None:
    q = human()
    await post_ok(store, q)
    _, token = await queue.claim(store, q["id"], worker("w"))
    p = home(store)
    await store.redis.zadd(p.pending, {q["id"]: 1})  # a stray entry, e.g. from a replayed write
    assert (await queue.claim_next(store, worker("w2")))[0] is None
    assert await store.redis.zscore(p.pending, q["id"]) is None
    assert (await store.redis.hget(p.claims, q["id"])).decode() == token  # the real claim is untouched
    await check_indexes(store)


QUEUE_COMPANIONS = ("pending", "processing", "claims", "contexts", "ids", "feed", "sizes", "meta")


@pytest.mark.parametrize(("operation", "companion"), [
    (operation, companion) for operation in ("claim_next", "claim", "complete", "score") for companion in QUEUE_COMPANIONS
    if operation != "score" or companion not in ("claims", "contexts")  # score_message does not take those
])
async def test_queue_scripts_wrong_companion_type_is_refused_without_writes(
        store: Store, operation: str, companion: str) -> None:
    q = human()
    await post_ok(store, q)
    token = (await queue.claim(store, q["id"], worker("w")))[1] if operation == "complete" else ""
    p = home(store)
    await store.redis.delete(getattr(p, companion))
    await store.redis.set(getattr(p, companion), "not mine")
    before = await snapshot(store)
    calls = {
        "claim_next": lambda: store.claim(p, "next", worker=worker("w2"), token="t"),
        "claim": lambda: store.claim(p, "id", target=q["id"], worker=worker("w2"), token="t"),
        "complete": lambda: store.complete(p, q["id"], token),
        "score": lambda: store.score_message(p, q["id"], 50),
    }
    with pytest.raises(Conflict):
        await calls[operation]()
    assert await snapshot(store) == before


async def test_queue_same_id_for_two_humans_needs_the_claim_token(store: Store) -> None:
    mine, theirs = human(id="shared-id"), human(id="shared-id", user=OTHER)
    await post_ok(store, mine)
    await post_ok(store, theirs)  # another partition: ids are unique per partition only
    assert len(await store.partitions_holding("shared-id")) == 2
    for ambiguous in (queue.claim(store, "shared-id", worker("w")), queue.update_score(store, "shared-id", 1),
                      queue.complete(store, "shared-id", "")):
        with pytest.raises(Conflict, match="more than one"):
            await ambiguous
    claimed, token, _, _ = await queue.claim_next(store, worker("w"))
    assert claimed is not None and claimed["id"] == "shared-id"
    await queue.complete(store, "shared-id", token)  # the token names the claim
    other_conv = keys.conv_key(OTHER, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR)
    statuses = [m["botParams"]["status"] for key in (CONV, other_conv) for m in await messages_in(store, key)]
    assert sorted(statuses) == ["complete", "pending"]
    await check_indexes(store)


# -- complete_message ---------------------------------------------------------------------------


async def test_complete_message_then_again_conflicts(store: Store) -> None:
    body = human()
    await post_ok(store, body)
    _, token, _, _ = await queue.claim_next(store, worker("w"))
    await queue.complete(store, body["id"], token)
    done = (await stored(store, body["id"]))["botParams"]
    assert done["status"] == "complete" and done["completedAt"] >= done["claimedAt"] and done["claimedBy"] == "w"
    with pytest.raises(Conflict, match="already complete"):
        await queue.complete(store, body["id"], token)
    with pytest.raises(NotFound):
        await queue.complete(store, uid(), "")
    no_queue = chat()
    await post_ok(store, no_queue)
    with pytest.raises(Conflict, match="never queued"):
        await queue.complete(store, no_queue["id"], "")
    stats = await store.stats()
    assert (stats["pending"], stats["processing"]) == (0, 0)
    p = home(store)
    assert await store.redis.exists(p.claims, p.contexts) == 0
    assert (await size_record(store, CONV) or (0, -1, 0))[1] == 0  # nothing in flight any more
    await check_indexes(store)


async def test_complete_message_stale_token_leaves_the_newer_claim_untouched(store: Store) -> None:
    store = with_settings(store, claim_timeout_s=1)
    body = human()
    await post_ok(store, body)
    _, first_token, _, _ = await queue.claim_next(store, worker("slow"))
    await store.redis.zadd(home(store).processing, {body["id"]: 1}, xx=True)
    again, second_token, _, _ = await queue.claim_next(store, worker("fast"))
    assert again is not None and second_token != first_token
    before = await snapshot(store)
    with pytest.raises(Conflict):
        await queue.complete(store, body["id"], first_token)
    assert await snapshot(store) == before
    assert (await stored(store, body["id"]))["botParams"]["claimedBy"] == "fast"
    await queue.complete(store, body["id"], second_token)
    assert (await stored(store, body["id"]))["botParams"]["status"] == "complete"
    await check_indexes(store)


async def test_complete_message_without_token_completes_any_claim(store: Store) -> None:
    claimed, unclaimed = human(text="claimed"), human(text="never claimed")
    await post_ok(store, claimed)
    await post_ok(store, unclaimed)
    await queue.claim(store, claimed["id"], worker("w"))
    await queue.complete(store, claimed["id"], "")
    await queue.complete(store, unclaimed["id"], "")
    statuses = {m["id"]: m["botParams"]["status"] for m in await messages_in(store, CONV)}
    assert statuses == {claimed["id"]: "complete", unclaimed["id"]: "complete"}
    await check_indexes(store)


async def test_complete_message_a_token_for_an_unclaimed_message_is_stale(store: Store) -> None:
    body = human()
    await post_ok(store, body)
    with pytest.raises(Conflict):
        await queue.complete(store, body["id"], "made-up-token")
    assert (await stored(store, body["id"]))["botParams"]["status"] == "pending"


async def test_complete_message_vanished_message_is_not_found_and_leaves_the_queue(store: Store) -> None:
    body = human()
    await post_ok(store, body)
    _, token = await queue.claim(store, body["id"], worker("w"))
    await store.redis.delete(CONV)
    with pytest.raises(NotFound):
        await queue.complete(store, body["id"], token)
    p = home(store)
    assert await store.redis.exists(p.pending, p.processing, p.claims, p.contexts) == 0


async def test_complete_message_accepts_the_claim_token_after_a_rebuild(store: Store) -> None:
    # The bot holds a claim while the operator runs rebuild-indexes (service stopped, then started).
    body = human()
    await post_ok(store, body)
    _, token = await queue.claim(store, body["id"], worker("w"))
    await store.rebuild_indexes()
    await queue.complete(store, body["id"], token)
    assert (await stored(store, body["id"]))["botParams"]["status"] == "complete"


# -- score_message ------------------------------------------------------------------------------


async def test_score_message_replaces_its_share_of_the_global_score(store: Store) -> None:
    body = human()
    await post_ok(store, body)
    other = human(entity=None, user=OTHER)
    await post_ok(store, other)
    before = await store.redis.zrange(CONV, 0, -1, withscores=True)
    await queue.update_score(store, body["id"], 72)
    message, total = await queue.update_score(store, body["id"], 40)
    assert decode(message)["eqScore"] == 40 and total == 40
    [(raw, score)] = await store.redis.zrange(CONV, 0, -1, withscores=True)
    assert score == before[0][1] and raw == message  # same place, same timestamp
    assert decode(raw)["timestamp"] == decode(before[0][0])["timestamp"]
    assert await store.redis.zscore(home(store).feed, raw) == score  # the poll's copy too
    assert (await size_record(store, CONV)) == (len(raw), len(raw), 1)  # still pending: bytes in flight
    _, total = await queue.update_score(store, other["id"], 100)
    _, total = await queue.update_score(store, other["id"], 100)  # the same score again changes nothing
    assert total == 140 and (await store.stats())["globalScore"] == 140
    assert (await poll(store)).global_score == 140
    await check_indexes(store)


async def test_score_message_unknown_trimmed_or_deleted_is_not_found(store: Store) -> None:
    store = with_settings(store, conv_window=1)
    with pytest.raises(NotFound):
        await queue.update_score(store, uid(), 1)
    trimmed = human(entity=None)
    await post_ok(store, trimmed)
    await post_ok(store, human(entity=None))
    with pytest.raises(NotFound):
        await queue.update_score(store, trimmed["id"], 1)
    deleted = chat()
    await post_ok(store, deleted)
    await store.redis.delete(CONV)
    with pytest.raises(NotFound):
        await queue.update_score(store, deleted["id"], 1)
    assert (await store.stats())["globalScore"] == 0


async def test_in_place_updates_are_never_refused_for_size(store: Store) -> None:
    store = with_settings(store, max_key_bytes=1024)
    body = human(text="z" * 540)
    assert (await post(store, body)).status == "ok"
    total = (await size_record(store, CONV) or (0, 0, 0))[0]
    assert 1024 - total < 100  # nearly full
    claimed, token, _, _ = await queue.claim_next(store, worker("a-worker-with-a-long-name-" + "w" * 100))
    assert claimed is not None
    await queue.update_score(store, body["id"], 100)
    await queue.complete(store, body["id"], token)
    [raw] = await raw_in(store, CONV)
    assert len(raw) > 1024 and (await size_record(store, CONV)) == (len(raw), 0, 1)
    await check_indexes(store)


# -- read_message, read_conversation --------------------------------------------------------------


async def test_read_message_known_unknown_and_vanished(store: Store) -> None:
    p = home(store)
    assert await store.read_message(p, uid()) is None
    q = human()
    await post_ok(store, q)
    found = await store.read_message(p, q["id"])
    assert found is not None and found.key == CONV and decode(found.raw or b"")["id"] == q["id"]
    assert decode(found.context or b"") == q["context"]
    assert await store.partitions_holding(q["id"]) == [p]
    await store.redis.delete(CONV)
    assert await store.read_message(p, q["id"]) == scripts.StoredMessage(CONV, None, found.context)


async def test_queue_pending_lists_in_queue_order_with_context(store: Store) -> None:
    bodies = [human(text="first", user=OTHER), human(text="second"), human(text="urgent")]
    bodies[2]["botParams"]["priority"] = 9
    for body in bodies:
        await post_ok(store, body)
        await asyncio.sleep(0.002)
    await post_ok(store, chat())
    listed, waiting, busy, truncated = await queue.pending(store, 10)
    assert [m["id"] for m in listed] == [bodies[2]["id"], bodies[0]["id"], bodies[1]["id"]]
    assert all(m["context"] == bodies[0]["context"] for m in listed) and (waiting, busy) == (3, 0)
    assert not truncated
    assert [m["id"] for m in (await queue.pending(store, 1))[0]] == [bodies[2]["id"]]


async def test_queue_pending_answers_at_most_its_byte_budget(store: Store) -> None:
    # 100 queued questions with 20 KB contexts each: 2 MB of contexts, half the budget answers.
    context = ["Human: " + "c" * 100] * 200
    for i in range(100):
        await post_ok(store, human(text=f"q{i}", user=f"u{i}", context=context))
    listed, waiting, _, truncated = await queue.pending(store, 1000)
    assert truncated and waiting == 100 and 0 < len(listed) < 100
    assert sum(len(encode(m)) for m in listed) <= queue.PENDING_MAX_BYTES * 1.05  # JSON re-encoding aside


async def test_read_pair_of_a_conversation_after_is_whole_milliseconds(store: Store) -> None:
    soon = int(time.time() * 1000) + 400  # time for the posts and the first read, even on a loaded machine
    await store.redis.hset(home(store).meta, mapping={"clock": soon, "seq": 0})
    for i in range(4):
        await post_ok(store, chat(f"c{i}"))  # one millisecond, four scores
    # Not before that millisecond is over: a later commit in it would share a timestamp with them.
    assert await store.read_pair(HUMAN, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR, 0, 100) == []
    await asyncio.sleep(max(0.0, (soon + 5) / 1000 - time.time()))
    everything = await store.read_pair(HUMAN, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR, soon - 1, 100)
    assert [decode(m)["text"] for m in everything] == ["c0", "c1", "c2", "c3"]
    assert await store.read_pair(HUMAN, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR, soon, 100) == []
    last = await store.read_pair(HUMAN, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR, 0, 2)
    assert [decode(m)["text"] for m in last] == ["c2", "c3"]


# -- read_pair, read_sessions -------------------------------------------------------------------


async def test_read_pair_merges_sessions_and_conv_key(store: Store) -> None:
    question = godmode_question()
    await post_ok(store, question)
    for sid in ("1763027011418-aaaaaaa", "1763027099999-bbbbbbb"):
        for p in godmode_session_posts(question["id"], sid, entities=2, answer_bytes=10, synthesis_bytes=10):
            await post_ok(store, p)
    await asyncio.sleep(0.003)  # the current millisecond is held back
    merged = await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, 0, 100)
    stamps = [decode(m)["timestamp"] for m in merged]
    assert len(merged) == 1 + 2 * 5 and stamps == sorted(stamps)
    assert decode(merged[0])["id"] == question["id"]
    last3 = await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, 0, 3)
    assert last3 == merged[-3:]
    after = await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, stamps[0], 100)
    assert after == [m for m in merged if decode(m)["timestamp"] > stamps[0]]
    assert await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE, "999999999", 0, 100) == []
    assert await store.read_pair(OTHER, HUMAN_COLOR, GODMODE, GODMODE_COLOR, 0, 100) == []
    # Only a GodMode identity merges sessions: another AI's pair is its conv: key alone.
    await post_ok(store, chat())
    await asyncio.sleep(0.003)
    [plain] = await store.read_pair(HUMAN, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR, 0, 100)
    assert decode(plain)["text"] == "just chatting"
    assert len(await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE.lower(), GODMODE_COLOR, 0, 100)) == 0


async def test_read_sessions_summaries(store: Store) -> None:
    question = godmode_question("Is there a God?")
    await post_ok(store, question)
    for p in godmode_session_posts(question["id"], "s-1", entities=3):
        await post_ok(store, p)
    for p in godmode_session_posts(question["id"], "s-2", entities=1):
        await post_ok(store, p)
    await store.save_session_meta(keys.session_meta_key("s-2"), b'{"humanQuestion":"Why?"}')
    page = await store.list_sessions(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, 50)
    rows = page.rows
    assert [r.member for r in rows] == [f"{GODMODE}:{GODMODE_COLOR}:s-2", f"{GODMODE}:{GODMODE_COLOR}:s-1"]
    assert (page.total, page.next) == (2, None)
    one = rows[1]
    key = keys.godmode_key(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, "s-1")
    raws = await raw_in(store, key)
    assert (one.count, one.byte_count, one.first) == (6, sum(map(len, raws)), raws[0])
    assert one.last_timestamp == decode(raws[-1])["timestamp"]
    assert one.replied is not None and decode(one.replied)["text"] == "Is there a God?"
    assert one.meta is None and one.messages is None  # the question is known: no metadata read
    only = await store.read_session(HUMAN, HUMAN_COLOR, None, None, "s-2")
    assert only is not None and only.member.endswith(":s-2") and only.messages == await raw_in(
        store, keys.godmode_key(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, "s-2"))
    assert not only.truncated
    assert await store.read_session(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, "s-2") == only
    assert await store.read_session(HUMAN, HUMAN_COLOR, GODMODE, "000000000", "s-2") is None
    assert await store.read_session(HUMAN, HUMAN_COLOR, None, None, "s-3") is None
    assert (await store.list_sessions(HUMAN, HUMAN_COLOR, GODMODE, "000000000", 50)).rows == []
    await store.redis.delete(key)  # a session deleted behind the service is left out
    assert [r.member for r in (await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 50)).rows] == [only.member]
    assert await store.read_session(HUMAN, HUMAN_COLOR, None, None, "s-1") is None


async def test_read_sessions_metadata_is_read_outside_the_script(store: Store) -> None:
    # Metadata keys live in any hash slot: the script must not read them (Redis Cluster refuses a
    # script touching keys of several slots); Store reads them after it, for the page only.
    sid = "s-meta"
    for body in godmode_session_posts("gone-question", sid, entities=1, answer_bytes=10, synthesis_bytes=10):
        await post_ok(store, body)
    await store.save_session_meta(keys.session_meta_key(sid), b'{"humanQuestion":"Why?"}')
    [row] = (await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 50)).rows
    assert row.replied is None and row.meta == b'{"humanQuestion":"Why?"}'
    assert models.session_summary(HUMAN, HUMAN_COLOR, row).question == "Why?"
    one = await store.read_session(HUMAN, HUMAN_COLOR, None, None, sid)
    assert one is not None and one.meta == row.meta
    lua = resources.files("app").joinpath("lua")
    for name in ("_lib", "read_sessions", "read_session"):
        assert "'GET'" not in lua.joinpath(f"{name}.lua").read_text("utf-8"), name


async def post_all(store: Store, bodies: list[dict[str, Any]]) -> None:
    for i in range(0, len(bodies), 500):  # one round trip per 500 appends
        results = await store.append_messages([models.plan_append(b, store.settings) for b in bodies[i : i + 500]])
        assert all(r.status == "ok" for r in results), results


OTHER_GOD_COLOR = "171181999"


async def many_sessions(store: Store, count: int) -> list[str]:
    """`count` one-message sessions of HUMAN, alternating between two GodMode pairs, oldest first."""
    bodies = [ai_reply("q-none", f"status {i}", user=GODMODE, color=(GODMODE_COLOR, OTHER_GOD_COLOR)[i % 2],
                       entity="god-mode", session_id=f"s-{i:05d}") for i in range(count)]
    await post_all(store, bodies)
    return [f"s-{i:05d}" for i in range(count)]


async def list_all(store: Store, limit: int, ai: tuple[str, str] | None = None,
                   max_bytes: int = PAGE_MAX_BYTES) -> tuple[list[str], list[int]]:
    """Every session id the listing pages through, and each page's total."""
    seen: list[str] = []
    totals: list[int] = []
    after = None
    while True:
        page = await store.list_sessions(HUMAN, HUMAN_COLOR, *(ai or (None, None)), limit, after, max_bytes=max_bytes)
        assert len(page.rows) <= limit
        seen += [row.member.rsplit(":", 1)[1] for row in page.rows]
        totals.append(page.total)
        if page.next is None:
            return seen, totals
        after = sessions.decode_cursor(sessions.encode_cursor(*page.next))  # as a client sends it back


async def redis_calls(store: Store) -> int | None:
    """Commands the real redis-server ran so far (scripts' commands included); None on fakeredis."""
    if isinstance(store.redis, fakeredis.FakeAsyncRedis):
        return None
    stats = await store.redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def test_list_sessions_pages_through_1500_sessions_once_newest_first(store: Store) -> None:
    ids = await many_sessions(store, 1500)
    seen, totals = await list_all(store, 200)
    assert seen == ids[::-1] and set(totals) == {1500}
    for color, mine in ((GODMODE_COLOR, ids[0::2]), (OTHER_GOD_COLOR, ids[1::2])):  # one pair: its own index
        seen, totals = await list_all(store, 64, (GODMODE, color))
        assert seen == mine[::-1] and set(totals) == {750}


async def test_list_sessions_cost_follows_the_page_not_the_sessions(store: Store) -> None:
    await many_sessions(store, 1500)
    before = await redis_calls(store)
    page = await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 10)
    deeper = await store.list_sessions(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, 10, ("x:y:gone", "0"))
    one = await store.read_session(HUMAN, HUMAN_COLOR, None, None, "s-00007")
    after = await redis_calls(store)
    assert len(page.rows) == 10 and page.total == 1500 and page.next is not None
    assert deeper.rows == [] or len(deeper.rows) <= 10
    assert one is not None and one.member == f"{GODMODE}:{OTHER_GOD_COLOR}:s-00007" and one.count == 1
    if before is not None and after is not None:  # per session: ~6 reads and one metadata GET
        assert after - before < 3 * (10 * 10 + 20), after - before


async def test_list_sessions_page_is_bounded_in_bytes(store: Store) -> None:
    # Long God Mode questions, each the first (human) message of its session: the old listing
    # answered all of them at once (1,500 of them made 90 MB).
    big = "q" * 100_000
    bodies = [godmode_question(big, botParams={"entity": "god-mode", "sessionId": f"s-{i:02d}",
                                               "ais": f"{GODMODE}:{GODMODE_COLOR}"}) for i in range(30)]
    await post_all(store, bodies)
    page = await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 50)
    assert 1 <= len(page.rows) < 30 and page.next is not None
    assert sum(len(r.first) for r in page.rows) <= PAGE_MAX_BYTES
    summaries = [models.session_summary(HUMAN, HUMAN_COLOR, r) for r in page.rows]
    assert all(s.question == big for s in summaries)
    seen, _ = await list_all(store, 50)
    assert seen == [f"s-{i:02d}" for i in range(30)][::-1]
    alone = await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 50, max_bytes=10)
    assert len(alone.rows) == 1  # the first session always comes, however big


async def test_list_sessions_resumes_after_a_session_deleted_at_the_cursor(store: Store) -> None:
    ids = await many_sessions(store, 6)
    first = await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 2)
    assert first.next is not None and [r.member.rsplit(":", 1)[1] for r in first.rows] == ids[:-3:-1]
    p = home(store)
    await store.redis.zrem(p.sessions(HUMAN, HUMAN_COLOR), first.next[0])  # the index entry the cursor names
    rest = await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 10, first.next)
    assert [r.member.rsplit(":", 1)[1] for r in rest.rows] == ids[-3::-1] and rest.next is None
    # A newer session posted between pages does not shift the next page.
    await post_ok(store, ai_reply("q-none", "late", user=GODMODE, color=GODMODE_COLOR, entity="god-mode",
                                  session_id="s-late"))
    again = await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 2, (first.rows[-1].member, first.rows[-1].score))
    assert [r.member.rsplit(":", 1)[1] for r in again.rows] == [ids[-3], ids[-4]]


async def test_list_sessions_skips_deleted_session_keys(store: Store) -> None:
    ids = await many_sessions(store, 5)
    for sid in ids[1:4]:
        color = (GODMODE_COLOR, OTHER_GOD_COLOR)[int(sid[2:]) % 2]
        await store.redis.delete(keys.godmode_key(HUMAN, HUMAN_COLOR, GODMODE, color, sid))
    seen, totals = await list_all(store, 1)
    assert seen == [ids[4], ids[0]] and set(totals) == {5}  # the index still names them until a rebuild


async def test_append_message_scores_a_legacy_session_entry_by_its_first_message(store: Store) -> None:
    # An index written by an earlier version held every session at score 0: the session's next
    # append gives it its first message's score, and the pair index and id lookup appear.
    posts = godmode_session_posts("q-none", SESSION, entities=1, answer_bytes=10, synthesis_bytes=10)
    await post_ok(store, posts[0])
    p = home(store)
    member = keys.session_member(GODMODE, GODMODE_COLOR, SESSION)
    await store.redis.zadd(p.sessions(HUMAN, HUMAN_COLOR), {member: 0})
    await store.redis.delete(p.pair_sessions(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR), p.session_ids)
    await post_ok(store, posts[1])
    [(_, first_score)] = await store.redis.zrange(SESSION_KEY, 0, 0, withscores=True)
    assert first_score > 0
    assert await store.redis.zscore(p.sessions(HUMAN, HUMAN_COLOR), member) == first_score
    assert await store.redis.zscore(p.pair_sessions(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR), member) == first_score
    assert await store.read_session(HUMAN, HUMAN_COLOR, None, None, SESSION) is not None


async def test_read_session_messages_are_bounded_in_bytes(store: Store) -> None:
    posts = godmode_session_posts("q-none", SESSION, entities=6, answer_bytes=1000, synthesis_bytes=10)
    for body in posts:
        await post_ok(store, body)
    raws = await raw_in(store, SESSION_KEY)
    whole = await store.read_session(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, SESSION)
    assert whole is not None and whole.messages == raws and not whole.truncated
    cut = await store.read_session(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, SESSION, max_bytes=3000)
    assert cut is not None and cut.truncated and cut.count == len(raws)
    assert cut.messages == raws[: len(cut.messages or [])] and sum(map(len, cut.messages or [])) <= 3000
    tiny = await store.read_session(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, SESSION, max_bytes=1)
    assert tiny is not None and tiny.messages == raws[:1] and tiny.truncated  # the first always comes


# -- purge_partition ----------------------------------------------------------------------------


async def fill(store: Store) -> None:
    """Every kind of thing the store writes: messages, sessions, queue, claims, lapses, metadata."""
    small = with_settings(store, conv_window=2)
    q = godmode_question()
    await post_ok(store, q)
    for body in godmode_session_posts(q["id"], SESSION, entities=1, answer_bytes=10, synthesis_bytes=10):
        await post_ok(store, body)
    await store.save_session_meta(keys.session_meta_key(SESSION), b"{}")
    for user in (HUMAN, OTHER):
        await post_ok(store, human(user=user))
        for i in range(3):
            await post_ok(small, human(entity=None, user=user, text=f"room {i}"))
    await queue.claim_next(store, worker("w"))


async def test_purge_leaves_no_key_of_ours(store: Store) -> None:
    await store.check_partitions()
    await store.redis.set("someone-else", "keep")
    await fill(store)
    assert await store.purge() > 0
    # The recorded PARTITIONS stays: running instances use it, and it still refuses another count.
    assert sorted(await store.redis.keys("*")) == [b"someone-else", keys.PARTITIONS_KEY.encode()]
    assert all(v == 0 for v in (await store.stats()).values())
    await post_ok(store, human())  # and the store works from scratch
    await check_indexes(store)


async def test_purge_after_a_lost_size_index_leaves_no_key_of_ours(store: Store) -> None:
    await store.redis.set("someone-else", "keep")
    await fill(store)
    await store.redis.delete(home(store).sizes)  # the hash purge_partition finds message keys by
    await store.purge()
    assert sorted(await store.redis.keys("*")) == [b"someone-else"]


async def test_purge_stray_keeps_what_a_write_after_the_purge_indexed(store: Store) -> None:
    # Keys SCAN finds after purge_partition ran: an unindexed session key and its human's sessions
    # index go; a key (and sessions index) that a later append indexed stays, counted.
    question = godmode_question()
    await post_ok(store, question)
    posts = godmode_session_posts(question["id"], SESSION, entities=1, answer_bytes=10, synthesis_bytes=10)
    for body in posts:
        await post_ok(store, body)
    p = home(store)
    session_key = keys.godmode_key(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, SESSION)
    sessions = p.sessions(HUMAN, HUMAN_COLOR)
    prefix = keys.human_godmode_prefix(HUMAN, HUMAN_COLOR)
    kept = [await store._eval(scripts.PurgeStray(k, p.sizes, g)) for k, g in ((session_key, ""), (sessions, prefix))]
    assert kept == [0, 0] and await store.redis.exists(session_key, sessions) == 2
    await store.redis.hdel(p.sizes, session_key)  # as if the partition's index was lost
    gone = [await store._eval(scripts.PurgeStray(k, p.sizes, g)) for k, g in ((sessions, prefix), (session_key, ""))]
    assert gone == [1, 1] and await store.redis.exists(session_key, sessions) == 0


# -- index_key, rebuild_indexes -----------------------------------------------------------------


async def test_rebuild_indexes_restores_poll_queue_lookups_and_stats(store: Store) -> None:
    q1, q2 = human(text="first"), godmode_question("second")
    await post_ok(store, q1)
    await post_ok(store, q2)
    await post_ok(store, human(entity=None, user=OTHER, eqScore=3))
    await queue.claim(store, q2["id"], worker("w"))
    for body in godmode_session_posts(q2["id"], "s-r", entities=2):
        await post_ok(store, body)
    await queue.update_score(store, q1["id"], 30)
    before_page = (await poll(store)).page
    before_stats = await counters(store)
    before_sessions = await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 50)
    clock = int(await store.redis.hget(home(store).meta, "clock"))

    # Lose every index; only the message keys and the queue contexts survive.
    lost = [k for p in store.partitions for k in p.own_keys() if k != p.contexts]
    lost += [k async for k in store.redis.scan_iter(match="sessions:*")]
    await store.redis.delete(*lost)
    rebuilt = await store.rebuild_indexes()

    assert rebuilt["messages"] == before_stats["messages"] and rebuilt["globalScore"] == 33
    assert (rebuilt["convKeys"], rebuilt["godmodeKeys"], rebuilt["partitions"]) == (3, 1, 12)
    assert (await poll(store)).page.messages == before_page.messages
    assert await counters(store) == before_stats
    assert await store.list_sessions(HUMAN, HUMAN_COLOR, None, None, 50) == before_sessions
    assert (await post_ok(store, chat())).timestamp >= clock
    await check_indexes(store)
    claimed, _, _, _ = await queue.claim_next(store, worker("w2"))
    assert claimed is not None and claimed["id"] == q1["id"] and claimed["context"] == q1["context"]
    await queue.complete(store, q2["id"], "")
    assert (await post(store, q1)).status == "duplicate"
    assert (await queue.update_score(store, q2["id"], 1))[1] == 34


async def test_rebuild_indexes_never_moves_a_clock_back(store: Store) -> None:
    await post_ok(store, chat())
    await post_ok(store, human(entity=None, user=OTHER))
    clocks = [int(await store.redis.hget(home(store, user).meta, "clock")) for user in (HUMAN, OTHER)]
    await store.redis.delete(*(p.meta for p in store.partitions))  # the clocks are lost with the counters
    await store.rebuild_indexes()
    for user, clock in zip((HUMAN, OTHER), clocks, strict=True):
        assert int(await store.redis.hget(home(store, user).meta, "clock") or 0) >= clock, user


async def test_rebuild_indexes_is_safe_to_repeat(store: Store) -> None:
    await fill(store)
    await store.rebuild_indexes()
    first = await snapshot(store)
    await store.rebuild_indexes()
    assert await snapshot(store) == first
    await check_indexes(store)


async def test_index_key_indexes_a_key_once_and_skips_foreign_members(store: Store) -> None:
    q = human()
    await post_ok(store, q)
    _, token = await queue.claim(store, q["id"], worker("w"))
    await post_ok(store, chat(eqScore=4))
    await post_ok(store, human(text="waiting"))
    p = home(store)
    await store.redis.delete(*p.own_keys())
    await store.redis.zadd(CONV, {"not a message of ours": 1})

    def call() -> scripts.IndexKey:
        return scripts.IndexKey(CONV, p.feed, p.ids, p.meta, p.sizes, p.pending, p.processing,
                                p.sessions(HUMAN, HUMAN_COLOR), p.sessions(HUMAN, HUMAN_COLOR), p.session_ids, keys.CONV,
                                "", "", 4000, keys.PRIORITY_STRIDE)

    raws = [m for m in await raw_in(store, CONV) if m.startswith(b"{")]
    assert await store._eval(call()) == (3, sum(map(len, raws)))
    assert await store._eval(call()) == (0, 0)  # already indexed: nothing counted twice
    meta = await store.redis.hgetall(p.meta)
    assert (int(meta[b"messages"]), int(meta[b"convKeys"]), int(meta[b"globalScore"])) == (3, 1, 4)
    assert await store.redis.zcard(p.pending) == 1 and await store.redis.zscore(p.processing, q["id"]) is not None
    assert await store.redis.hlen(p.ids) == 3 and await store.redis.zcard(p.feed) == 3
    assert token  # the claim itself is in the message: it is processing again


async def test_rebuild_indexes_repartition_moves_everything(store: Store) -> None:
    q1 = human(text="first")
    await post_ok(store, q1)
    question = godmode_question("Is there a God?", user=OTHER)
    await post_ok(store, question)
    for body in godmode_session_posts(question["id"], SESSION, entities=2, human_user=OTHER):
        await post_ok(store, body)
    claimed, _ = await queue.claim(store, question["id"], worker("w"))
    await queue.update_score(store, q1["id"], 30)
    ids_before = set((await follow(store, 100))[0])
    stats_before = await counters(store)
    sessions_before = await store.list_sessions(OTHER, HUMAN_COLOR, None, None, 50)

    rebuilt = await store.rebuild_indexes(keys.partitions(5))
    moved = with_settings(store, partitions=5)
    assert rebuilt["partitions"] == 5 and rebuilt["messages"] == stats_before["messages"]
    await moved.check_partitions()
    with pytest.raises(ConfigError):
        await store.check_partitions()  # the old count is refused now
    new_keys = {k for p in moved.partitions for k in p.own_keys()}
    for key in (k.decode() for k in await store.redis.keys("*")):
        assert key.startswith(("conv:", "godmode:", "store:", "sessions:{p")) or key in new_keys, key
        if key.startswith("sessions:"):
            assert any(key.startswith(p.sessions_prefix) for p in moved.partitions), key

    assert set((await follow(moved, 100))[0]) == ids_before
    assert await counters(moved) == stats_before
    assert await moved.list_sessions(OTHER, HUMAN_COLOR, None, None, 50) == sessions_before
    message, token = await queue.claim(moved, q1["id"], worker("w2"))
    assert message["context"] == q1["context"] and message["eqScore"] == 30
    await queue.complete(moved, q1["id"], token)
    await queue.complete(moved, claimed["id"], "")
    assert (await queue.update_score(moved, question["id"], 10))[1] == 40
    assert (await post(moved, q1)).status == "duplicate"
    await check_indexes(moved)


# -- the store itself ---------------------------------------------------------------------------


async def test_store_reloads_scripts_redis_forgot(store: Store) -> None:
    await post_ok(store, human())
    await store.redis.script_flush()
    await post_ok(store, human())
    assert (await queue.claim_next(store, worker("w")))[0] is not None


async def test_check_partitions_records_the_count_and_refuses_another(store: Store) -> None:
    await store.check_partitions()
    assert await store.redis.get(keys.PARTITIONS_KEY) == b"12"
    await store.check_partitions()
    with pytest.raises(ConfigError, match="repartition --to 5"):
        await with_settings(store, partitions=5).check_partitions()


async def test_stats_are_the_counters_and_queue_lengths(store: Store) -> None:
    await fill(store)
    assert set(await store.stats()) == {*COUNTERS, "pending", "processing"}


def test_settings_are_frozen(settings: Settings) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.conv_window = 1  # type: ignore[misc]


# -- connections and health ---------------------------------------------------------------------


async def test_a_burst_past_the_pool_waits_for_a_connection(redis_server: RedisServer) -> None:
    # Before: redis-py's plain pool refused request 257 at once (MaxConnectionsError -> 503).
    store = Store.from_settings(Settings(redis_url=redis_server.url, redis_max_connections=2))
    try:
        results = await asyncio.gather(*(post(store, chat(f"burst {i}", username=f"u{i}")) for i in range(60)))
        assert all(r.status == "ok" for r in results)
    finally:
        await store.close()


async def test_healthy_shares_one_ping_between_concurrent_callers(store: Store) -> None:
    pings = 0
    real_ping = store.ping

    async def counting_ping() -> None:
        nonlocal pings
        pings += 1
        await asyncio.sleep(0.01)
        await real_ping()

    store.ping = counting_ping  # type: ignore[method-assign]
    assert all(await asyncio.gather(*(store.healthy() for _ in range(500))))
    assert pings == 1
    assert await store.healthy(max_age_s=0) and pings == 2  # older than asked: checked again


async def test_healthy_turns_false_as_soon_as_a_request_finds_redis_down(redis_server: RedisServer) -> None:
    store = Store.from_settings(Settings(redis_url=redis_server.url, redis_timeout_s=0.3))
    try:
        assert await store.healthy()
        redis.Redis(port=redis_server.port).client_pause(1000)  # a stalled Redis
        with pytest.raises(StoreUnavailable):
            await post(store, chat("stalled"))
        assert not await store.healthy()  # the cached PING is recent, but a request just failed
    finally:
        redis.Redis(port=redis_server.port).client_unpause()
        await store.close()


@pytest.mark.parametrize("body", [chat("plain", eqScore=7), human("queued"), ai_reply("q1", "answered")],
                         ids=["no botParams", "pending", "complete"])
async def test_stored_member_is_what_append_message_writes(store: Store, body: dict[str, Any]) -> None:
    # import-legacy writes members itself (to keep their timestamps): they must match the script's.
    plan = models.plan_append(body, store.settings)
    result = await store.append_message(plan)
    assert result.status == "ok"
    [written] = await store.redis.zrange(plan.key, 0, -1)
    assert models.stored_member(plan, result.timestamp, result.domain) == written


def _as_struct(raw: bytes) -> models.Message:
    """A stored member decoded strictly as models.Message, after checking it re-encodes byte for byte."""
    message = msgspec.json.decode(raw, type=models.Message)
    assert encode(message) == raw, (raw, encode(message))
    return message


async def test_every_script_writes_what_the_message_struct_encodes(store: Store) -> None:
    # models.Message's field order is the byte format, and the Lua side writes it on its own
    # (append_message's head, _lib.lua's state tail): after each script, every member must decode
    # as the Struct and encode back to the same bytes.
    store = with_settings(store, claim_timeout_s=1)
    question = human()
    await post_ok(store, question)
    await post_ok(store, chat("no botParams", eqScore=3))
    await post_ok(store, ai_reply(question["id"], "answered"))
    states = [[m.botParams and m.botParams.status for m in map(_as_struct, await raw_in(store, CONV))]]
    await queue.claim_next(store, worker('w "1" \\ ü'))
    [claimed] = [m for m in map(_as_struct, await raw_in(store, CONV)) if m.id == question["id"]]
    assert claimed.botParams and claimed.botParams.claimedBy == 'w "1" \\ ü' and claimed.botParams.claimedAt
    await store.redis.zadd(home(store).processing, {question["id"]: 1}, xx=True)  # the claim expires
    await queue.claim_next(store, worker("w2"))  # requeues, then claims again
    await queue.update_score(store, question["id"], 64)
    await queue.complete(store, question["id"], "")
    [done] = [m for m in map(_as_struct, await raw_in(store, CONV)) if m.id == question["id"]]
    assert done.botParams and (done.botParams.status, done.botParams.attempts, done.eqScore) == ("complete", 1, 64)
    assert done.botParams.completedAt and done.botParams.claimedBy == "w2"
    assert states == [["pending", None, "complete"]]


async def test_scripts_read_the_state_the_message_struct_encodes(store: Store) -> None:
    # The other direction: a tail encoded by the Struct (an escaped claimedBy, attempts > 0), as
    # import-legacy writes it, is parsed by _lib.lua's state_read and rewritten whole.
    body = human()
    await post_ok(store, body)
    [raw] = await raw_in(store, CONV)
    message = _as_struct(raw)
    assert message.botParams is not None
    state = msgspec.structs.replace(message.botParams, status="processing", claimedBy='w "1" \\', claimedAt=123,
                                    attempts=3)
    edited = encode(msgspec.structs.replace(message, botParams=state))
    score = await store.redis.zscore(CONV, raw)
    for key in (CONV, home(store).feed):
        await store.redis.zrem(key, raw)
        await store.redis.zadd(key, {edited: score})
    written, _ = await queue.update_score(store, body["id"], 64)
    assert written == encode(msgspec.structs.replace(message, botParams=state, eqScore=64))
