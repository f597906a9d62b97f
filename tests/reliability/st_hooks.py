"""Schemathesis checks for the fuzz run (loaded through SCHEMATHESIS_HOOKS by test_hostile.py).

The run is sequential (one worker) against a service nobody else uses, so the store's state
before and after each request can be compared: a rejected request must leave it unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import redis
import schemathesis

from tests.helpers import partitions, queue_sizes, stats

_redis = redis.Redis(port=int(os.environ.get("GMS_FUZZ_REDIS_PORT", "6379")), socket_timeout=10)
_last: tuple[Any, ...] | None = None

# Rules models.py enforces that OpenAPI cannot state (its description says them): a 400 naming
# these fields is the documented answer to a request the schema alone allows.
DOCUMENTED_400 = {
    ("/api/godmode-conversation", "aiUsername"), ("/api/godmode-conversation", "aiColor"),
    ("/api/godmode-session/{session_id}", "aiUsername"), ("/api/godmode-session/{session_id}", "aiColor"),
    ("/api/godmode-sessions", "aiUsername"), ("/api/godmode-sessions", "aiColor"),
    ("/api/godmode-sessions", "cursor"),  # its pattern cannot say which base64 holds a session of ours
    ("/api/godmode-session", "sessionData.sessionId"),  # must equal the id in sessionKey
}


def _fingerprint() -> tuple[Any, ...]:
    counters = stats(_redis)
    ids = sum(_redis.hlen(p.ids) for p in partitions())
    return tuple(sorted(counters.items())), _redis.dbsize(), queue_sizes(_redis), ids


def _json(response: schemathesis.Response) -> Any:
    try:
        return response.json()
    except Exception:  # noqa: BLE001 - any decoding failure is "not JSON"
        return None


@schemathesis.check
def rejections_write_nothing(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                             case: schemathesis.Case) -> bool | None:
    global _last
    now = _fingerprint()
    before, _last = _last, now
    if before is not None and 400 <= response.status_code < 500 and now != before:
        raise AssertionError(f"{response.status_code} rejection changed the store: {before} -> {now}")
    return None


@schemathesis.check
def errors_are_json_with_error(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                               case: schemathesis.Case) -> bool | None:
    if response.status_code >= 500:
        raise AssertionError(f"server error {response.status_code}")
    if response.status_code >= 400:
        body = _json(response)
        if not (response.headers.get("content-type", [""])[0].startswith("application/json")
                and isinstance(body, dict) and isinstance(body.get("error"), str)):
            raise AssertionError(f"{response.status_code} without a JSON error body: {response.text[:200]!r}")
    return None


@schemathesis.check
def valid_requests_accepted(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                            case: schemathesis.Case) -> bool | None:
    """positive_data_acceptance, minus the documented cross-field rules (DOCUMENTED_400)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code in (401, 403, 404, 409):
        return None
    if response.status_code < 400:
        return None
    body = _json(response)
    field = body.get("field") if isinstance(body, dict) else None
    if (case.operation.path, field) in DOCUMENTED_400:
        return None
    raise AssertionError(f"schema-valid request rejected: {response.status_code} {response.text[:300]!r}")
