"""Phase 1: our POST and GET /api/comments against the ceiling app, pair by pair in one run."""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    return stamps[0] - 1


def copy_poll_to_ceiling(ours: Gunicorn, client: redis.Redis, after: int) -> None:
    """The ceiling's zset becomes the POLL_SIZE messages our poll answers (msgspec keeps field order and
    compact form, so re-encoding gives back the stored bytes)."""
    response = httpx.get(f"{ours.url}/api/comments", params={"after": after, "limit": POLL_SIZE}, timeout=10)
    response.raise_for_status()
    messages = decode(response.content)["messages"]
    if len(messages) != POLL_SIZE:
        raise RuntimeError(f"the poll fixture answered {len(messages)} messages, not {POLL_SIZE}")
    with client.pipeline() as pipe:
        pipe.delete(POLL)
        pipe.zadd(POLL, {encode(m): m["timestamp"] for m in messages})
        pipe.execute()


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


def _always(*args: str) -> Callable[[], tuple[str, ...]]:
    return lambda: args


def run(ours: Gunicorn, ceiling: Gunicorn, client: redis.Redis, redis_url: str, settings: Settings,
        load: Load, rounds: int) -> dict[str, Any]:
    """Interleaved so both apps see the same machine state: ceiling POST, ours POST, ceiling GET, ours
    GET, in several rounds so one burst of other work on the machine cannot decide a ratio."""
    apps = {"ceiling": ceiling, "ours": ours}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {op: {app: [] for app in apps} for op in ("post", "get")}
    for round_ in range(rounds):
        round_load = load if round_ == 0 else replace(load, warmup_s=0)  # the apps stay warm afterwards
        for app, server in apps.items():
            measured = measure(server, client, round_load, "post_comment.lua", _post_args)
            runs["post"][app].append(measured.as_dict())
        # A fresh fixture each round: the POSTs above may have pushed the last one out of the index.
        after = preload_poll_fixture(redis_url, settings)
        copy_poll_to_ceiling(ours, client, after)
        path = f"/api/comments?after={after}&limit={POLL_SIZE}"
        for app, server in apps.items():
            measured = measure(server, client, round_load, "get_paths.lua", _always(path))
            runs["get"][app].append(measured.as_dict())
    return {
        "load": load.__dict__,
        "rounds": rounds,
        **{op: _pair(by_app["ceiling"], by_app["ours"]) for op, by_app in runs.items()},
        "timestamp_lead_ms": timestamp_lead_ms(ours),
    }


def timestamp_lead_ms(ours: Gunicorn) -> int:
    """How far the next message's timestamp runs ahead of the wall clock. Timestamps strictly
    increase, so past 1000 appends/s the store's clock gains on real time and keeps its lead."""
    body = encode(post_mix(random.Random(1), 0, users=1))
    response = httpx.post(f"{ours.url}/api/comments", content=body, headers={"content-type": "application/json"},
                          timeout=10)
    response.raise_for_status()
    return int(decode(response.content)["timestamp"]) - int(time.time() * 1000)


def _pair(ceiling: list[dict[str, Any]], ours: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round ratios read as 'share of the ceiling' (rps ours/ceiling, latency ceiling/ours: 1.0 =
    as fast), and their medians; each app's figures are medians over the rounds."""
    def shares(field: str, ours_on_top: bool) -> list[float]:
        return [round(o[field] / c[field] if ours_on_top else c[field] / o[field], 3)
                for c, o in zip(ceiling, ours, strict=True) if c[field] and o[field]]

    per_round = {"rps": shares("rps", True), "p50": shares("p50_ms", False), "p99": shares("p99_ms", False)}
    return {
        "ceiling": _median_run(ceiling),
        "ours": _median_run(ours),
        "ratio": {name: round(statistics.median(values), 3) if values else None for name, values in per_round.items()},
        "ratio_per_round": per_round,
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Error counts: summed over the rounds; other numbers: the median; anything else (names,
    breakdowns): the first round's."""
    def combine(key: str, value: Any) -> Any:
        if key in ("non2xx", "socket_errors"):
            return sum(r[key] for r in runs)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return round(statistics.median(r[key] for r in runs), 3)
        return value

    return {key: combine(key, value) for key, value in runs[0].items()}
