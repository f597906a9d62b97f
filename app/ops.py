"""Operator reads that are not on a request's hot path: queue depth for /metrics and the paged key
listing of `list-keys` (one Store round trip each)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import keys
from .errors import BadRequest
from .store import Store

# SCAN MATCH for both message prefixes at once ("conv:" and "godmode:"); exact prefixes are
# checked on each key found.
_BOTH = "[cg]o[nd][vm]*"
_PREFIXES = (keys.CONV + ":", keys.GODMODE + ":")
_GLOB = frozenset("*?[]\\")
_CURSOR_RE = re.compile(r"([0-9]{1,4}\.)?[0-9]{1,20}")  # SCAN's cursor; on a cluster "<master>.<its cursor>"


@dataclass(frozen=True, slots=True)
class QueueDepth:
    pending: int
    processing: int
    expired: int  # processing entries claimed before now - CLAIM_TIMEOUT_S


async def queue_depth(store: Store, now_s: float) -> QueueDepth:
    cutoff = int(now_s * 1000) - store.settings.claim_timeout_s * 1000
    return QueueDepth(*await store.queue_depth(cutoff))


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[str]
    cursor: str | None  # None: the scan is complete


def list_pattern(prefix: str | None) -> str:
    """The SCAN MATCH pattern for a `prefix` (None, "conv", "godmode", or a longer key prefix)."""
    if not prefix:
        return _BOTH
    if prefix in (keys.CONV, keys.GODMODE):
        prefix += ":"
    if not prefix.startswith(_PREFIXES) or _GLOB & set(prefix) or len(prefix) > 400:
        raise BadRequest("prefix", "must be conv, godmode, or a key prefix starting with conv: or godmode: "
                         "(no glob characters)")
    return prefix + "*"


async def list_keys(store: Store, prefix: str | None = None, cursor: str | None = None,
                    count: int = 100) -> KeyPage:
    """One SCAN step over the message keys. A page may hold fewer keys than `count`, even none,
    before the scan is complete: follow `cursor` until it is None."""
    if cursor is not None and (not _CURSOR_RE.fullmatch(cursor) or int(cursor.rpartition(".")[2]) >= 2**64):
        raise BadRequest("cursor", "must be a cursor from a previous page")
    following, found = await store.scan_page(list_pattern(prefix), cursor, count)
    names = sorted(name for name in found if name.startswith(_PREFIXES))
    return KeyPage(names, None if following == "0" else following)
