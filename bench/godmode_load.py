"""Phase 2: God Mode traffic as the real clients make it (../shared/clients.md), from one asyncio process.

Humans ask God Mode questions and wait for the answer; bots claim-next, PATCH eqScore, post a
session (status, 6-31 entity answers of 0.5-2 KB, processing, a 2-8 KB synthesis, one sessionId),
its metadata, then complete; global pollers follow nextAfter on GET /api/comments and pair pollers
follow `after` on each human's God Mode pair view. Bots do not think for minutes like the real
ones: time is compressed so the run shows what the service sustains.

Everything is bounded: humans ask until `duration_s`, then bots, humans and pollers drain for at
most `drain_s`. At the end every accepted message must have been seen by every global poller.
"""

from __future__ import annotations

import asyncio
import random
import string
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvloop

from app.models import decode, encode

from .payloads import GODMODE, GODMODE_COLOR, HUMAN_COLOR, godmode_question, godmode_session_posts, human, text
from .stats import latency_ms

JSON_HEADERS = {"content-type": "application/json"}
_SESSION_CHARS = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Config:
    duration_s: float = 30.0
    drain_s: float = 20.0
    humans: int = 12
    bots: int = 4
    global_pollers: int = 24
    poll_interval_s: float = 1.0
    think_s: float = 0.5  # a human's longest pause between an answer and the next question
    bot_idle_s: float = 0.2  # the real bot sleeps ~3 s on an empty queue; shorter keeps the run short
    seed: int = 11


@dataclass
class Run:
    client: httpx.AsyncClient
    cfg: Config
    stop_at: float
    drain_until: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)  # message id -> timestamp
    accepted_bytes: int = 0
    max_ts: int = 0
    last_ts_by_human: dict[str, int] = field(default_factory=dict)
    ids_by_human: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    answered: dict[str, asyncio.Event] = field(default_factory=dict)
    questions_in_flight: int = 0
    sessions: int = 0
    last_accept_at: float = 0.0
    bots_done: asyncio.Event = field(default_factory=asyncio.Event)

    def posting(self) -> bool:
        return time.monotonic() < self.stop_at

    def draining(self) -> bool:
        return time.monotonic() < self.drain_until

    async def call(self, op: str, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        """One request; its latency is recorded under `op`, any failure is an error. None on failure."""
        content = None if body is None else encode(body)
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, content=content, params=params,
                                                 headers=JSON_HEADERS if content else None)
        except httpx.HTTPError as exc:
            self.errors.append(f"{op}: {type(exc).__name__} {exc}")
            return None
        self.latencies[op].append(time.perf_counter() - started)
        if response.status_code >= 300:
            self.errors.append(f"{op}: HTTP {response.status_code} {response.text[:200]}")
            return None
        return decode(response.content)

    async def post_message(self, body: dict[str, Any], human: str) -> int | None:
        """POST /api/comments; remembers the accepted id and timestamp for the delivery checks."""
        reply = await self.call("post", "POST", "/api/comments", body)
        if reply is None:
            return None
        ts = int(reply["timestamp"])
        self.accepted[body["id"]] = ts
        self.accepted_bytes += len(body["text"])
        self.max_ts = max(self.max_ts, ts)
        self.last_ts_by_human[human] = max(ts, self.last_ts_by_human.get(human, 0))
        self.ids_by_human[human].add(body["id"])
        self.last_accept_at = time.monotonic()
        return ts

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, min(seconds, self.drain_until - time.monotonic())))


async def human_loop(run: Run, name: str, rng: random.Random) -> None:
    await run.pause(rng.uniform(0, run.cfg.think_s))
    while run.posting():
        body = godmode_question(text(rng, rng.randint(40, 240)), user=name, color=HUMAN_COLOR)
        answered = run.answered[body["id"]] = asyncio.Event()
        run.questions_in_flight += 1
        try:
            ts = await run.post_message(body, name)
        finally:
            run.questions_in_flight -= 1
        if ts is None:
            await run.pause(1.0)
            continue
        try:
            await asyncio.wait_for(answered.wait(), max(0.0, run.drain_until - time.monotonic()))
        except TimeoutError:
            run.errors.append(f"human {name}: question {body['id']} not answered before the drain ended")
            return
        await run.pause(rng.uniform(0, run.cfg.think_s))


async def bot_loop(run: Run, worker: str, rng: random.Random) -> None:
    while run.draining():
        reply = await run.call("claim-next", "POST", "/api/queue/claim-next", {"workerId": worker})
        if reply and reply.get("success"):
            await answer(run, reply["message"], rng)
        elif not run.posting() and run.questions_in_flight == 0 and reply is not None:
            return  # nothing pending and nothing more will come
        else:
            await run.pause(run.cfg.bot_idle_s)


async def answer(run: Run, question: dict[str, Any], rng: random.Random) -> None:
    qid, human_user, human_color = question["id"], question["username"], question["color"]
    await run.call("patch", "PATCH", f"/api/comments/{qid}", {"eqScore": rng.randint(0, 100)})
    session_id = f"{int(time.time() * 1000)}-{''.join(rng.choices(_SESSION_CHARS, k=7))}"
    entities = rng.randint(6, 31)
    posts = godmode_session_posts(qid, session_id, entities, answer_bytes=rng.randint(500, 2000),
                                  synthesis_bytes=rng.randint(2000, 8000), human_user=human_user,
                                  human_color=human_color)
    for body in posts:
        await run.post_message(body, human_user)
    meta = {"sessionId": session_id, "timestamp": int(time.time() * 1000), "humanUsername": human_user,
            "humanColor": human_color, "humanQuestion": question["text"], "humanMessageId": qid,
            "godModeUsername": GODMODE, "godModeColor": GODMODE_COLOR, "entityCount": entities,
            "entitiesUsed": [f"Entity{i}" for i in range(entities)], "messageIds": [p["id"] for p in posts]}
    await run.call("session-meta", "POST", "/api/godmode-session",
                   {"sessionKey": f"godmode-session:{session_id}", "sessionData": meta})
    await run.call("complete", "POST", "/api/queue/complete", {"messageId": qid})
    run.sessions += 1
    if qid in run.answered:
        run.answered[qid].set()


async def global_poller(run: Run, after: int, rng: random.Random) -> dict[str, int]:
    """Follows nextAfter like a tab that never misses a poll; returns how many ids it saw (and twice)."""
    seen: set[str] = set()
    repeats = 0
    await run.pause(rng.uniform(0, run.cfg.poll_interval_s))
    while run.draining():
        page = await run.call("global-poll", "GET", "/api/comments", params={"after": after, "limit": 200})
        if page is not None:
            for message in page["messages"]:
                repeats += message["id"] in seen
                seen.add(message["id"])
            after = page["nextAfter"]
            if page["hasMore"]:
                continue
        if run.bots_done.is_set() and after >= run.max_ts:
            break
        await run.pause(run.cfg.poll_interval_s)
    missing = sum(1 for message_id in run.accepted if message_id not in seen)
    return {"seen": len(seen), "repeats": repeats, "missing": missing}


async def pair_poller(run: Run, human: str, after: int, rng: random.Random) -> int:
    """Follows one human's God Mode pair view; returns how many of the pair's messages it never saw."""
    seen: set[str] = set()
    params = {"humanUsername": human, "humanColor": HUMAN_COLOR, "aiUsername": GODMODE, "aiColor": GODMODE_COLOR,
              "limit": 200}
    await run.pause(rng.uniform(0, run.cfg.poll_interval_s))
    while run.draining():
        rows = await run.call("pair-poll", "GET", "/api/conversation", params={**params, "after": after})
        for message in rows or ():
            seen.add(message["id"])
            after = max(after, int(message["timestamp"]))
        if run.bots_done.is_set() and after >= run.last_ts_by_human.get(human, 0):
            break
        await run.pause(run.cfg.poll_interval_s)
    return len(run.ids_by_human[human] - seen)


async def _start_marker(client: httpx.AsyncClient) -> int:
    """Posts one room message; every poller starts right after its timestamp."""
    response = await client.post("/api/comments", content=encode(human("start", entity=None, ais=None)),
                                 headers=JSON_HEADERS)
    response.raise_for_status()
    return int(decode(response.content)["timestamp"])


async def _main(base_url: str, cfg: Config) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    humans = [f"gm{i}" for i in range(cfg.humans)]
    # A connection each for every asker, pair poller, bot and global poller, plus a few spare.
    limits = httpx.Limits(max_connections=2 * cfg.humans + cfg.bots + cfg.global_pollers + 8)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:
        after = await _start_marker(client)
        started = time.monotonic()
        run = Run(client, cfg, started + cfg.duration_s, started + cfg.duration_s + cfg.drain_s)
        globals_ = [asyncio.create_task(global_poller(run, after, random.Random(rng.random())))
                    for _ in range(cfg.global_pollers)]
        pairs = [asyncio.create_task(pair_poller(run, h, after, random.Random(rng.random()))) for h in humans]
        askers = [asyncio.create_task(human_loop(run, h, random.Random(rng.random()))) for h in humans]
        await asyncio.gather(*(bot_loop(run, f"worker-{i + 1}", random.Random(rng.random())) for i in range(cfg.bots)))
        run.bots_done.set()
        await asyncio.gather(*askers)
        seen = await asyncio.gather(*globals_)
        pair_missing = await asyncio.gather(*pairs)
        finished = time.monotonic()
    return _summary(run, started, finished, seen, pair_missing)


def _summary(run: Run, started: float, finished: float, seen: list[dict[str, int]],
             pair_missing: list[int]) -> dict[str, Any]:
    window = max(run.last_accept_at - started, 1e-9)
    return {
        "config": run.cfg.__dict__,
        "elapsed_s": round(finished - started, 2),
        "posting_window_s": round(window, 2),
        "messages_accepted": len(run.accepted),
        "messages_per_s": round(len(run.accepted) / window, 1),
        "text_bytes_per_s": round(run.accepted_bytes / window),
        "sessions_completed": run.sessions,
        "errors": len(run.errors),
        "error_samples": run.errors[:10],
        "global_pollers_missing_max": max((p["missing"] for p in seen), default=0),
        "global_pollers_repeats_max": max((p["repeats"] for p in seen), default=0),
        "pair_pollers_missing_total": sum(pair_missing),
        "latency": {op: latency_ms(values) for op, values in sorted(run.latencies.items())},
        "all_seen_by_every_global_poller": all(p["missing"] == 0 for p in seen) and bool(seen),
    }


def run(base_url: str, cfg: Config) -> dict[str, Any]:
    return uvloop.run(_main(base_url, cfg))
