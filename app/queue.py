"""The bot's queue and in-place message updates, as read-modify-compare-and-swap over Store.

A message is read with its location, changed here (so field order and shape stay ours), and
written back by replace_message.lua only if nobody changed it meanwhile; on a lost race we read
again. Two claimers of one message: exactly one swap succeeds.
"""

from __future__ import annotations

from typing import Any

from . import keys
from .errors import Conflict, NotFound
from .models import decode, encode
from .store import QueuePeek, Store, StoredMessage

MAX_RACES = 20  # lost swaps before giving up; each loss means another writer made progress


def _with_context(message: dict[str, Any], context: bytes | None) -> dict[str, Any]:
    message["context"] = decode(context) if context else []
    return message


async def _read(store: Store, message_id: str) -> tuple[StoredMessage, dict[str, Any]]:
    stored = await store.read_message(message_id)
    if stored is None or stored.raw is None:
        raise NotFound(f"message {message_id} not found", messageId=message_id)
    return stored, decode(stored.raw)


def _queue_state(message: dict[str, Any]) -> dict[str, Any] | None:
    params = message.get("botParams")
    if message.get("message-type") != "human" or not isinstance(params, dict):
        return None
    return params


async def update_score(store: Store, message_id: str, score: int) -> tuple[dict[str, Any], int]:
    for _ in range(MAX_RACES):
        stored, message = await _read(store, message_id)
        delta = score - int(message.get("eqScore") or 0)
        message["eqScore"] = score
        if await store.replace_message(stored, message_id, encode(message), delta=delta):
            return message, await store.global_score()
    raise Conflict("message is being updated concurrently; retry", messageId=message_id)


def _claimed(message: dict[str, Any], worker: str, now: int) -> bytes:
    params = message["botParams"]
    params["status"] = "processing"
    params["claimedBy"] = worker
    params["claimedAt"] = now
    return encode(message)


async def claim(store: Store, message_id: str, worker: str) -> dict[str, Any]:
    for _ in range(MAX_RACES):
        stored, message = await _read(store, message_id)
        params = _queue_state(message)
        if params is None:
            raise Conflict(f"message {message_id} is not queued", messageId=message_id)
        if params.get("status") != "pending":
            raise Conflict(f"message {message_id} is {params.get('status')}, not pending", messageId=message_id)
        if await store.replace_message(stored, message_id, _claimed(message, worker, stored.now), "processing", stored.now):
            return _with_context(message, stored.context)
    raise Conflict("message is being claimed concurrently; retry", messageId=message_id)


async def complete(store: Store, message_id: str) -> None:
    for _ in range(MAX_RACES):
        stored, message = await _read(store, message_id)
        params = _queue_state(message)
        if params is None:
            raise Conflict(f"message {message_id} was never queued", messageId=message_id)
        if params.get("status") not in ("pending", "processing"):
            raise Conflict(f"message {message_id} is already {params.get('status')}", messageId=message_id)
        params["status"] = "complete"
        params["completedAt"] = stored.now
        if await store.replace_message(stored, message_id, encode(message), "done"):
            return
    raise Conflict("message is being completed concurrently; retry", messageId=message_id)


async def _requeue(store: Store, peek: QueuePeek) -> None:
    """Put an expired claim back in line, clearing the claim and counting the attempt."""
    if peek.raw is None:
        await store.drop_queue_entry(peek.id)
        return
    message = decode(peek.raw)
    params = message["botParams"]
    params["status"] = "pending"
    params["claimedBy"] = None
    params["claimedAt"] = None
    params["attempts"] = int(params.get("attempts") or 0) + 1
    rank = keys.queue_rank_base(int(params.get("priority", 5))) + int(message["timestamp"])
    await store.replace_message(peek.stored(), peek.id, encode(message), "pending", rank)


async def requeue_expired(store: Store) -> QueuePeek:
    """Return expired claims to pending; the final peek shows the head of the queue."""
    for _ in range(MAX_RACES):
        peek = await store.peek_queue()
        if peek.kind != "expired":
            return peek
        await _requeue(store, peek)
    return await store.peek_queue()


async def claim_next(store: Store, worker: str) -> tuple[dict[str, Any] | None, int, int]:
    """Claim the head of the queue. Returns (message or None, totalPending, remainingPending)."""
    for _ in range(MAX_RACES):
        peek = await requeue_expired(store)
        if peek.kind != "pending":
            return None, peek.pending, peek.pending
        if peek.raw is None:
            await store.drop_queue_entry(peek.id)
            continue
        message = decode(peek.raw)
        if await store.replace_message(peek.stored(), peek.id, _claimed(message, worker, peek.now), "processing", peek.now):
            return _with_context(message, peek.context), peek.pending, peek.pending - 1
    raise Conflict("the queue is contended; retry")


async def pending(store: Store, limit: int) -> tuple[list[dict[str, Any]], int, int]:
    await requeue_expired(store)
    out = []
    for message_id in await store.pending_ids(limit):
        stored = await store.read_message(message_id)
        if stored is not None and stored.raw is not None:
            out.append(_with_context(decode(stored.raw), stored.context))
    waiting, processing = await store.queue_counts()
    return out, waiting, processing
