"""Worker CPU of the request paths that do no I/O: a POST body's validation and planning, and the
encoding of a poll page (50 and 200 stored messages), in µs of process CPU per call (best of 7
timeit runs: CPU time, so other processes on the machine do not count).

    .venv/bin/python bench/encode_cost.py

Runs against whichever app/ is importable, so the same script measures a branch and its base:
`PYTHONPATH=<other checkout> PYTHONDONTWRITEBYTECODE=1 .venv/bin/python bench/encode_cost.py`.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec

from app import models
from app.config import Settings

SETTINGS = Settings()
FRONTEND = msgspec.json.encode({
    "id": "k3j9x0a2mq1", "timestamp": 1766300000123, "text": "What is the meaning of life?", "username": "Human",
    "color": "080150227", "domain": "saywhatwant.app", "language": "en", "message-type": "human", "misc": "",
    "context": [f"Human: message number {i} of the conversation so far" for i in range(40)],
    "botParams": {"entity": "the-eternal", "priority": 5, "ais": "TheEternal:080175220"},
})
BOT = msgspec.json.encode({
    "text": "(TheEternal) " + "Look within. " * 60, "username": "GodMode", "color": "171181104",
    "message-type": "AI", "replyTo": "k3j9x0a2mq1",
    "botParams": {"humanUsername": "Human", "humanColor": "080150227", "entity": "god-mode",
                  "ais": "GodMode:171181104", "sessionId": "1763027011418-1mmzaea"},
})


def _plan(raw: bytes) -> Any:
    if hasattr(models, "Comment"):  # this branch: a typed decode
        return models.plan_append(models.load_json(raw, models.Comment), SETTINGS)
    return models.plan_append(models.json_object(raw), SETTINGS)  # type: ignore[attr-defined]


def _stored(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        plan = _plan(BOT if i % 2 else FRONTEND)
        out.append(models.stored_member(plan, 1766300000123 + i, "saywhatwant.app"))
    return out


def _concat(messages: list[bytes]) -> bytes:
    """The poll answer as api.get_comments built it before msgspec did: bytes concatenation."""
    tail = b'],"nextAfter":%d,"hasMore":%s,"globalScore":%d,"cursor":"%s","reset":%s'
    body = b'{"messages":[' + b",".join(messages)
    body += tail % (1766300000322, b"false", 72, b"c1.mwv3d2k5.0.0.0.0.0.0.0.0.0.0.0.0", b"false")
    return body + b',"version":' + msgspec.json.encode("2026.11.25") + b"}"


def _structs(messages: list[bytes]) -> bytes:
    page = models.PollPage(messages=[msgspec.Raw(m) for m in messages], nextAfter=1766300000322, hasMore=False,
                           globalScore=72, cursor="c1.mwv3d2k5.0.0.0.0.0.0.0.0.0.0.0.0", reset=False,
                           version="2026.11.25")
    return models.encode(page)


def best_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7, timer=time.process_time)) / number * 1e6


def main() -> None:
    rows = [(f"POST validate + plan, frontend body ({len(FRONTEND)} B)", best_us(lambda: _plan(FRONTEND), 20000)),
            (f"POST validate + plan, bot answer ({len(BOT)} B)", best_us(lambda: _plan(BOT), 20000))]
    for n in (50, 200):
        page = _stored(n)
        rows.append((f"poll page of {n}: bytes concatenation", best_us(partial(_concat, page), 5000)))
        if hasattr(models, "PollPage"):
            assert msgspec.json.decode(_structs(page)) == msgspec.json.decode(_concat(page))
            rows.append((f"poll page of {n}: msgspec Struct + Raw", best_us(partial(_structs, page), 5000)))
    for name, us in rows:
        print(f"{name:<52} {us:8.2f} µs")


if __name__ == "__main__":
    main()
