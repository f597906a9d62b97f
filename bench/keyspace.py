"""Phases 3 and 4: poll latency as the keyspace grows (ours through HTTP, the seed's for contrast),
and Redis memory per stored message byte."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import redis

from app.config import Settings
from app.store import open_store

from . import redis_probe, seed
from .payloads import GODMODE, GODMODE_COLOR, HUMAN_COLOR, godmode_human, keyspace_message
from .preload import preload
from .servers import Gunicorn
from .stats import latency_ms
from .wrk import Load, run_wrk

POLL_MESSAGES = 50  # the global poll starts this many messages before the newest
PAIRS = 8  # pair views measured in turn at each size
STORE_CALLS = 200  # sequential Store reads per size, for the like-for-like comparison with the seed
_BATCH = 2000  # keys written round by round, so the newest messages span many keys as in real traffic


_LOAD = Load(duration_s=5, warmup_s=1, connections=1)  # one connection: latency without queueing


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    messages_per_key: int = 3
    load: Load = _LOAD
    seed_budget_s: float = 8.0  # per size and read; the seed's poll takes seconds at 100k keys
    seed_max_calls: int = 20


def _bodies(rng: random.Random, first: int, end: int, per_key: int) -> Iterator[dict[str, Any]]:
    for start in range(first, end, _BATCH):
        for message in range(per_key):
            for key_index in range(start, min(start + _BATCH, end)):
                yield keyspace_message(rng, key_index, message, per_key)


def _pair_params(key_count: int) -> list[tuple[str, str, str, str]]:
    """The newest God Mode humans (five sessions each): the pairs a live frontend would watch."""
    humans: list[str] = []
    for key_index in range(key_count - 1, 0, -1):
        human = godmode_human(key_index)
        if key_index % 2 and human not in humans:
            humans.append(human)
            if len(humans) == PAIRS:
                break
    return [(h, HUMAN_COLOR, GODMODE, GODMODE_COLOR) for h in humans]


def _pair_path(pair: tuple[str, str, str, str]) -> str:
    hu, hc, au, ac = pair
    query = {"humanUsername": hu, "humanColor": hc, "aiUsername": au, "aiColor": ac, "after": 0, "limit": 200}
    return "/api/conversation?" + urlencode(query)


def _http_latency(server: Gunicorn, client: redis.Redis, load: Load, paths: list[str]) -> dict[str, Any]:
    url = server.url + paths[0]
    if load.warmup_s > 0:
        run_wrk(url, "get_paths.lua", tuple(paths), duration_s=load.warmup_s, connections=load.connections)
    before = redis_probe.snapshot(client)
    result = run_wrk(url, "get_paths.lua", tuple(paths), duration_s=load.duration_s, connections=load.connections,
                     threads=load.threads)
    return {**result.as_dict(), **redis_probe.cost(before, redis_probe.snapshot(client)).figures(result.requests)}


async def _store_latency(settings: Settings, after: int, pairs: list[tuple[str, str, str, str]],
                         calls: int) -> tuple[list[float], list[float]]:
    """Our reads through Store, one at a time and without HTTP: measured like the seed's reads."""
    async with open_store(settings) as store:
        global_s, pair_s = [], []
        for i in range(calls):
            started = time.perf_counter()
            await store.read_feed((after,) * store.settings.partitions, 200, None)
            global_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            await store.read_pair(*pairs[i % len(pairs)], 0, 200)
            pair_s.append(time.perf_counter() - started)
    return global_s, pair_s


def _measure_size(server: Gunicorn, client: redis.Redis, settings: Settings, cfg: Config, size: int,
                  after: int, old_after: int) -> dict[str, Any]:
    pairs = _pair_params(size)
    ours_global = _http_latency(server, client, cfg.load, [f"/api/comments?after={after}&limit=200"])
    # A tab back from a long poll backoff: its cursor is older than any recent copy.
    ours_old = _http_latency(server, client, cfg.load, [f"/api/comments?after={old_after}&limit={POLL_MESSAGES}"])
    ours_pair = _http_latency(server, client, cfg.load, [_pair_path(p) for p in pairs])
    store_global, store_pair = asyncio.run(_store_latency(settings, after, pairs, STORE_CALLS))

    returned = len(seed.global_poll(client, after))  # also warms the seed's path once
    seed_global = seed.time_calls(lambda: seed.global_poll(client, after), cfg.seed_budget_s, cfg.seed_max_calls)
    rotation = iter(pairs * cfg.seed_max_calls)
    seed_pair = seed.time_calls(lambda: seed.pair_view(client, *next(rotation), 0), cfg.seed_budget_s, cfg.seed_max_calls)
    return {
        "poll_after": after,
        "ours_global": ours_global,
        "ours_global_old_cursor": ours_old,
        "ours_pair": ours_pair,
        "ours_store_global": latency_ms(store_global),
        "ours_store_pair": latency_ms(store_pair),
        "seed_global": {**latency_ms(seed_global), "messages": returned},
        "seed_pair": latency_ms(seed_pair),
    }


def _memory(server: Gunicorn, client: redis.Redis, baseline: int) -> dict[str, Any]:
    stats = httpx.get(server.url + "/api/admin/stats", timeout=10).json()
    used = redis_probe.used_memory(client) - baseline
    return {
        "used_memory_bytes": used,
        "message_bytes": stats["bytes"],
        "messages": stats["messages"],
        "keys": stats["keys"],
        "used_memory_per_message_byte": round(used / stats["bytes"], 3) if stats["bytes"] else None,
        "mean_message_bytes": round(stats["bytes"] / stats["messages"]) if stats["messages"] else None,
    }


def run(server: Gunicorn, client: redis.Redis, redis_url: str, settings: Settings, cfg: Config) -> dict[str, Any]:
    """Expects an empty database: its used_memory now is the baseline the memory figures subtract."""
    baseline = redis_probe.used_memory(client)
    rng = random.Random(5)
    loaded, rows = 0, []
    for size in cfg.sizes:
        started = time.perf_counter()
        stamps = preload(redis_url, settings, _bodies(rng, loaded, size, cfg.messages_per_key))
        preload_s = time.perf_counter() - started
        loaded = size
        stamps.sort()
        after = stamps[-POLL_MESSAGES] - 1  # the poll answers the newest POLL_MESSAGES
        rows.append({
            "keys": size,
            "preloaded_messages": len(stamps),
            "preload_s": round(preload_s, 2),
            "preload_messages_per_s": round(len(stamps) / preload_s),
            "memory": _memory(server, client, baseline),
            **_measure_size(server, client, settings, cfg, size, after, old_after=stamps[0] - 1),
        })
    first, last = rows[0], rows[-1]
    return {
        "config": {**cfg.__dict__, "load": cfg.load.__dict__},
        "baseline_used_memory": baseline,
        "sizes": rows,
        "global_p50_growth": round(last["ours_global"]["p50_ms"] / first["ours_global"]["p50_ms"], 3),
        "pair_p50_growth": round(last["ours_pair"]["p50_ms"] / first["ours_pair"]["p50_ms"], 3),
    }
