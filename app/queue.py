"""The bot's queue and in-place updates: which partition to act on, and what each script's answer
means to the client. Every change to a message is one atomic script (lua/claim_message.lua,
complete_message.lua, score_message.lua), so two claimers of one message get exactly one winner
and nobody retries a lost race.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from . import metrics
from .errors import Conflict, NotFound
from .keys import Partition
from .models import decode
from .scripts import ClaimResult
from .store import QueueHead, Store

# claim-next looks again when another bot emptied the partition it chose; each look is one read
# per partition, and each miss means another bot was served.
MAX_LOOKS = 32


def _with_context(raw: bytes, context: bytes | None) -> dict[str, Any]:
    message: dict[str, Any] = decode(raw)
    message["context"] = decode(context) if context else []
    return message


def _claimed(result: ClaimResult, token: str) -> tuple[dict[str, Any], str]:
    assert result.message is not None
    return _with_context(result.message, result.context), token


async def _only_partition(store: Store, message_id: str) -> Partition:
    found = await store.partitions_holding(message_id)
    if not found:
        raise NotFound(f"message {message_id} not found", messageId=message_id)
    if len(found) > 1:
        raise Conflict(f"message id {message_id} is used in more than one conversation; nothing was changed",
                       messageId=message_id)
    return found[0]


async def update_score(store: Store, message_id: str, score: int) -> tuple[bytes, int]:
    """(the stored message as Redis holds it now, globalScore)."""
    raw = await store.score_message(await _only_partition(store, message_id), message_id, score)
    if raw is None:
        raise NotFound(f"message {message_id} not found", messageId=message_id)
    return raw, await store.global_score()


async def _heads(store: Store) -> list[QueueHead]:
    """Every partition's queue head, after putting expired claims back where there are any."""
    heads = await store.queue_heads()
    cutoff = time.time() * 1000 - store.settings.claim_timeout_s * 1000
    expired = [h.partition for h in heads if h.oldest_claim is not None and h.oldest_claim <= cutoff]
    if not expired:
        return heads
    metrics.CLAIM_TIMEOUTS.inc(await store.requeue_expired(expired))
    return await store.queue_heads()


async def claim_next(store: Store, worker: bytes) -> tuple[dict[str, Any] | None, str, int, int]:
    """The best pending message across partitions (priority high first, then oldest), claimed.
    Returns (message or None, claimToken, totalPending, remainingPending)."""
    token = secrets.token_urlsafe(12)
    total = 0
    for _ in range(MAX_LOOKS):
        heads = await _heads(store)
        total = sum(h.pending for h in heads)
        ready = [h for h in heads if h.best_rank is not None]
        if not ready:
            return None, "", total, total
        best = min(ready, key=lambda h: (h.best_rank, h.partition.index))
        result = await store.claim(best.partition, "next", worker=worker, token=token)
        metrics.CLAIM_TIMEOUTS.inc(result.requeued)
        if result.status == "ok":
            message, token = _claimed(result, token)
            remaining = total - best.pending + result.pending
            return message, token, remaining + 1, remaining
    return None, "", total, total  # every look lost to other bots: the caller sleeps and asks again


async def claim(store: Store, message_id: str, worker: bytes) -> tuple[dict[str, Any], str]:
    token = secrets.token_urlsafe(12)
    result = await store.claim(await _only_partition(store, message_id), "id", target=message_id, worker=worker,
                               token=token)
    metrics.CLAIM_TIMEOUTS.inc(result.requeued)
    if result.status == "ok":
        return _claimed(result, token)
    if result.status == "not_found":
        raise NotFound(f"message {message_id} not found", messageId=message_id)
    if result.status == "not_queued":
        raise Conflict(f"message {message_id} is not queued", messageId=message_id)
    raise Conflict(f"message {message_id} is {result.current_status}, not pending", messageId=message_id)


async def complete(store: Store, message_id: str, token: str) -> None:
    found = await store.partitions_holding(message_id)
    if not found:
        raise NotFound(f"message {message_id} not found", messageId=message_id)
    if len(found) > 1 and not token:
        raise Conflict(f"message id {message_id} is used in more than one conversation; send its claimToken",
                       messageId=message_id)
    result = None
    for partition in found:  # with a token, only the partition holding that claim accepts it
        result = await store.complete(partition, message_id, token)
        if result.status == "ok":
            return
    assert result is not None
    if result.status == "not_found":
        raise NotFound(f"message {message_id} not found", messageId=message_id)
    if result.status == "not_queued":
        raise Conflict(f"message {message_id} was never queued", messageId=message_id)
    if result.status == "stale":
        raise Conflict(f"claimToken is not the current claim of message {message_id}; it was claimed again",
                       messageId=message_id)
    raise Conflict(f"message {message_id} is already {result.current_status}", messageId=message_id)


# GET /api/queue/pending answers at most this many bytes of messages and contexts (a context is
# up to 200 displayed messages): 100 queued messages with big contexts made one answer 180 MB.
PENDING_MAX_BYTES = 1024 * 1024
PENDING_READ_CHUNK = 20  # messages read per round trip, so a full budget stops the reading too


async def pending(store: Store, limit: int) -> tuple[list[dict[str, Any]], int, int, bool]:
    """The head of the queue: (messages with their contexts, pending, processing, truncated). Stops
    before PENDING_MAX_BYTES (the first message always comes)."""
    heads = await _heads(store)
    wanted = await store.pending_ids(limit)
    out: list[dict[str, Any]] = []
    used = 0
    for start in range(0, len(wanted), PENDING_READ_CHUNK):
        for m in await store.read_messages(wanted[start : start + PENDING_READ_CHUNK]):
            if m is None or m.raw is None:
                continue
            size = len(m.raw) + len(m.context or b"")
            if out and used + size > PENDING_MAX_BYTES:
                return out, sum(h.pending for h in heads), sum(h.processing for h in heads), True
            used += size
            out.append(_with_context(m.raw, m.context))
    return out, sum(h.pending for h in heads), sum(h.processing for h in heads), False
