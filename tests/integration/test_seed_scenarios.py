"""The seed's five test scenarios and its success criteria, through HTTP, against a real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
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

PAIR = f"{HUMAN}:{HUMAN_COLOR}:{GODMODE}:{GODMODE_COLOR}"
GOD_PAIR_QUERY = {"humanUsername": HUMAN, "humanColor": HUMAN_COLOR, "aiUsername": GODMODE, "aiColor": GODMODE_COLOR}


def run_session(http: httpx.Client, session_id: str, entities: int = 6, **kw: Any) -> tuple[dict[str, Any], list[str]]:
    question = godmode_question(f"Question for {session_id}")
    ok(http.post("/api/comments", json=question))
    ids = []
    for body in godmode_session_posts(question["id"], session_id, entities=entities, **kw):
        ids.append(ok(http.post("/api/comments", json=body))["id"])
    return question, ids


def test_1_session_isolation(http: httpx.Client, rdb: redis.Redis, keyname: Callable[[str], str]) -> None:
    run_session(http, "1762985133459-fswhr02")
    key1 = keyname(f"godmode:{PAIR}:1762985133459-fswhr02")
    before = rdb.zrange(key1, 0, -1)
    assert len(before) == 9
    run_session(http, "1762985434567-abc123x")
    key2 = keyname(f"godmode:{PAIR}:1762985434567-abc123x")
    assert len(rdb.zrange(key2, 0, -1)) == 9
    assert rdb.zrange(key1, 0, -1) == before  # session 1 unchanged
    assert sorted(rdb.scan_iter(match=f"godmode:{PAIR}:*")) == sorted([key1.encode(), key2.encode()])


def test_2_frontend_polling_sees_every_session_message(http: httpx.Client) -> None:
    after = int(time.time() * 1000) - 6000
    _, ids1 = run_session(http, "s-poll-1")
    _, ids2 = run_session(http, "s-poll-2")
    time.sleep(0.005)  # reads hold back the current millisecond (README: the poll)
    page = ok(http.get("/api/comments", params={"after": after, "limit": 200}))
    # The God Mode view is the frontend's own filter on the global stream.
    seen = [m["id"] for m in page["messages"] if m["username"] == GODMODE and m["color"] == GODMODE_COLOR]
    assert seen == ids1 + ids2
    texts = [m["text"] for m in page["messages"] if m["username"] == GODMODE]
    assert texts[0].startswith("🔮") and texts[-1].startswith("⚡") and any(t.startswith("🧠") for t in texts)
    view = http.get("/api/conversation", params=GOD_PAIR_QUERY).json()
    assert [m["id"] for m in view if m["username"] == GODMODE] == ids1 + ids2


def test_3_unlimited_sessions_no_errors(http: httpx.Client, rdb: redis.Redis) -> None:
    for i in range(22):
        run_session(http, f"s-many-{i:02d}", entities=31, answer_bytes=900, synthesis_bytes=6000)
    keys = list(rdb.scan_iter(match=f"godmode:{PAIR}:*"))
    assert len(keys) == 22
    assert all(sum(len(m) for m in rdb.zrange(k, 0, -1)) < 128 * 1024 for k in keys)
    listed = ok(http.get("/api/godmode-sessions", params=GOD_PAIR_QUERY))
    assert listed["total"] == 22 and all(s["messageCount"] == 34 for s in listed["sessions"])


def test_4_global_polling_mixes_godmode_and_normal(http: httpx.Client) -> None:
    q = human()
    ok(http.post("/api/comments", json=q))
    run_session(http, "s-global")
    ok(http.post("/api/comments", json=ai_reply(q["id"], "normal answer")))
    time.sleep(0.005)  # reads hold back the current millisecond (README: the poll)
    page = ok(http.get("/api/comments", params={"after": 0}))
    users = [m["username"] for m in page["messages"]]
    assert users[0] == HUMAN and users[-1] == ETERNAL and GODMODE in users
    stamps = [m["timestamp"] for m in page["messages"]]
    assert stamps == sorted(stamps)


def test_5_backward_compatibility(http: httpx.Client, rdb: redis.Redis, keyname: Callable[[str], str]) -> None:
    q = human()
    conv = keyname(f"conv:{HUMAN}:{HUMAN_COLOR}:{ETERNAL}:{ETERNAL_COLOR}")
    assert ok(http.post("/api/comments", json=q))["key"] == conv
    # Rolling window: the newest 300 stay.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ok(http.post("/api/comments", json=ai_reply(q["id"], f"r{i}"))), range(310)))
    assert rdb.zcard(conv) == 300
    assert q["id"].encode() in rdb.zrange(conv, 0, 0)[0]  # still pending: never trimmed
    # A legacy God Mode message (no sessionId) stays in the pair's conv: key and is still read.
    legacy = ai_reply(q["id"], "legacy god mode answer", user=GODMODE, color=GODMODE_COLOR, entity="god-mode")
    assert ok(http.post("/api/comments", json=legacy))["key"] == keyname(f"conv:{PAIR}")
    run_session(http, "s-new")
    time.sleep(0.005)  # reads hold back the current millisecond (README: the poll)
    view = http.get("/api/conversation", params=GOD_PAIR_QUERY).json()
    assert view[0]["id"] == legacy["id"] and len(view) == 1 + 1 + 9  # legacy + question + session


def test_success_criteria_100_sessions_of_31_entities(http: httpx.Client, rdb: redis.Redis) -> None:
    def one(i: int) -> None:
        question = godmode_question(f"Q{i}")
        ok(http.post("/api/comments", json=question))
        for body in godmode_session_posts(question["id"], f"{1763027011418 + i}-x{i:06d}", entities=31,
                                          answer_bytes=700, synthesis_bytes=4000):
            ok(http.post("/api/comments", json=body))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(104)))
    keys = list(rdb.scan_iter(match=f"godmode:{PAIR}:*", count=1000))
    assert len(keys) == 104
    assert {rdb.zcard(k) for k in keys} == {34}
    listed = ok(http.get("/api/godmode-sessions", params=GOD_PAIR_QUERY))
    assert listed["total"] == 104
    firsts = [s["firstTimestamp"] for s in listed["sessions"]]
    assert firsts == sorted(firsts, reverse=True)  # newest first
    assert all(s["question"].startswith("Q") for s in listed["sessions"])
    stats = ok(http.get("/api/admin/stats"))
    assert stats["keys"]["godmode"] == 104 and stats["messages"] == 104 * 35
