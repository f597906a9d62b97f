"""Store and its Lua scripts, each test on fakeredis and on a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from app import keys, models, queue
from app.config import Settings
from app.errors import Conflict, NotFound
from app.models import decode
from app.store import Store
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
    uid,
)

CONV = keys.conv_key(HUMAN, HUMAN_COLOR, ETERNAL, ETERNAL_COLOR)


async def post(store: Store, body: dict[str, Any]) -> Any:
    return await store.append_message(models.plan_append(body, store.settings))


def with_settings(store: Store, **changes: Any) -> Store:
    return Store(store.redis, dataclasses.replace(store.settings, **changes))


async def messages_in(store: Store, key: str) -> list[dict[str, Any]]:
    return [decode(m) for m in await store.redis.zrange(key, 0, -1)]


async def test_append_message_first_write_creates_key_and_indexes(store: Store) -> None:
    body = human()
    result = await post(store, body)
    assert result.status == "ok" and result.key == CONV
    [stored] = await messages_in(store, CONV)
    assert stored["id"] == body["id"] and stored["timestamp"] == result.timestamp
    assert stored["text"] == body["text"] and stored["domain"] == "saywhatwant.app"
    assert stored["botParams"]["status"] == "pending" and stored["botParams"]["humanUsername"] == HUMAN
    assert "context" not in stored  # kept with the queue entry, not in the 128 KiB
    raw = (await store.redis.zrange(CONV, 0, -1))[0]
    assert int(await store.redis.hget(keys.size_key(CONV), "total")) == len(raw)
    stats = await store.stats()
    assert stats["messages"] == 1 and stats["convKeys"] == 1 and stats["pending"] == 1


async def test_append_message_same_id_is_a_duplicate_and_changes_nothing(store: Store) -> None:
    body = human()
    first = await post(store, body)
    again = await post(store, {**body, "text": "changed"})
    assert again.status == "duplicate" and again.timestamp == first.timestamp and again.key == CONV
    assert [m["text"] for m in await messages_in(store, CONV)] == [body["text"]]
    assert (await store.stats())["messages"] == 1


async def test_append_message_timestamps_strictly_increase(store: Store) -> None:
    results = await asyncio.gather(*(post(store, human(entity=None)) for _ in range(50)))
    stamps = sorted(r.timestamp for r in results)
    assert len(set(stamps)) == 50


async def test_append_message_ai_reply_takes_question_domain(store: Store) -> None:
    question = human(domain="shittosay.app")
    await post(store, question)
    reply = ai_reply(question["id"])
    assert (await post(store, reply)).key == CONV
    msgs = {m["id"]: m for m in await messages_in(store, CONV)}
    assert msgs[reply["id"]]["domain"] == "shittosay.app"
    assert msgs[reply["id"]]["botParams"]["status"] == "complete"
    assert msgs[reply["id"]]["botParams"]["completedAt"] == msgs[reply["id"]]["timestamp"]


async def test_append_message_conv_window_keeps_newest(store: Store) -> None:
    store = with_settings(store, conv_window=5)
    bodies = [human(entity=None, ais=None, text=f"n{i}") for i in range(8)]
    key = keys.conv_key(HUMAN, HUMAN_COLOR, keys.PLATFORM, keys.PLATFORM)
    for body in bodies:
        await post(store, body)
    assert [m["text"] for m in await messages_in(store, key)] == [f"n{i}" for i in range(3, 8)]
    page = await store.read_stream(0, 100, "")
    assert [decode(m)["text"] for m in page.messages] == [f"n{i}" for i in range(3, 8)]
    stats = await store.stats()
    assert stats["messages"] == 5
    raws = await store.redis.zrange(key, 0, -1)
    assert int(await store.redis.hget(keys.size_key(key), "total")) == sum(map(len, raws)) == stats["bytes"]


async def test_append_message_conv_trims_for_bytes_but_never_in_flight(store: Store) -> None:
    store = with_settings(store, max_key_bytes=4096)
    queued = human(text="keep me " + "q" * 300)  # pending: must survive every trim
    await post(store, queued)
    for i in range(12):
        result = await post(store, ai_reply(queued["id"], f"r{i} " + "x" * 600))
        assert result.status == "ok"
    stored = await messages_in(store, CONV)
    assert stored[0]["id"] == queued["id"]
    assert stored[-1]["text"].startswith("r11")
    total = int(await store.redis.hget(keys.size_key(CONV), "total"))
    assert total <= 4096 and total == sum(map(len, await store.redis.zrange(CONV, 0, -1)))


async def test_append_message_many_in_flight_at_head_are_skipped(store: Store) -> None:
    store = with_settings(store, conv_window=10)
    pending_ids = []
    for i in range(6):
        body = human(text=f"pending {i}")
        pending_ids.append(body["id"])
        await post(store, body)
    for i in range(10):
        await post(store, ai_reply(pending_ids[0], f"answer {i}"))
    stored = await messages_in(store, CONV)
    assert len(stored) == 10
    assert [m["id"] for m in stored[:6]] == pending_ids
    assert [m["text"] for m in stored[6:]] == [f"answer {i}" for i in range(6, 10)]


async def test_append_message_backlog_of_in_flight_is_413_and_writes_nothing(store: Store) -> None:
    store = with_settings(store, max_key_bytes=2048)
    for i in range(2):
        assert (await post(store, human(text=f"{i} " + "p" * 500))).status == "ok"
    before = await store.redis.zrange(CONV, 0, -1)
    result = await post(store, human(text="one too many " + "p" * 500))
    assert result.status == "backlog" and result.limit == 2048
    assert await store.redis.zrange(CONV, 0, -1) == before


async def test_append_message_full_godmode_session_is_refused_unchanged(store: Store) -> None:
    store = with_settings(store, max_key_bytes=8192)
    question = godmode_question()
    await post(store, question)
    posts = godmode_session_posts(question["id"], "1763027011418-1mmzaea", entities=20, answer_bytes=500)
    results = [await post(store, p) for p in posts]
    statuses = [r.status for r in results]
    assert "too_large" in statuses
    key = results[0].key
    assert key == keys.godmode_key(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, "1763027011418-1mmzaea")
    kept = await store.redis.zrange(key, 0, -1)
    assert len(kept) == statuses.count("ok")
    assert sum(map(len, kept)) <= 8192


async def test_append_message_larger_than_limit_is_refused_anywhere(store: Store) -> None:
    store = with_settings(store, max_key_bytes=2048)
    result = await post(store, human(entity=None, text="x" * 3000))
    assert result.status == "too_large" and result.size > 2048
    assert await store.redis.exists(keys.conv_key(HUMAN, HUMAN_COLOR, keys.PLATFORM, keys.PLATFORM)) == 0
    assert (await store.read_stream(0, 10, "")).messages == []


async def test_append_message_trimmed_id_stays_a_duplicate_until_ttl(store: Store) -> None:
    store = with_settings(store, conv_window=2, idempotency_ttl_s=1)
    first = human(entity=None)
    await post(store, first)
    for _ in range(3):
        await post(store, human(entity=None))
    assert (await post(store, first)).status == "duplicate"
    await asyncio.sleep(1.1)
    await post(store, human(entity=None))  # lapsed records are forgotten on the next append
    assert (await post(store, first)).status == "ok"


async def test_append_message_wrong_key_type_is_refused_without_writes(store: Store) -> None:
    await store.redis.set(CONV, "operator typo")
    with pytest.raises(Conflict):
        await post(store, human())
    assert await store.redis.get(CONV) == b"operator typo"
    assert await store.redis.exists(keys.STREAM, keys.MSGLOC, keys.PENDING) == 0


async def test_read_stream_pages_follow_next_after_without_gaps(store: Store) -> None:
    sent = []
    for i in range(7):
        q = human(text=f"q{i}")
        sent.append(q["id"])
        await post(store, q)
        r = ai_reply(q["id"], f"a{i}")
        sent.append(r["id"])
        await post(store, r)
    seen, after, pages = [], 0, 0
    while True:
        page = await store.read_stream(after, 3, "")
        seen += [decode(m)["id"] for m in page.messages]
        after, pages = page.next_after, pages + 1
        if not page.has_more:
            break
    assert seen == sent and pages == 5


async def test_read_stream_type_filter_and_global_score(store: Store) -> None:
    q = human()
    await post(store, q)
    await post(store, ai_reply(q["id"], eqScore=7))
    humans = await store.read_stream(0, 10, "h")
    ais = await store.read_stream(0, 10, "a")
    assert [decode(m)["message-type"] for m in humans.messages] == ["human"]
    assert [decode(m)["message-type"] for m in ais.messages] == ["AI"]
    assert humans.global_score == 7


async def test_read_stream_window_bounds_the_index(store: Store) -> None:
    store = with_settings(store, stream_window=4)
    for i in range(6):
        await post(store, human(entity=None, text=f"t{i}"))
    page = await store.read_stream(0, 100, "")
    assert [decode(m)["text"] for m in page.messages] == ["t2", "t3", "t4", "t5"]
    key = keys.conv_key(HUMAN, HUMAN_COLOR, keys.PLATFORM, keys.PLATFORM)
    assert len(await messages_in(store, key)) == 6  # older messages stay readable in their key


async def test_read_pair_merges_sessions_and_conv_key(store: Store) -> None:
    question = godmode_question()
    await post(store, question)
    for sid in ("1763027011418-aaaaaaa", "1763027099999-bbbbbbb"):
        for p in godmode_session_posts(question["id"], sid, entities=2, answer_bytes=10, synthesis_bytes=10):
            await post(store, p)
    merged = await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, 0, 100)
    stamps = [decode(m)["timestamp"] for m in merged]
    assert len(merged) == 1 + 2 * 5 and stamps == sorted(stamps)
    assert decode(merged[0])["id"] == question["id"]
    last3 = await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR, 0, 3)
    assert last3 == merged[-3:]
    other = await store.read_pair(HUMAN, HUMAN_COLOR, GODMODE, "999999999", 0, 100)
    assert other == []


async def test_queue_claim_next_priority_then_age_and_context(store: Store) -> None:
    low = human(text="low")
    high = human(text="high")
    high["botParams"]["priority"] = 9
    await post(store, low)
    await post(store, high)
    first, total, remaining = await queue.claim_next(store, "worker-1")
    assert first is not None and first["id"] == high["id"] and (total, remaining) == (2, 1)
    assert first["context"] == high["context"] and first["botParams"]["claimedBy"] == "worker-1"
    second, _, _ = await queue.claim_next(store, "worker-2")
    assert second is not None and second["id"] == low["id"]
    assert (await queue.claim_next(store, "worker-3"))[0] is None


async def test_queue_two_claimers_exactly_one_wins(store: Store) -> None:
    body = human()
    await post(store, body)
    outcomes = await asyncio.gather(
        *(queue.claim(store, body["id"], f"w{i}") for i in range(8)), return_exceptions=True
    )
    assert sum(isinstance(o, dict) for o in outcomes) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, dict))


async def test_queue_complete_then_complete_again_conflicts(store: Store) -> None:
    body = human()
    await post(store, body)
    await queue.claim_next(store, "w")
    await queue.complete(store, body["id"])
    with pytest.raises(Conflict):
        await queue.complete(store, body["id"])
    with pytest.raises(NotFound):
        await queue.complete(store, uid())
    no_queue = human(entity=None)
    await post(store, no_queue)
    with pytest.raises(Conflict):
        await queue.complete(store, no_queue["id"])
    assert await store.queue_counts() == (0, 0)
    assert await store.redis.exists(keys.inflight_key(CONV)) == 0


async def test_queue_expired_claim_returns_to_pending(store: Store) -> None:
    store = with_settings(store, claim_timeout_s=1)
    body = human()
    await post(store, body)
    claimed, _, _ = await queue.claim_next(store, "crashed-worker")
    assert claimed is not None
    assert (await queue.claim_next(store, "w2"))[0] is None
    await asyncio.sleep(1.1)
    again, _, _ = await queue.claim_next(store, "w2")
    assert again is not None and again["id"] == body["id"]
    assert again["botParams"]["claimedBy"] == "w2" and again["botParams"]["attempts"] == 1


async def test_update_score_replaces_share_of_global_score(store: Store) -> None:
    body = human()
    await post(store, body)
    await queue.update_score(store, body["id"], 72)
    message, total = await queue.update_score(store, body["id"], 40)
    assert message["eqScore"] == 40 and total == 40
    [stored] = await messages_in(store, CONV)
    assert stored["timestamp"] == message["timestamp"] and stored["eqScore"] == 40
    raw = (await store.redis.zrange(CONV, 0, -1))[0]
    sizes = await store.redis.hmget(keys.size_key(CONV), "total", "inflight")
    assert int(sizes[0]) == int(sizes[1]) == len(raw)


async def test_in_place_updates_are_never_refused_for_size(store: Store) -> None:
    store = with_settings(store, max_key_bytes=1024)
    body = human(text="z" * 540)
    assert (await post(store, body)).status == "ok"
    assert 1024 - int(await store.redis.hget(keys.size_key(CONV), "total")) < 100  # nearly full
    claimed, _, _ = await queue.claim_next(store, "a-worker-with-a-long-name-" + "w" * 100)
    assert claimed is not None
    await queue.complete(store, body["id"])
    raw = (await store.redis.zrange(CONV, 0, -1))[0]
    assert int(await store.redis.hget(keys.size_key(CONV), "total")) == len(raw)


async def test_read_sessions_summaries(store: Store) -> None:
    question = godmode_question("Is there a God?")
    await post(store, question)
    for p in godmode_session_posts(question["id"], "s-1", entities=3):
        await post(store, p)
    [row] = await store.read_sessions(HUMAN, HUMAN_COLOR, GODMODE, GODMODE_COLOR)
    assert row.member == f"{GODMODE}:{GODMODE_COLOR}:s-1" and row.count == 6
    assert row.replied is not None and decode(row.replied)["text"] == "Is there a God?"
    assert await store.read_sessions(HUMAN, HUMAN_COLOR, GODMODE, "000000000") == []


async def test_purge_deletes_only_service_keys(store: Store) -> None:
    await store.redis.set("someone-else", "keep")
    q = godmode_question()
    await post(store, q)
    for p in godmode_session_posts(q["id"], "s-2", entities=1):
        await post(store, p)
    assert await store.purge() > 0
    assert sorted(await store.redis.keys("*")) == [b"someone-else"]


def test_settings_are_frozen(settings: Settings) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.conv_window = 1  # type: ignore[misc]


async def test_rebuild_indexes_restores_poll_queue_and_lookups(store: Store) -> None:
    q1, q2 = human(text="first"), godmode_question("second")
    await post(store, q1)
    await post(store, q2)
    await queue.claim(store, q2["id"], "w")
    for p in godmode_session_posts(q2["id"], "s-r", entities=2):
        await post(store, p)
    await queue.update_score(store, q1["id"], 30)
    before_page = await store.read_stream(0, 100, "")
    before_stats = await store.stats()
    before_sessions = await store.read_sessions(HUMAN, HUMAN_COLOR, None, None)

    # Lose every index; only the message keys survive.
    await store.redis.delete(keys.STREAM, keys.MSGLOC, keys.STATS, keys.PENDING, keys.PROCESSING,
                             keys.human_sessions_key(HUMAN, HUMAN_COLOR), keys.size_key(CONV), keys.inflight_key(CONV))
    counters = await store.rebuild_indexes()

    assert counters["messages"] == before_stats["messages"] and counters["globalScore"] == 30
    assert (await store.read_stream(0, 100, "")).messages == before_page.messages
    assert await store.stats() == before_stats
    assert await store.read_sessions(HUMAN, HUMAN_COLOR, None, None) == before_sessions
    claimed, _, _ = await queue.claim_next(store, "w2")
    assert claimed is not None and claimed["id"] == q1["id"] and claimed["context"] == q1["context"]
    await queue.complete(store, q2["id"])
    assert (await post(store, q1)).status == "duplicate"


async def test_read_stream_recent_copies_and_index_agree(store: Store) -> None:
    store = with_settings(store, recent_messages=4)
    q = human()
    await post(store, q)
    for i in range(59):
        await post(store, ai_reply(q["id"], f"a{i}"))
    await queue.update_score(store, q["id"], 9)  # an in-place update reaches the copies too
    every = await store._read_stream_index(0, 100, "")
    stamps = [decode(m)["timestamp"] for m in every.messages]
    copies = await store.redis.zrange(keys.RECENT, 0, -1)
    # Trimmed on about every 8th append: bounded, and here far smaller than the 60 messages.
    assert 4 <= len(copies) < 60 and copies == every.messages[-len(copies):]
    for after in [0, stamps[10], stamps[-len(copies) - 1], stamps[-len(copies)], stamps[-2], stamps[-1]]:
        for limit in (1, 2, 50):
            for flag in ("", "h", "a"):
                fast, slow = await store.read_stream(after, limit, flag), await store._read_stream_index(after, limit, flag)
                assert (fast.messages, fast.next_after, fast.has_more, fast.global_score) == (
                    slow.messages, slow.next_after, slow.has_more, slow.global_score)


async def test_recent_copies_drop_trimmed_messages(store: Store) -> None:
    store = with_settings(store, conv_window=3, recent_messages=10)
    key = keys.conv_key(HUMAN, HUMAN_COLOR, keys.PLATFORM, keys.PLATFORM)
    for i in range(6):
        await post(store, human(entity=None, text=f"t{i}"))
    assert await store.redis.zrange(keys.RECENT, 0, -1) == await store.redis.zrange(key, 0, -1)
    assert [decode(m)["text"] for m in (await store.read_stream(0, 10, "")).messages] == ["t3", "t4", "t5"]


async def test_claim_next_drops_entries_whose_message_vanished(store: Store) -> None:
    gone, kept = human(text="gone"), human(text="kept", user="Other")
    await post(store, gone)
    await post(store, kept)
    await store.redis.delete(CONV)  # an operator deleted the conversation by hand
    claimed, _, _ = await queue.claim_next(store, "w")
    assert claimed is not None and claimed["id"] == kept["id"]
    assert await store.redis.zscore(keys.PENDING, gone["id"]) is None
    assert await store.redis.exists(keys.context_key(gone["id"])) == 0
