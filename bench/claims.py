"""claim-next under contention: questions queued over many humans, then `bots` concurrent bot loops
(claim-next, then complete with the claimToken when the answer carries one) until the queue is
empty. Every question must be claimed exactly once, and no answer should be anything but 200."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
import uvloop

from app.config import Settings
from app.models import decode, encode

from . import redis_probe
from .payloads import godmode_question, text
from .preload import preload
from .servers import Gunicorn
from .stats import latency_ms

JSON_HEADERS = {"content-type": "application/json"}
RETRY_PAUSE_S = 0.05  # after a failed request, as a bot backs off (briefly: the run is compressed)


@dataclass(frozen=True)
class Config:
    questions: int = 2000
    bots: int = 120
    humans: int = 200
    deadline_s: float = 120.0  # the whole run, however the service answers


@dataclass
class _Tally:
    claimed: Counter[str] = field(default_factory=Counter)  # message id -> times handed out
    non_200: Counter[str] = field(default_factory=Counter)  # "<endpoint> <status>" -> answers
    transport_errors: int = 0
    completed: int = 0
    tokens: int = 0
    unfinished_bots: int = 0  # stopped by the deadline or their call budget, not by an empty queue
    claim_next_s: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def failed(self, what: str) -> None:
        if len(self.error_samples) < 10:
            self.error_samples.append(what)


async def _call(client: httpx.AsyncClient, tally: _Tally, endpoint: str, body: dict[str, Any]) -> Any:
    """POST one queue request; the decoded answer on 200, else None (tallied) after a short pause."""
    started = time.perf_counter()
    try:
        response = await client.post(f"/api/queue/{endpoint}", content=encode(body), headers=JSON_HEADERS)
    except httpx.HTTPError as exc:
        tally.transport_errors += 1
        tally.failed(f"{endpoint}: {type(exc).__name__} {exc}")
        response = None
    if endpoint == "claim-next":
        tally.claim_next_s.append(time.perf_counter() - started)
    if response is not None and response.status_code == 200:
        return decode(response.content)
    if response is not None:
        tally.non_200[f"{endpoint} {response.status_code}"] += 1
        tally.failed(f"{endpoint}: HTTP {response.status_code} {response.text[:160]}")
    await asyncio.sleep(RETRY_PAUSE_S)
    return None


async def _bot(client: httpx.AsyncClient, tally: _Tally, worker: str, stop_at: float, max_calls: int) -> None:
    for _ in range(max_calls):
        if time.monotonic() > stop_at:
            break
        reply = await _call(client, tally, "claim-next", {"workerId": worker})
        if reply is None:
            continue
        if not reply.get("success"):
            return  # the queue is empty
        message_id = reply["message"]["id"]
        tally.claimed[message_id] += 1
        body = {"messageId": message_id}
        if token := reply.get("claimToken"):  # absent before issue 11
            body["claimToken"] = token
            tally.tokens += 1
        if await _call(client, tally, "complete", body) is not None:
            tally.completed += 1
    tally.unfinished_bots += 1


def _queue(redis_url: str, settings: Settings, cfg: Config) -> None:
    rng = random.Random(13)
    bodies = (godmode_question(text(rng, rng.randint(40, 240)), user=f"q{i % cfg.humans}")
              for i in range(cfg.questions))
    preload(redis_url, settings, bodies)


async def _main(base_url: str, cfg: Config) -> dict[str, Any]:
    tally = _Tally()
    # A client (one connection) per bot, as each real bot is its own process; one shared httpx pool
    # of 120 connections cost the bench ~2 ms of CPU per request instead of ~1.3 ms.
    tls = ssl.create_default_context()  # unused on loopback, but httpx builds one per client unless given
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(
            base_url=base_url, limits=httpx.Limits(max_connections=1), timeout=30.0, verify=tls))
            for _ in range(cfg.bots)]
        queued = (await clients[0].get("/api/admin/stats")).json()["pending"]
        started, cpu_before = time.monotonic(), time.process_time()
        max_calls = 2 * cfg.questions + 100  # one bot alone could take every question
        await asyncio.gather(*(_bot(client, tally, f"bench-bot-{i}", started + cfg.deadline_s, max_calls)
                               for i, client in enumerate(clients)))
        elapsed, bench_cpu_s = time.monotonic() - started, time.process_time() - cpu_before
        left = (await clients[0].get("/api/admin/stats")).json()
    claims = sum(tally.claimed.values())
    return {
        "config": cfg.__dict__,
        "queued": queued,
        "elapsed_s": round(elapsed, 2),
        # Near 1.0 the bots' own process (httpx costs ~1 ms of CPU a request) limits claims/s, not the service.
        "bench_client_cpu_share": round(bench_cpu_s / elapsed, 2),
        "bench_client_cpu_us_per_claim": round(bench_cpu_s * 1e6 / claims, 1) if claims else None,
        "claims": claims,
        "claims_per_s": round(claims / elapsed, 1),
        "completed": tally.completed,
        "duplicates": sum(n - 1 for n in tally.claimed.values() if n > 1),
        "never_claimed": queued - len(tally.claimed),
        "non_200": sum(tally.non_200.values()),
        "conflicts_409": sum(n for what, n in tally.non_200.items() if what.endswith(" 409")),
        "non_200_by_endpoint": dict(tally.non_200),
        "transport_errors": tally.transport_errors,
        "claim_tokens": tally.tokens,
        "unfinished_bots": tally.unfinished_bots,
        "left_pending": left["pending"],
        "left_processing": left["processing"],
        "claim_next_latency": latency_ms(tally.claim_next_s),
        "error_samples": tally.error_samples,
    }


def run(ours: Gunicorn, client: redis.Redis, redis_url: str, settings: Settings, cfg: Config) -> dict[str, Any]:
    client.flushall()  # our private server: the queue holds exactly these questions
    _queue(redis_url, settings, cfg)
    before, workers_before = redis_probe.snapshot(client), ours.worker_cpu_s()
    result = uvloop.run(_main(ours.url, cfg))
    cost = redis_probe.cost(before, redis_probe.snapshot(client))
    workers = sum(ours.worker_cpu_s().values()) - sum(workers_before.values())
    claims = result["claims"]
    # Where the time went: every figure per claim handed out (its complete and the contention included).
    result["per_claim"] = {**cost.figures(claims), "worker_cpu_us": round(workers * 1e6 / claims, 1) if claims else None}
    return result
