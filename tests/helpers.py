"""Message bodies shaped like the real frontend's and bot's (../shared/clients.md)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

HUMAN, HUMAN_COLOR = "Human", "080150227"
ETERNAL, ETERNAL_COLOR = "TheEternal", "080175220"
GODMODE, GODMODE_COLOR = "GodMode", "171181104"

_ids = itertools.count()


def uid(prefix: str = "m") -> str:
    return f"{prefix}{next(_ids):010d}"


def human(text: str = "What is the meaning of life?", *, entity: str | None = "the-eternal",
          ais: str | None = f"{ETERNAL}:{ETERNAL_COLOR}", user: str = HUMAN, color: str = HUMAN_COLOR,
          **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": uid("h"), "timestamp": 1766300000123, "text": text, "username": user, "color": color,
        "domain": "saywhatwant.app", "language": "en", "message-type": "human", "misc": "",
        "context": ["Human: hi", "TheEternal: Hello, traveler."],
    }
    if entity is not None:
        body["botParams"] = {"entity": entity, "priority": 5, **({"ais": ais} if ais else {})}
    body.update(extra)
    return body


def ai_reply(reply_to: str, text: str = "An answer.", *, user: str = ETERNAL, color: str = ETERNAL_COLOR,
             entity: str = "the-eternal", human_user: str = HUMAN, human_color: str = HUMAN_COLOR,
             session_id: str | None = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"humanUsername": human_user, "humanColor": human_color, "entity": entity,
                              "ais": f"{user}:{color}"}
    if session_id:
        params["sessionId"] = session_id
    body = {"id": uid("a"), "text": text, "username": user, "color": color, "message-type": "AI",
            "replyTo": reply_to, "botParams": params}
    body.update(extra)
    return body


def godmode_question(text: str = "What should I do?", **extra: Any) -> dict[str, Any]:
    return human(text, entity="god-mode", ais=f"{GODMODE}:{GODMODE_COLOR}", **extra)


def godmode_session_posts(question_id: str, session_id: str, entities: int = 6,
                          answer_bytes: int = 800, synthesis_bytes: int = 3000,
                          human_user: str = HUMAN, human_color: str = HUMAN_COLOR) -> list[dict[str, Any]]:
    """Everything the bot posts for one God Mode session, in order."""
    def post(text: str) -> dict[str, Any]:
        return ai_reply(question_id, text, user=GODMODE, color=GODMODE_COLOR, entity="god-mode",
                        human_user=human_user, human_color=human_color, session_id=session_id)

    posts = [post(f"🔮 I will now begin the inquiry with {entities} entities...")]
    for i in range(entities):
        posts.append(post(f"(Entity{i}) " + "x" * answer_bytes))
    posts.append(post("🧠 Give me a minute to synthesise..."))
    posts.append(post("⚡ " + "s" * synthesis_bytes))
    return posts


def ok(r: httpx.Response) -> dict[str, Any]:
    """The JSON of a 200 response; anything else fails the test with the body."""
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


# -- the partitioned layout, read as an operator would (app/keys.py names every key) -------------

PARTITIONS = 12  # the default; tests that start a service with another PARTITIONS pass theirs


def partitions(count: int = PARTITIONS) -> tuple[Any, ...]:
    from app import keys

    return keys.partitions(count)


def recorded_partitions(rdb: Any) -> int:
    """The PARTITIONS the store was created with (recorded at the service's first start), or the
    default when nothing is recorded (a test flushed the store)."""
    from app import keys

    recorded = rdb.get(keys.PARTITIONS_KEY)
    return int(recorded) if recorded else PARTITIONS


def store_partitions(rdb: Any, count: int | None = None) -> tuple[Any, ...]:
    """The partitions of the store `rdb` holds: `count` of them, else as many as it recorded."""
    return partitions(count or recorded_partitions(rdb))


def queue_sizes(rdb: Any, count: int | None = None) -> tuple[int, int]:
    """(pending, processing) summed over every partition."""
    pipe = rdb.pipeline(transaction=False)
    for p in store_partitions(rdb, count):
        pipe.zcard(p.pending)
        pipe.zcard(p.processing)
    replies = pipe.execute()
    return sum(replies[0::2]), sum(replies[1::2])


def stats(rdb: Any, count: int | None = None) -> dict[str, int]:
    """Every partition's counters summed (what /api/admin/stats reports)."""
    out: dict[str, int] = {}
    for p in store_partitions(rdb, count):
        for field, value in rdb.hgetall(p.meta).items():
            if field not in (b"clock", b"seq"):
                out[field.decode()] = out.get(field.decode(), 0) + int(value)
    return out


def locate(rdb: Any, message_id: str, count: int | None = None) -> tuple[int, str] | None:
    """(timestamp, message key) of an id, from the partitions' id indexes."""
    for p in store_partitions(rdb, count):
        loc = rdb.hget(p.ids, message_id)
        if loc is not None:
            ts, _domain, key = loc.decode().split(" ", 2)
            return int(ts), key
    return None


def stored(rdb: Any, key: str, ts: int) -> list[bytes]:
    """Members of a message key with this whole-ms timestamp (scores are ts + a fraction)."""
    return list(rdb.zrange(key, ts, f"({ts + 1}", byscore=True))


def expected_member(plan: Any, ts: int, domain: str) -> bytes:
    """The member append_message.lua must store for a plan, built independently of the app: its
    head, the plan's middle, and _lib.lua's state tail."""
    head = b'{"id":"%s","timestamp":%d,"domain":"%s",' % (plan.id.encode(), ts, domain.encode())
    if not plan.status:
        return head + plan.middle + b'"eqScore":%d}' % plan.eq_score
    completed = b"%d" % ts if plan.status == "complete" else b"null"
    return head + plan.middle + (b'"status":"%s","claimedBy":null,"claimedAt":null,"attempts":0,'
                                 b'"completedAt":%s},"eqScore":%d}' % (plan.status.encode(), completed, plan.eq_score))
