"""The seed's reads, for contrast: list every key, load every message, filter by timestamp, sort.

The Durable Object did `storage.list({prefix})` then loaded each value; on Redis that is SCAN MATCH
plus one ZRANGE per key (pipelined, to be kind to it) and a JSON decode of every message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from app import keys
from app.models import decode

_SCAN_COUNT = 1000
_PIPELINE = 1000


def _load(client: redis.Redis, names: Iterable[bytes | str]) -> list[dict[str, Any]]:
    names = list(names)
    messages: list[dict[str, Any]] = []
    for start in range(0, len(names), _PIPELINE):
        with client.pipeline(transaction=False) as pipe:
            for name in names[start:start + _PIPELINE]:
                pipe.zrange(name, 0, -1)
            for rows in pipe.execute():
                messages.extend(decode(raw) for raw in rows)
    return messages


def _newer(messages: list[dict[str, Any]], after: int) -> list[dict[str, Any]]:
    fresh = [m for m in messages if m["timestamp"] > after]
    fresh.sort(key=lambda m: m["timestamp"])
    return fresh


def global_poll(client: redis.Redis, after: int) -> list[dict[str, Any]]:
    """GET /api/comments?after= as the seed answered it (phase 4 of the seed's plan)."""
    names = [*client.scan_iter(match="conv:*", count=_SCAN_COUNT), *client.scan_iter(match="godmode:*", count=_SCAN_COUNT)]
    return _newer(_load(client, names), after)


def pair_view(client: redis.Redis, human_user: str, human_color: str, ai_user: str, ai_color: str,
              after: int) -> list[dict[str, Any]]:
    """GET /api/conversation for a God Mode pair as the seed answered it: its conv: key plus every
    session key listed by prefix (SCAN MATCH visits the whole keyspace; the DO's list was a range)."""
    prefix = keys.godmode_prefix(human_user, human_color, ai_user, ai_color)
    names = [keys.conv_key(human_user, human_color, ai_user, ai_color),
             *client.scan_iter(match=prefix + "*", count=_SCAN_COUNT)]
    return _newer(_load(client, names), after)


def time_calls(call: Callable[[], object], budget_s: float, max_calls: int) -> list[float]:
    """Durations of up to `max_calls` calls, stopping once `budget_s` is spent (at least one call)."""
    durations: list[float] = []
    deadline = time.monotonic() + budget_s
    while len(durations) < max_calls and (not durations or time.monotonic() < deadline):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return durations
