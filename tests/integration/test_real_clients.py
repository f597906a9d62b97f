"""Replays of the real frontend and bot (../shared/clients.md) against gunicorn + real Redis."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import redis

from tests.helpers import (
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


class FrontendTab(threading.Thread):
    """Polls like the page: after = own clock - 6 s, limit=200, dedup by id."""

    def __init__(self, base_url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.stop_event = stop
        self.seen: dict[str, dict[str, Any]] = {}
        self.polls = 0

    def poll(self, after: int) -> None:
        data = ok(self.client.get("/api/comments", params={"after": after, "limit": 200}))
        for m in data["messages"]:
            self.seen[m["id"]] = m
        self.polls += 1

    def run(self) -> None:
        after = int(time.time() * 1000) - 6000
        while not self.stop_event.is_set():
            self.poll(after)
            after = int(time.time() * 1000) - 6000
            time.sleep(0.05)
        self.poll(after)  # one last poll after the writers stop


class CursorTab(threading.Thread):
    """Follows nextAfter exactly: must see every message once, in order, never a repeat."""

    def __init__(self, base_url: str, stop: threading.Event, start_after: int) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.stop_event = stop
        self.after = start_after
        self.ids: list[str] = []
        self.stamps: list[int] = []

    def drain(self) -> None:
        while True:
            data = ok(self.client.get("/api/comments", params={"after": self.after, "limit": 50}))
            self.ids += [m["id"] for m in data["messages"]]
            self.stamps += [m["timestamp"] for m in data["messages"]]
            self.after = data["nextAfter"]
            if not data["hasMore"]:
                return

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.drain()
            time.sleep(0.02)
        self.drain()


def test_frontend_poll_loop_sees_every_message_while_bots_write(http: httpx.Client, service: Any) -> None:
    stop = threading.Event()
    start = int(time.time() * 1000) - 1
    tabs = [FrontendTab(service.base_url, stop) for _ in range(3)]
    cursors = [CursorTab(service.base_url, stop, start) for _ in range(2)]
    for t in (*tabs, *cursors):
        t.start()

    acked: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        with httpx.Client(base_url=service.base_url, timeout=10) as c:
            # 160 messages in all: the page sees everything while fewer than `limit` (200)
            # arrive per 6 s; CursorTab covers any rate.
            for i in range(20):
                user = f"Person{n}"
                q = human(f"hello {i}", user=user, entity=None)
                ids = [ok(c.post("/api/comments", json=q))["id"]]
                reply = ai_reply(q["id"], f"answer {i}", human_user=user)
                ids.append(ok(c.post("/api/comments", json=reply))["id"])
                with lock:
                    acked.extend(ids)
                time.sleep(random.uniform(0, 0.01))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    time.sleep(0.2)
    stop.set()
    for t in (*tabs, *cursors):
        t.join(30)

    assert len(acked) == 160
    for tab in tabs:
        assert set(acked) <= set(tab.seen), f"tab missed {len(set(acked) - set(tab.seen))}"
    for cursor in cursors:
        assert sorted(cursor.ids) == sorted(acked) and len(cursor.ids) == len(set(cursor.ids))
        assert cursor.stamps == sorted(cursor.stamps)


def test_bot_loop_processes_every_human_message_exactly_once(http: httpx.Client, service: Any, rdb: redis.Redis) -> None:
    questions = [human(f"question {i}", user=f"Asker{i % 7}", domain="shittosay.app") for i in range(60)]
    for q in questions:
        ok(http.post("/api/comments", json=q))
    handled: list[str] = []
    scores: dict[str, int] = {}
    lock = threading.Lock()

    def bot(worker_id: str) -> None:
        with httpx.Client(base_url=service.base_url, timeout=10) as c:
            while True:
                claim = ok(c.post("/api/queue/claim-next", json={"workerId": worker_id}))
                if not claim["success"]:
                    return
                msg = claim["message"]
                assert msg["botParams"]["status"] == "processing" and msg["context"]
                score = random.randint(0, 100)
                ok(c.patch(f"/api/comments/{msg['id']}", json={"eqScore": score}))
                reply = ai_reply(msg["id"], f"reply to {msg['text']}", human_user=msg["username"],
                                 human_color=msg["color"])
                del reply["id"]  # the bot lets the server make ids
                ok(c.post("/api/comments", json=reply))
                assert ok(c.post("/api/queue/complete", json={"messageId": msg["id"]})) == {"success": True}
                with lock:
                    handled.append(msg["id"])
                    scores[msg["id"]] = score

    with ThreadPoolExecutor(5) as pool:
        list(pool.map(bot, [f"worker-{i}" for i in range(5)]))

    assert sorted(handled) == sorted(q["id"] for q in questions)
    stats = ok(http.get("/api/admin/stats"))
    assert stats["pending"] == 0 and stats["processing"] == 0
    assert stats["globalScore"] == sum(scores.values())
    messages = ok(http.get("/api/comments", params={"after": 0, "limit": 1000}))["messages"]
    replies = [m for m in messages if m["message-type"] == "AI"]
    assert len(replies) == 60 and {m["domain"] for m in replies} == {"shittosay.app"}
    assert all(m["botParams"]["status"] == "complete" for m in messages if m["message-type"] == "human")


def test_full_god_mode_session_as_the_bot_posts_it(http: httpx.Client, service: Any, rdb: redis.Redis,
                                                  keyname: Callable[[str], str]) -> None:
    question = godmode_question("What is consciousness?", domain="saywhatwant.app")
    ok(http.post("/api/comments", json=question))
    claim = ok(http.post("/api/queue/claim-next", json={"workerId": "godmode-worker"}))
    assert claim["message"]["id"] == question["id"]
    ok(http.patch(f"/api/comments/{question['id']}", json={"eqScore": 88}))
    session_id = f"{int(time.time() * 1000)}-1mmzaea"
    ids = []
    for body in godmode_session_posts(question["id"], session_id, entities=31, answer_bytes=1500, synthesis_bytes=7000):
        ids.append(ok(http.post("/api/comments", json=body))["id"])
    meta = {"sessionKey": f"godmode-session:{session_id}", "sessionData": {
        "sessionId": session_id, "timestamp": int(time.time() * 1000), "humanUsername": HUMAN,
        "humanColor": HUMAN_COLOR, "humanQuestion": question["text"], "humanMessageId": question["id"],
        "godModeUsername": GODMODE, "godModeColor": GODMODE_COLOR, "entitiesUsed": [f"Entity{i}" for i in range(31)],
        "entityCount": 31, "messageIds": ids}}
    assert ok(http.post("/api/godmode-session", json=meta)) == {
        "success": True, "sessionKey": f"godmode-session:{session_id}", "messageCount": 34}
    assert ok(http.post("/api/queue/complete", json={"messageId": question["id"]})) == {"success": True}

    key = keyname(f"godmode:{HUMAN}:{HUMAN_COLOR}:{GODMODE}:{GODMODE_COLOR}:{session_id}")
    assert list(rdb.scan_iter(match=f"godmode:{HUMAN}:{HUMAN_COLOR}:{GODMODE}:{GODMODE_COLOR}:*")) == [key.encode()]
    assert rdb.zcard(key) == 34
    one = ok(http.get(f"/api/godmode-session/{session_id}", params={"humanUsername": HUMAN, "humanColor": HUMAN_COLOR}))
    assert [m["id"] for m in one["messages"]] == ids and one["messageCount"] == 34
    assert one["session"]["question"] == "What is consciousness?" and one["session"]["key"] == key
    assert one["session"]["bytes"] == sum(len(m) for m in rdb.zrange(key, 0, -1))
    same = ok(http.get("/api/godmode-conversation", params={"humanUsername": HUMAN, "humanColor": HUMAN_COLOR,
                                                            "sessionId": session_id}))
    assert same["messages"] == one["messages"]
    stream = ok(http.get("/api/comments", params={"after": 0, "limit": 200}))["messages"]
    god = [m for m in stream if m["username"] == GODMODE and m["color"] == GODMODE_COLOR]
    assert [m["id"] for m in god] == ids
    assert {m["domain"] for m in god} == {"saywhatwant.app"}
    assert all(m["botParams"]["sessionId"] == session_id and m["replyTo"] == question["id"] for m in god)
    stored_q = next(m for m in stream if m["id"] == question["id"])
    assert stored_q["botParams"]["status"] == "complete" and stored_q["eqScore"] == 88
