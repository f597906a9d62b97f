"""Phase 1: our POST and GET /api/comments against two reference apps, run by run in one go.

The ceiling (bench/ceiling_app.py) does one Redis call per request; the bare framework
(bench/bare_app.py) none, answering the same JSON. ours ÷ ceiling is our share of the least a
Redis-backed endpoint costs; ours ÷ bare our share of what the framework alone costs. Three request
kinds: POST; the newest page (~50 messages); and the poll a frontend sends under load, `after` 6 s
back with thousands of messages since, 200 per page.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import redis

from app.config import Settings
from app.models import decode, encode

from . import redis_probe
from .ceiling_app import POLL
from .payloads import post_mix
from .preload import preload
from .servers import Gunicorn
from .wrk import Load, WrkResult, run_wrk

POLL_SIZE = 50
FRONTEND_MESSAGES = 3000  # preloaded before each frontend-poll run: the "thousands since" its `after`
FRONTEND_USERS = 300
FRONTEND_BACK_MS = 6000  # a tab that last saw the feed 6 s ago
FRONTEND_LIMIT = 200  # the frontend's page size
CEILING_COPY_CAP = 5000  # most messages after `after` copied into the ceiling's zset
APPS = ("ceiling", "ours", "bare")  # run order within a round
GET_KINDS = ("get", "get_frontend")  # the newest page; the frontend's poll under load
KINDS = ("post", *GET_KINDS)
_runs = itertools.count(1)  # wrk run number: part of every posted id, so ids never repeat


@dataclass(frozen=True)
class Measured:
    wrk: WrkResult
    redis: redis_probe.Cost
    worker_cpu_s: list[float]  # per worker

    def as_dict(self) -> dict[str, Any]:
        n = self.wrk.requests
        return {
            **self.wrk.as_dict(),
            **self.redis.figures(n),
            "app_cpu_us_per_request": round(self.app_cpu_s * 1e6 / n, 1) if n else None,
            # wrk opens its connections in one burst and one worker may accept them all; 1.0 = one did all
            "busiest_worker_share": round(max(self.worker_cpu_s) / self.app_cpu_s, 2) if self.app_cpu_s else None,
            "redis_usec_by_command": self.redis.breakdown(n),
        }

    @property
    def app_cpu_s(self) -> float:
        return sum(self.worker_cpu_s)


def preload_poll_fixture(redis_url: str, settings: Settings) -> int:
    """Stores POLL_SIZE + 10 messages like the POST script's; returns an `after` with them all after it."""
    rng = random.Random(7)
    stamps = preload(redis_url, settings, [post_mix(rng, i, users=10) for i in range(POLL_SIZE + 10)])
    return min(stamps) - 1


def preload_frontend_fixture(redis_url: str, settings: Settings) -> int:
    """Stores FRONTEND_MESSAGES messages over many humans; returns now - 6 s, the `after` of a tab
    that polled 6 s ago (the messages, stored just now, are all after it)."""
    rng = random.Random(8)
    preload(redis_url, settings, [post_mix(rng, i, users=FRONTEND_USERS) for i in range(FRONTEND_MESSAGES)])
    return int(time.time() * 1000) - FRONTEND_BACK_MS


@dataclass(frozen=True)
class Poll:
    """One GET query as our service answered it when the fixture was fresh."""

    after: int
    limit: int
    body: bytes  # our answer, byte for byte
    messages: int  # in that answer
    since: int  # messages after `after` copied to the ceiling (CEILING_COPY_CAP at most)

    @property
    def path(self) -> str:
        return f"/api/comments?after={self.after}&limit={self.limit}"

    def as_dict(self) -> dict[str, Any]:
        return {"after": self.after, "limit": self.limit, "page_messages": self.messages,
                "page_bytes": len(self.body), "messages_since": self.since,
                "more_since_than_copied": self.since >= CEILING_COPY_CAP}


def capture_poll(ours: Gunicorn, after: int, limit: int, cap: int = 0) -> tuple[Poll, list[dict[str, Any]]]:
    """Our answer to `after`/`limit`, and the messages after `after` (that page, then following
    nextAfter while hasMore up to `cap` messages in all)."""
    with httpx.Client(base_url=ours.url, timeout=30) as http:
        response = http.get("/api/comments", params={"after": after, "limit": limit})
        response.raise_for_status()
        page = decode(response.content)
        if not page["messages"]:
            raise RuntimeError(f"the poll fixture answered no messages after {after}")
        poll = Poll(after, limit, response.content, len(page["messages"]), 0)
        messages = list(page["messages"])
        for _ in range(cap // 100 + 1):  # bounded in pages as well as in messages
            if not page["hasMore"] or len(messages) >= cap:
                break
            params = {"after": page["nextAfter"], "limit": min(1000, cap - len(messages))}
            more = http.get("/api/comments", params=params)
            more.raise_for_status()
            page = decode(more.content)
            messages += page["messages"]
    return replace(poll, since=len(messages)), messages


def copy_to_ceiling(client: redis.Redis, messages: list[dict[str, Any]]) -> None:
    """The ceiling's zset becomes `messages` (msgspec keeps field order and compact form, so
    re-encoding gives back the stored bytes)."""
    with client.pipeline() as pipe:
        pipe.delete(POLL)
        pipe.zadd(POLL, {encode(m): m["timestamp"] for m in messages})
        pipe.execute()


def prepare_poll(kind: str, ours: Gunicorn, client: redis.Redis, redis_url: str, settings: Settings) -> Poll:
    """A fresh fixture for one GET kind, its query as ours answers it, and the ceiling's copy.

    The frontend poll's `after` is fixed when its fixture is stored (now - 6 s), not recomputed per
    request: nothing is written while the GETs run, so every request asks exactly what a tab 6 s
    behind asks at that moment. Recomputing it from the clock would slide it past the fixture
    (stored in a fraction of a second) within the run."""
    if kind == "get":  # the ceiling holds the page ours answers, as before
        after, limit, cap = preload_poll_fixture(redis_url, settings), POLL_SIZE, 0
    else:  # the ceiling's one ZRANGEBYSCORE sees as many messages since as ours
        after, limit, cap = preload_frontend_fixture(redis_url, settings), FRONTEND_LIMIT, CEILING_COPY_CAP
    poll, messages = capture_poll(ours, after, limit, cap)
    copy_to_ceiling(client, messages)
    return poll


def capture_bare_pages(ours: Gunicorn, client: redis.Redis, redis_url: str, settings: Settings,
                       directory: Path) -> dict[str, int]:
    """Writes `<limit>.json` for bench.bare_app: our answer to each GET kind on a fresh fixture.
    The rounds store fixtures of the same sizes again, so these bytes stand for every round's."""
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for kind in GET_KINDS:
        poll = prepare_poll(kind, ours, client, redis_url, settings)
        (directory / f"{poll.limit}.json").write_bytes(poll.body)
        sizes[kind] = len(poll.body)
    return sizes


def measure(server: Gunicorn, client: redis.Redis, load: Load, script: str,
            args: Callable[[], tuple[str, ...]]) -> Measured:
    """A warm-up run, then the measured one with Redis and worker CPU read around it."""
    url = server.url + "/api/comments"
    if load.warmup_s > 0:
        run_wrk(url, script, args(), duration_s=load.warmup_s, connections=load.connections, threads=load.threads)
    before, cpu_before = redis_probe.snapshot(client), server.worker_cpu_s()
    result = run_wrk(url, script, args(), duration_s=load.duration_s, connections=load.connections,
                     threads=load.threads)
    cost = redis_probe.cost(before, redis_probe.snapshot(client))
    cpu_after = server.worker_cpu_s()
    return Measured(result, cost, [cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after])


def _post_args() -> tuple[str, ...]:
    return (f"r{next(_runs)}",)  # the id prefix, unique per wrk run


def always(*args: str) -> Callable[[], tuple[str, ...]]:
    return lambda: args


def run(apps: dict[str, Gunicorn], client: redis.Redis, redis_url: str, settings: Settings, load: Load,
        rounds: int) -> dict[str, Any]:
    """Interleaved so every app sees the same machine state: each kind runs on ceiling, ours, bare
    in turn, in several rounds so one burst of other work on the machine cannot decide a ratio."""
    ours = apps["ours"]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {kind: {app: [] for app in APPS} for kind in KINDS}
    queries: dict[str, list[dict[str, Any]]] = {kind: [] for kind in GET_KINDS}
    for round_ in range(rounds):
        round_load = load if round_ == 0 else replace(load, warmup_s=0)  # the apps stay warm afterwards
        for app in APPS:
            runs["post"][app].append(measure(apps[app], client, round_load, "post_comment.lua", _post_args).as_dict())
        last_write = time.monotonic()
        for kind in GET_KINDS:
            if kind == "get_frontend":
                # Only the fixture should be after `after`: wait until what the POSTs and the
                # newest-page fixture stored is 6 s old (the runs in between take longer unless
                # --duration is short). A clock that runs ahead puts more after it: see messages_since.
                time.sleep(max(0.0, last_write + FRONTEND_BACK_MS / 1000 - time.monotonic()))
            # A fresh fixture each round: the POSTs above may have pushed the last one out of the index.
            poll = prepare_poll(kind, ours, client, redis_url, settings)
            last_write = time.monotonic()
            queries[kind].append(poll.as_dict())
            for app in APPS:
                measured = measure(apps[app], client, round_load, "get_paths.lua", always(poll.path))
                runs[kind][app].append(measured.as_dict())
    return {
        "load": load.__dict__,
        "rounds": rounds,
        "queries": queries,
        **{kind: _compare(by_app) for kind, by_app in runs.items()},
        "timestamp_lead_ms": timestamp_lead_ms(ours),
    }


def timestamp_lead_ms(ours: Gunicorn) -> int:
    """How far the next message's timestamp runs ahead of the wall clock (the old store's strictly
    increasing timestamps gained on real time past 1000 appends/s and kept their lead)."""
    body = encode(post_mix(random.Random(1), 0, users=1))
    response = httpx.post(f"{ours.url}/api/comments", content=body, headers={"content-type": "application/json"},
                          timeout=10)
    response.raise_for_status()
    return int(decode(response.content)["timestamp"]) - int(time.time() * 1000)


def _shares(base: list[dict[str, Any]], ours: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-round shares, read as 'share of the reference' (rps ours/base, latency base/ours: 1.0 = as fast);
    `ours` is whichever app is compared with `base`."""
    def shares(field: str, ours_on_top: bool) -> list[float]:
        return [round(o[field] / b[field] if ours_on_top else b[field] / o[field], 3)
                for b, o in zip(base, ours, strict=True) if b[field] and o[field]]

    return {"rps": shares("rps", True), "p50": shares("p50_ms", False), "p99": shares("p99_ms", False)}


def _compare(by_app: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each app's figures (medians over the rounds); ours' shares of the ceiling's (`ratio`) and of
    the bare framework's (`ratio_vs_bare`), and the ceiling's of the bare framework's
    (`ceiling_vs_bare`), per round and their medians."""
    out: dict[str, Any] = {app: median_run(runs) for app, runs in by_app.items()}
    # ceiling_vs_bare: what one Redis round trip with no logic leaves of the framework's throughput.
    for name, base, top in (("ratio", "ceiling", "ours"), ("ratio_vs_bare", "bare", "ours"),
                            ("ceiling_vs_bare", "bare", "ceiling")):
        per_round = _shares(by_app[base], by_app[top])
        out[name] = {field: round(statistics.median(values), 3) if values else None
                     for field, values in per_round.items()}
        out[f"{name}_per_round"] = per_round
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Error counts: summed over the rounds; other numbers: the median; anything else (names,
    breakdowns): the first round's."""
    def combine(key: str, value: Any) -> Any:
        if key in ("non2xx", "socket_errors"):
            return sum(r[key] for r in runs)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return round(statistics.median(r[key] for r in runs), 3)
        return value

    return {key: combine(key, value) for key, value in runs[0].items()}
