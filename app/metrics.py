"""Prometheus metrics, summed across gunicorn workers (prometheus-client multiprocess mode:
gunicorn.conf.py gives each instance its own PROMETHEUS_MULTIPROC_DIR before any worker imports
this module). Queue depth is read from Redis at scrape time, so it is the store's, not a worker's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from . import ops
from .errors import AppError
from .scripts import AppendResult
from .store import Store

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS", "HEAD"})  # others: "other"
# A POST is ~0.1 ms of worker CPU plus a Redis round trip; a stalled Redis answers at REDIS_TIMEOUT_S (5 s).
_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)

if os.environ.get(MULTIPROC_ENV):
    # Each update asks for the pid to notice a fork: os.getpid() is a system call, 5% of a POST's
    # CPU for six updates. The pid read once, and again in a forked child, answers the same.
    _pid = [os.getpid()]
    os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
    values.ValueClass = values.MultiProcessValue(lambda: _pid[0])  # type: ignore[no-untyped-call]

REQUESTS = Counter("godmode_http_requests", "HTTP requests answered, by route template and status",
                   ["method", "route", "status"])
LATENCY = Histogram("godmode_http_request_duration_seconds", "Time from request to the end of the response",
                    ["method", "route"], buckets=_HTTP_BUCKETS)
APPENDS = Counter("godmode_appends", "Messages stored by POST /api/comments, by key kind", ["kind"])
DUPLICATES = Counter("godmode_append_duplicates", "POSTs of an id already stored (answered 'duplicate')", ["kind"])
TOO_LARGE = Counter("godmode_payload_too_large", "413 answers, by reason (body, message, session, backlog)",
                    ["reason"])
CLAIM_TIMEOUTS = Counter("godmode_claim_timeouts", "Claims not completed within CLAIM_TIMEOUT_S, put back in line")
REDIS_ERRORS = Counter("godmode_redis_errors", "Requests answered 503 because Redis was unreachable, slow or failing")
SCRIPT_LATENCY = Histogram("godmode_redis_script_duration_seconds",
                           "Round trip of one batch of Lua script calls, by script and outcome",
                           ["script", "ok"], buckets=_REDIS_BUCKETS)

_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        label = method if method in _METHODS else "other"
        children = (REQUESTS.labels(label, route, str(status)), LATENCY.labels(label, route))
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


_script_children: dict[tuple[str, bool], Any] = {}
_append_children: dict[tuple[str, str], Any] = {}  # labels() costs as much as the inc: look children up once


def observe_script(script: str, seconds: float, ok: bool) -> None:
    """Store's observer: called once per script per round trip (see Store.observer)."""
    child = _script_children.get((script, ok))
    if child is None:
        child = _script_children[script, ok] = SCRIPT_LATENCY.labels(script, "true" if ok else "false")
    child.observe(seconds)


def record_append(kind: str, result: AppendResult) -> None:
    if result.status in ("ok", "duplicate"):
        child = _append_children.get((kind, result.status))
        if child is None:
            counter = APPENDS if result.status == "ok" else DUPLICATES
            child = _append_children[kind, result.status] = counter.labels(kind)
        child.inc()
    elif result.status == "backlog":
        TOO_LARGE.labels("backlog").inc()
    else:
        TOO_LARGE.labels("message" if result.size > result.limit else "session").inc()


class _Scraped:
    """Gauges read at scrape time."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def _store_families(store: Store) -> list[Metric]:
    up = GaugeMetricFamily("godmode_redis_up", "1 when Redis answered this scrape's queue read")
    try:
        depth = await ops.queue_depth(store, time.time())
    except AppError:
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    queue = GaugeMetricFamily("godmode_queue_depth", "Messages queued for the bot, by state", labels=["state"])
    queue.add_metric(["pending"], depth.pending)
    queue.add_metric(["processing"], depth.processing)
    expired = GaugeMetricFamily("godmode_queue_expired_claims",
                                "Claims older than CLAIM_TIMEOUT_S: timed out, back to pending at the next claim")
    expired.add_metric([], depth.expired)
    return [up, queue, expired]


def exposition(extra: list[Metric]) -> bytes:
    """Every worker's counters (multiprocess mode) or this process's, plus `extra`."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    scraped = CollectorRegistry()
    scraped.register(_Scraped(extra))
    return body + generate_latest(scraped)


async def metrics_endpoint(request: Request) -> Response:
    store: Store = request.app.state.store
    return Response(exposition(await _store_families(store)), media_type=CONTENT_TYPE_LATEST)
