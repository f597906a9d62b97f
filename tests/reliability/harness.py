"""Load clients and checkers for the reliability suite.

Writers POST messages shaped like the real frontend's and bot's, retrying with the same id until
the service acknowledges (200 success or duplicate), and sometimes resending an acknowledged
message on purpose: that must answer "duplicate" with the original timestamp and key. Pollers
follow the global stream by nextAfter and pair views by after=, alternating service instances on
every request. Afterwards every acknowledged id is looked up in Redis.

Every loop is bounded twice: by a count (messages, attempts) and by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from app.keys import untagged
from tests.helpers import ETERNAL, ETERNAL_COLOR, GODMODE, GODMODE_COLOR, locate, stored
from tests.redis_server import RedisServer
from tests.service import Service

# -- figures for RESULTS.md ---------------------------------------------------------------------

FIGURES: dict[str, dict[str, Any]] = {}


def record(name: str, **figures: Any) -> None:
    FIGURES[name] = figures


def figures_markdown() -> str:
    """One row per test: the headline columns, then everything else it recorded."""
    head = ["messages written", "pollers", "faults", "lost", "dup", "5xx", "seconds"]
    lines = ["| test | " + " | ".join(head) + " | details |", "|---" * (len(head) + 2) + "|"]
    for name, row in FIGURES.items():
        details = ", ".join(f"{k}: {v}" for k, v in row.items() if k not in head)
        lines.append(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in head) + f" | {details} |")
    return "\n".join(lines)


# -- processes ----------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of a process, read from /proc (gunicorn workers of a master)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
    return sorted(out)


def wait_workers(service: Service, count: int, timeout: float = 20.0, exclude: Sequence[int] = ()) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in children(service.proc.pid) if p not in exclude]
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"gunicorn {service.proc.pid} has workers {children(service.proc.pid)}, wanted {count}")


def kill_worker(service: Service, rng: random.Random) -> int:
    pid = rng.choice(wait_workers(service, 1))
    os.kill(pid, signal.SIGKILL)
    return pid


@contextlib.contextmanager
def services(redis_url: str, count: int, workers: int = 2, **env: str) -> Iterator[list[Service]]:
    started: list[Service] = []
    try:
        for _ in range(count):
            started.append(Service(redis_url, workers=workers, **env))
        yield started
    finally:
        for svc in started:
            svc.stop()


def redis_client(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=10)


# -- message plans ------------------------------------------------------------------------------

HUMAN_COLOR_BASE = 80150000


@dataclass(frozen=True)
class Human:
    user: str
    color: str


def humans(count: int) -> list[Human]:
    return [Human(f"Human{i}", f"{HUMAN_COLOR_BASE + i:09d}") for i in range(count)]


@dataclass
class Planned:
    body: dict[str, Any]
    key: str  # the message key the service must answer with
    pair: tuple[str, str, str, str]  # (human, color, ai, ai color): the /api/conversation view it shows in


def plan_messages(writer: int, count: int, people: list[Human], rng: random.Random,
                  session_size: int = 25, queued_share: float = 0.0) -> list[Planned]:
    """A writer's messages over shared humans: conversations with TheEternal and God Mode
    questions (conv: keys), and God Mode session messages (godmode: keys)."""
    out: list[Planned] = []
    sessions: dict[str, tuple[str, int]] = {}
    for i in range(count):
        h = rng.choice(people)
        mid = f"w{writer}m{i}x{rng.randrange(1 << 30):x}"
        text = f"w{writer} #{i} " + "·" * rng.randrange(0, 120)
        roll = rng.random()
        eternal = (h.user, h.color, ETERNAL, ETERNAL_COLOR)
        god = (h.user, h.color, GODMODE, GODMODE_COLOR)
        if roll < 0.35:
            params: dict[str, Any] = {"ais": f"{ETERNAL}:{ETERNAL_COLOR}"}
            if rng.random() < queued_share:
                params.update(entity="the-eternal", priority=rng.randrange(10))
            body = {"id": mid, "timestamp": 1, "text": text, "username": h.user, "color": h.color,
                    "domain": "saywhatwant.app", "message-type": "human", "misc": "",
                    "context": ["Human: hi"], "botParams": params}
            out.append(Planned(body, f"conv:{h.user}:{h.color}:{ETERNAL}:{ETERNAL_COLOR}", eternal))
        elif roll < 0.7:
            body = {"id": mid, "text": text, "username": ETERNAL, "color": ETERNAL_COLOR, "message-type": "AI",
                    "botParams": {"humanUsername": h.user, "humanColor": h.color, "entity": "the-eternal",
                                  "ais": f"{ETERNAL}:{ETERNAL_COLOR}"}}
            out.append(Planned(body, f"conv:{h.user}:{h.color}:{ETERNAL}:{ETERNAL_COLOR}", eternal))
        elif roll < 0.8:
            body = {"id": mid, "text": text, "username": h.user, "color": h.color, "message-type": "human",
                    "domain": "saywhatwant.app", "botParams": {"ais": f"{GODMODE}:{GODMODE_COLOR}"}}
            out.append(Planned(body, f"conv:{h.user}:{h.color}:{GODMODE}:{GODMODE_COLOR}", god))
        else:
            sid, used = sessions.get(h.user, ("", session_size))
            if used >= session_size:
                sid, used = f"{int(time.time() * 1000)}-w{writer}s{i}", 0
            sessions[h.user] = (sid, used + 1)
            body = {"id": mid, "text": text, "username": GODMODE, "color": GODMODE_COLOR, "message-type": "AI",
                    "botParams": {"humanUsername": h.user, "humanColor": h.color, "entity": "god-mode",
                                  "ais": f"{GODMODE}:{GODMODE_COLOR}", "sessionId": sid}}
            out.append(Planned(body, f"godmode:{h.user}:{h.color}:{GODMODE}:{GODMODE_COLOR}:{sid}", god))
    return out


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Ack:
    id: str
    timestamp: int
    key: str
    text: str
    pair: tuple[str, str, str, str]


@dataclass
class Tally:
    """What the clients saw. `bad` lists every answer the contract forbids."""

    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    max_latency_s: float = 0.0
    max_error_latency_s: float = 0.0  # slowest non-200 answer: an outage must not hang requests
    duplicates_checked: int = 0
    retries: int = 0

    def answer(self, r: httpx.Response, started: float, allowed: tuple[int, ...] = (200,)) -> None:
        took = time.monotonic() - started
        self.statuses[r.status_code] += 1
        self.max_latency_s = max(self.max_latency_s, took)
        if r.status_code != 200:
            self.max_error_latency_s = max(self.max_error_latency_s, took)
        if r.status_code in allowed:
            return
        if r.status_code == 503 and is_json_error(r):
            return  # the outage answer; the caller retries
        self.bad.append(f"{r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:200]!r}")


def is_json_error(r: httpx.Response) -> bool:
    if not r.headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str)


def clients(svcs: Sequence[Service], timeout: float = 10.0) -> list[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    return [httpx.AsyncClient(base_url=s.base_url, timeout=timeout, limits=limits) for s in svcs]


async def request(http: Sequence[httpx.AsyncClient], tally: Tally, method: str, url: str, *, deadline: float,
                  rng: random.Random, attempts: int = 200, allowed: tuple[int, ...] = (200,),
                  **kwargs: Any) -> httpx.Response | None:
    """One logical request, retried on transport errors and JSON 503s (on a random instance)."""
    for attempt in range(attempts):
        if time.monotonic() > deadline:
            return None
        if attempt:
            tally.retries += 1
            await asyncio.sleep(min(0.5, 0.02 * attempt))
        client = rng.choice(http)
        started = time.monotonic()
        try:
            r = await client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            tally.transport_errors[type(exc).__name__] += 1
            continue
        tally.answer(r, started, allowed)
        if r.status_code != 503:
            return r
    return None


class Writers:
    """Shared record of what every writer sent and what the service acknowledged."""

    def __init__(self) -> None:
        self.acked: dict[str, Ack] = {}
        self.sent: dict[str, Planned] = {}  # every id a writer tried, acknowledged or not
        self.tally = Tally()
        self.unfinished = 0  # messages a writer gave up on at its deadline
        self.others: set[str] = set()  # ids other clients (bots) posted meanwhile: not foreign

    async def post(self, http: Sequence[httpx.AsyncClient], planned: Planned, deadline: float,
                   rng: random.Random) -> Ack | None:
        body = planned.body
        self.sent[body["id"]] = planned
        r = await request(http, self.tally, "POST", "/api/comments", json=body, deadline=deadline, rng=rng)
        if r is None:
            self.unfinished += 1
            return None
        if r.status_code != 200:
            return None  # already listed in tally.bad
        data = r.json()
        if data["id"] != body["id"] or untagged(data["key"]) != planned.key or data["status"] not in ("success", "duplicate"):
            self.tally.bad.append(f"POST {body['id']} answered {data}, expected key {planned.key}")
            return None
        ack = Ack(body["id"], data["timestamp"], data["key"], body["text"], planned.pair)
        known = self.acked.get(ack.id)
        if known is not None and (known.timestamp, known.key) != (ack.timestamp, ack.key):
            self.tally.bad.append(f"{ack.id} acknowledged twice differently: {known} then {ack}")
        self.acked.setdefault(ack.id, ack)
        return ack

    async def resend(self, http: Sequence[httpx.AsyncClient], planned: Planned, deadline: float,
                     rng: random.Random) -> None:
        """A client retry of an acknowledged message: must be 'duplicate' with the original stamp."""
        first = self.acked[planned.body["id"]]
        r = await request(http, self.tally, "POST", "/api/comments", json=planned.body, deadline=deadline, rng=rng)
        if r is None or r.status_code != 200:
            return
        data = r.json()
        if (data["status"], data["timestamp"], data["key"]) != ("duplicate", first.timestamp, first.key):
            self.tally.bad.append(f"resent {first.id}: {data}, first answer {first}")
        self.tally.duplicates_checked += 1

    async def run(self, http: Sequence[httpx.AsyncClient], plan: list[Planned], deadline: float,
                  rng: random.Random, resend_share: float = 0.25, pause_s: float = 0.0) -> None:
        for planned in plan:
            if time.monotonic() > deadline:
                self.unfinished += 1
                continue
            if await self.post(http, planned, deadline, rng) is not None and rng.random() < resend_share:
                await self.resend(http, planned, deadline, rng)
            if pause_s:
                await asyncio.sleep(rng.uniform(0, pause_s))


class Poller:
    """Follows one cursor to the end, on alternating instances; records ids, stamps, texts."""

    def __init__(self, name: str, http: Sequence[httpx.AsyncClient], limit: int) -> None:
        self.name = name
        self.http = http
        self.limit = limit
        self.ids: list[str] = []
        self.stamps: list[int] = []
        self.texts: dict[str, str] = {}
        self.tally = Tally()
        self.polls = 0
        self.finished = False

    async def page(self, after: int) -> tuple[list[dict[str, Any]], int, bool] | None:
        raise NotImplementedError

    async def run(self, stop: asyncio.Event, deadline: float, after: int = 0, interval_s: float = 0.02) -> None:
        while time.monotonic() < deadline:
            final = stop.is_set()  # writers were done before this request: a full drain ends it
            got = await self.page(after)
            if got is None:
                await asyncio.sleep(0.05)
                continue
            messages, after, more = got
            for m in messages:
                self.ids.append(m["id"])
                self.stamps.append(m["timestamp"])
                self.texts[m["id"]] = m["text"]
            if more:
                continue
            if final:
                self.finished = True
                return
            await asyncio.sleep(interval_s)

    async def _get(self, url: str, params: dict[str, Any]) -> httpx.Response | None:
        client = self.http[self.polls % len(self.http)]
        self.polls += 1
        started = time.monotonic()
        try:
            r = await client.get(url, params=params)
        except httpx.TransportError as exc:
            self.tally.transport_errors[type(exc).__name__] += 1
            return None
        self.tally.answer(r, started)
        return r if r.status_code == 200 else None


class StreamPoller(Poller):
    """GET /api/comments?after=<nextAfter>&limit=..., following nextAfter/hasMore."""

    async def page(self, after: int) -> tuple[list[dict[str, Any]], int, bool] | None:
        r = await self._get("/api/comments", {"after": after, "limit": self.limit})
        if r is None:
            return None
        data = r.json()
        if data["messages"] and data["nextAfter"] < data["messages"][-1]["timestamp"]:
            self.tally.bad.append(f"{self.name}: nextAfter {data['nextAfter']} behind the page")
        return data["messages"], data["nextAfter"], data["hasMore"]


class PairPoller(Poller):
    """GET /api/conversation?<pair>&after=<last timestamp seen>&limit=... (newest `limit` after it,
    so a page as long as `limit` may hide older ones: the test keeps pairs below the limit)."""

    def __init__(self, name: str, http: Sequence[httpx.AsyncClient], limit: int, pair: tuple[str, str, str, str]):
        super().__init__(name, http, limit)
        self.pair = pair

    async def page(self, after: int) -> tuple[list[dict[str, Any]], int, bool] | None:
        hu, hc, au, ac = self.pair
        r = await self._get("/api/conversation", {"humanUsername": hu, "humanColor": hc, "aiUsername": au,
                                                  "aiColor": ac, "after": after, "limit": self.limit})
        if r is None:
            return None
        rows = r.json()
        if len(rows) >= self.limit:
            self.tally.bad.append(f"{self.name}: a full page ({len(rows)}) may hide messages")
        return rows, rows[-1]["timestamp"] if rows else after, False


# -- checks -------------------------------------------------------------------------------------


def check_poller(poller: Poller, expected: dict[str, Ack], sent: dict[str, Planned],
                 others: set[str] | frozenset[str] = frozenset()) -> dict[str, int]:
    """Every acknowledged message exactly once, in timestamp order, with its text; nothing foreign."""
    seen = set(poller.ids)
    dup = len(poller.ids) - len(seen)
    lost = len(set(expected) - seen)
    foreign = [i for i in seen if i not in sent and i not in others]
    disorder = sum(1 for a, b in zip(poller.stamps, poller.stamps[1:]) if b < a)  # equal stamps are allowed
    wrong_text = [i for i in seen if i in sent and poller.texts[i] != sent[i].body["text"]]
    assert poller.finished, f"{poller.name} did not drain before its deadline"
    assert not poller.tally.bad, f"{poller.name}: {poller.tally.bad[:5]}"
    assert lost == 0, f"{poller.name} missed {lost}: {sorted(set(expected) - seen)[:5]}"
    assert dup == 0, f"{poller.name} saw {dup} repeats"
    assert disorder == 0, f"{poller.name}: {disorder} timestamps out of order"
    assert not foreign and not wrong_text, f"{poller.name}: foreign {foreign[:5]}, wrong text {wrong_text[:5]}"
    return {"lost": lost, "dup": dup}


def check_redis(rdb: redis.Redis, acked: dict[str, Ack], sent: dict[str, Planned] | None = None) -> dict[str, int]:
    """Every acknowledged id is stored once, where and when it was acknowledged; ZCARD per key
    equals the acknowledged ids of that key (plus ids stored whose answer never arrived)."""
    lost: list[str] = []
    for ack in acked.values():
        where = locate(rdb, ack.id)
        rows = [r for r in stored(rdb, ack.key, ack.timestamp) if r.startswith(b'{"id":"%s"' % ack.id.encode())]
        if where != (ack.timestamp, ack.key):
            lost.append(f"{ack.id}: indexed at {where!r}")
        elif len(rows) != 1:
            lost.append(f"{ack.id}: {ack.key}@{ack.timestamp} holds {rows!r:.120}")
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"

    per_key = Counter(a.key for a in acked.values())
    stored_unacked = 0
    for key, count in per_key.items():
        card = int(rdb.zcard(key))
        extra = card - count
        if extra and sent is not None:  # written, but the answer was lost with a killed worker or client
            ids = {m.split(b'"', 4)[3].decode() for m in rdb.zrange(key, 0, -1)}
            unknown = [i for i in ids if i not in acked and i not in sent]
            assert not unknown, f"{key}: ids nobody sent: {unknown[:5]}"
            stored_unacked += extra
        else:
            assert card == count, f"{key}: ZCARD {card} != {count} acknowledged"
    return {"keys": len(per_key), "stored_unacked": stored_unacked}


async def wait_ready(http: Sequence[httpx.AsyncClient], timeout: float = 20.0) -> float:
    """Seconds until every instance answers /readyz 200 (the service recovering by itself)."""
    started = time.monotonic()
    pending = list(http)
    while pending:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{[str(c.base_url) for c in pending]} not ready after {timeout}s")
        still = []
        for client in pending:
            try:
                r = await client.get("/readyz", timeout=2)
                if r.status_code == 200:
                    continue
                assert r.status_code == 503 and r.json()["status"] == "unavailable", r.text
            except httpx.TransportError:
                pass
            still.append(client)
        pending = still
        if pending:
            await asyncio.sleep(0.1)
    return time.monotonic() - started
