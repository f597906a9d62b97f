"""One typed contract per Lua script: its KEYS and ARGV by name, and its reply decoded.

Each contract is a frozen msgspec Struct (28 fields build in 0.3 µs; a frozen dataclass took 8)
whose KEYS and ARGV tuples list field names in the order the script unpacks them (`local key,
feed, ... = unpack(KEYS)` on its first lines; a test checks the two agree). Building a call is
pure; Store runs it.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, ClassVar, Generic, TypeVar

from msgspec import Struct

from . import keys
from .keys import Partition

T = TypeVar("T")


def text(value: bytes | str | memoryview) -> str:
    return value if isinstance(value, str) else bytes(value).decode()


def parse_location(record: bytes | str) -> tuple[int, str, str]:
    """(ts, domain, message key) of an ids-hash record "<ts> <domain> <key>" (packed by _lib.lua)."""
    ts, domain, key = text(record).split(" ", 2)
    return int(ts), domain, key


class Call(Struct, Generic[T], frozen=True):
    """A script call: `script` names lua/<script>.lua; KEYS and ARGV name the fields to send."""

    script: ClassVar[str]
    KEYS: ClassVar[tuple[str, ...]]
    ARGV: ClassVar[tuple[str, ...]]

    _get_keys_and_args: ClassVar[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "KEYS" in cls.__dict__ or "ARGV" in cls.__dict__:  # one C call gets them all (a genexpr was 4 µs)
            names = (*cls.KEYS, *cls.ARGV)
            get = attrgetter(*names)
            # attrgetter is no descriptor: a class attribute as is; of one name it returns no tuple
            cls._get_keys_and_args = get if len(names) > 1 else staticmethod(lambda call: (get(call),))

    def keys(self) -> tuple[Any, ...]:
        return self.keys_and_args()[1 : 1 + len(self.KEYS)]

    def args(self) -> tuple[Any, ...]:
        return self.keys_and_args()[1 + len(self.KEYS) :]

    def keys_and_args(self) -> tuple[Any, ...]:
        """What follows the sha in EVALSHA: the number of keys, the keys, the arguments."""
        return (len(self.KEYS), *self._get_keys_and_args(self))

    def decode(self, reply: Any) -> T:
        raise NotImplementedError


# -- append_message -----------------------------------------------------------------------------


class AppendResult(Struct, frozen=True):
    status: str  # ok | duplicate | too_large | backlog
    timestamp: int = 0
    key: str = ""
    domain: str = ""
    size: int = 0
    limit: int = 0
    current: int = 0


class AppendMessage(Call[AppendResult], frozen=True):
    script: ClassVar[str] = "append_message"
    KEYS: ClassVar[tuple[str, ...]] = (
        "key", "feed", "ids", "lapses", "meta", "sizes", "pending", "processing", "contexts", "sessions",
        "pair_sessions", "session_ids")
    ARGV: ClassVar[tuple[str, ...]] = (
        "id", "middle", "status", "eq_score", "domain", "default_domain", "reply_to", "kind", "conv_window",
        "max_bytes", "feed_window", "ttl_ms", "rank_base", "context", "session_member", "session_field")

    key: str
    feed: str
    ids: str
    lapses: str
    meta: str
    sizes: str
    pending: str
    processing: str
    contexts: str
    sessions: str
    pair_sessions: str
    session_ids: str
    id: str
    middle: bytes
    status: str
    eq_score: int
    domain: str
    default_domain: str
    reply_to: str
    kind: str
    conv_window: int
    max_bytes: int
    feed_window: int
    ttl_ms: int
    rank_base: int | str  # '' = not queued
    context: bytes
    session_member: str
    session_field: str

    def decode(self, reply: Any) -> AppendResult:
        status = text(reply[0])
        if status == "ok":
            return AppendResult("ok", int(reply[1]), self.key, text(reply[2]))
        if status == "duplicate":
            ts, _, key = parse_location(reply[1])
            return AppendResult("duplicate", ts, key)
        return AppendResult(status, size=int(reply[1]), limit=int(reply[2]), current=int(reply[3]), key=self.key)


# -- queue --------------------------------------------------------------------------------------


class ClaimResult(Struct, frozen=True):
    status: str  # ok | empty | busy | not_found | not_queued | not_pending | requeued
    message: bytes | None = None
    context: bytes | None = None
    pending: int = 0
    processing: int = 0
    current_status: str = ""
    requeued: int = 0  # expired claims the call put back first


class _QueueKeys(Struct, frozen=True):
    pending: str
    processing: str
    claims: str
    contexts: str
    ids: str
    feed: str
    sizes: str
    meta: str


_QUEUE_KEYS = ("pending", "processing", "claims", "contexts", "ids", "feed", "sizes", "meta")


def _queue_keys(p: Partition) -> dict[str, str]:
    return {"pending": p.pending, "processing": p.processing, "claims": p.claims, "contexts": p.contexts,
            "ids": p.ids, "feed": p.feed, "sizes": p.sizes, "meta": p.meta}


class ClaimMessage(_QueueKeys, Call[ClaimResult], frozen=True):
    script: ClassVar[str] = "claim_message"
    KEYS: ClassVar[tuple[str, ...]] = _QUEUE_KEYS
    ARGV: ClassVar[tuple[str, ...]] = ("mode", "target", "worker", "token", "timeout_ms", "requeue_max", "stride")

    mode: str  # next | id | requeue
    target: str
    worker: bytes  # JSON string
    token: str
    timeout_ms: int
    requeue_max: int
    stride: int

    @classmethod
    def build(cls, p: Partition, mode: str, *, target: str = "", worker: bytes = b'""', token: str = "",
              timeout_ms: int, requeue_max: int = 100) -> ClaimMessage:
        return cls(**_queue_keys(p), mode=mode, target=target, worker=worker, token=token, timeout_ms=timeout_ms,
                   requeue_max=requeue_max, stride=keys.PRIORITY_STRIDE)

    def decode(self, reply: Any) -> ClaimResult:
        status, requeued = text(reply[0]), int(reply[-1])
        if status == "ok":
            return ClaimResult("ok", reply[1], reply[2] or None, int(reply[3]), int(reply[4]), requeued=requeued)
        if status in ("empty", "busy", "requeued"):
            return ClaimResult(status, pending=int(reply[1]), processing=int(reply[2]), requeued=requeued)
        if status == "not_pending":
            return ClaimResult(status, current_status=text(reply[1]), requeued=requeued)
        return ClaimResult(status, requeued=requeued)


class CompleteResult(Struct, frozen=True):
    status: str  # ok | not_found | not_queued | done_already | stale
    current_status: str = ""


class CompleteMessage(_QueueKeys, Call[CompleteResult], frozen=True):
    script: ClassVar[str] = "complete_message"
    KEYS: ClassVar[tuple[str, ...]] = _QUEUE_KEYS
    ARGV: ClassVar[tuple[str, ...]] = ("id", "token")

    id: str
    token: str

    @classmethod
    def build(cls, p: Partition, message_id: str, token: str) -> CompleteMessage:
        return cls(**_queue_keys(p), id=message_id, token=token)

    def decode(self, reply: Any) -> CompleteResult:
        return CompleteResult(text(reply[0]), text(reply[1]) if len(reply) > 1 else "")


class ScoreMessage(Call["bytes | None"], frozen=True):
    script: ClassVar[str] = "score_message"
    KEYS: ClassVar[tuple[str, ...]] = ("ids", "feed", "sizes", "meta", "pending", "processing")
    ARGV: ClassVar[tuple[str, ...]] = ("id", "score")

    ids: str
    feed: str
    sizes: str
    meta: str
    pending: str
    processing: str
    id: str
    score: int

    @classmethod
    def build(cls, p: Partition, message_id: str, score: int) -> ScoreMessage:
        return cls(p.ids, p.feed, p.sizes, p.meta, p.pending, p.processing, message_id, score)

    def decode(self, reply: Any) -> bytes | None:
        return reply[1] if text(reply[0]) == "ok" else None


# -- reads --------------------------------------------------------------------------------------


class StoredMessage(Struct, frozen=True):
    key: str
    raw: bytes | None  # None: the id is known but its message was trimmed or deleted
    context: bytes | None


class ReadMessage(Call["StoredMessage | None"], frozen=True):
    script: ClassVar[str] = "read_message"
    KEYS: ClassVar[tuple[str, ...]] = ("ids", "contexts")
    ARGV: ClassVar[tuple[str, ...]] = ("id",)

    ids: str
    contexts: str
    id: str

    @classmethod
    def build(cls, p: Partition, message_id: str) -> ReadMessage:
        return cls(p.ids, p.contexts, message_id)

    def decode(self, reply: Any) -> StoredMessage | None:
        if not reply:
            return None
        return StoredMessage(text(reply[0]), reply[1] or None, reply[2] or None)


class ReadPair(Call["list[bytes]"], frozen=True):
    script: ClassVar[str] = "read_pair"
    KEYS: ClassVar[tuple[str, ...]] = ("conv", "pair_sessions")
    ARGV: ClassVar[tuple[str, ...]] = ("key_prefix", "key_suffix", "min_score", "limit", "with_sessions")

    conv: str
    pair_sessions: str
    key_prefix: str
    key_suffix: str  # Partition.key_suffix
    min_score: int  # after + 1: scores are timestamp + a fraction
    limit: int
    with_sessions: str  # '1' | '0'

    def decode(self, reply: Any) -> list[bytes]:
        return list(reply)


_HUMAN_MARK = b'"message-type":"human"'  # quotes inside JSON strings are escaped: only the field matches


class SessionRow(Struct, frozen=True):
    """One God Mode session as read_sessions.lua / read_session.lua return it."""

    member: str  # "{aiUsername}:{aiColor}:{sessionId}"
    score: str  # its index score (its first message's): with member, where the next page resumes
    count: int
    byte_count: int
    first: bytes
    last_timestamp: int
    replied: bytes | None  # the message the first one replies to (the human's question); None if first is human
    meta: bytes | None = None  # the bot's metadata, read by Store only when needs_meta
    messages: list[bytes] | None = None
    truncated: bool = False  # messages stopped at the byte budget
    key: str = ""  # the session's key as Redis holds it (tagged on a cluster)

    @property
    def needs_meta(self) -> bool:
        """Whether the question can only come from the bot's metadata (see models.session_summary)."""
        return self.replied is None and _HUMAN_MARK not in self.first


class SessionsPage(Struct, frozen=True):
    rows: list[SessionRow]
    total: int
    next: tuple[str, str] | None  # (member, score) to resume after; None: the listing is complete


class ReadSessions(Call[SessionsPage], frozen=True):
    script: ClassVar[str] = "read_sessions"
    KEYS: ClassVar[tuple[str, ...]] = ("index", "ids", "sizes")
    ARGV: ClassVar[tuple[str, ...]] = ("key_prefix", "key_suffix", "after_member", "after_score", "limit", "max_bytes")

    index: str  # the human's sessions, or one pair's
    ids: str
    sizes: str
    key_prefix: str
    key_suffix: str  # Partition.key_suffix
    after_member: str  # '' = from the newest
    after_score: str
    limit: int
    max_bytes: int

    def decode(self, reply: Any) -> SessionsPage:
        rows = [
            SessionRow(text(reply[i]), text(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3]), reply[i + 4],
                       int(reply[i + 5]), reply[i + 6] or None, key=self.key_prefix + text(reply[i]) + self.key_suffix)
            for i in range(3, len(reply), 7)
        ]
        following = (text(reply[1]), text(reply[2])) if reply[1] else None
        return SessionsPage(rows, int(reply[0]), following)


class ReadSession(Call["SessionRow | None"], frozen=True):
    script: ClassVar[str] = "read_session"
    KEYS: ClassVar[tuple[str, ...]] = ("key", "ids", "sizes")
    ARGV: ClassVar[tuple[str, ...]] = ("max_bytes",)

    key: str
    ids: str
    sizes: str
    max_bytes: int
    member: str  # not sent: names the row

    def decode(self, reply: Any) -> SessionRow | None:
        if not reply:
            return None
        count, byte_count, first, last_ts, replied, messages, truncated = reply
        return SessionRow(self.member, "", int(count), int(byte_count), first, int(last_ts), replied or None,
                          messages=list(messages), truncated=bool(truncated), key=self.key)


# -- operations ---------------------------------------------------------------------------------


class IndexKey(Call["tuple[int, int]"], frozen=True):
    script: ClassVar[str] = "index_key"
    KEYS: ClassVar[tuple[str, ...]] = ("key", "feed", "ids", "meta", "sizes", "pending", "processing", "sessions",
                                       "pair_sessions", "session_ids")
    ARGV: ClassVar[tuple[str, ...]] = ("kind", "session_member", "session_field", "feed_window", "stride")

    key: str
    feed: str
    ids: str
    meta: str
    sizes: str
    pending: str
    processing: str
    sessions: str
    pair_sessions: str
    session_ids: str
    kind: str
    session_member: str
    session_field: str
    feed_window: int
    stride: int

    @classmethod
    def build(cls, p: Partition, key: str, kind: str, human_user: str, human_color: str, session_member: str,
              feed_window: int) -> IndexKey:
        pair_sessions, field = p.session_index(human_user, human_color, session_member)
        return cls(key, p.feed, p.ids, p.meta, p.sizes, p.pending, p.processing, p.sessions(human_user, human_color),
                   pair_sessions, p.session_ids, kind, session_member, field, feed_window, keys.PRIORITY_STRIDE)

    def decode(self, reply: Any) -> tuple[int, int]:
        return int(reply[0]), int(reply[1])


class PurgePartition(Call[int], frozen=True):
    script: ClassVar[str] = "purge_partition"
    KEYS: ClassVar[tuple[str, ...]] = ("sizes", "feed", "ids", "lapses", "meta", "pending", "processing", "claims",
                                       "contexts", "session_ids")
    ARGV: ClassVar[tuple[str, ...]] = ("sessions_prefix",)

    sizes: str
    feed: str
    ids: str
    lapses: str
    meta: str
    pending: str
    processing: str
    claims: str
    contexts: str
    session_ids: str
    sessions_prefix: str

    @classmethod
    def build(cls, p: Partition) -> PurgePartition:
        return cls(p.sizes, p.feed, p.ids, p.lapses, p.meta, p.pending, p.processing, p.claims, p.contexts,
                   p.session_ids, p.sessions_prefix)

    def decode(self, reply: Any) -> int:
        return int(reply)


class PurgeStray(Call[int], frozen=True):
    script: ClassVar[str] = "purge_stray"
    KEYS: ClassVar[tuple[str, ...]] = ("key", "sizes")
    ARGV: ClassVar[tuple[str, ...]] = ("godmode_prefix",)

    key: str
    sizes: str
    godmode_prefix: str  # '' for a message key; 'godmode:{hU}:{hC}:' for a human's sessions index

    def decode(self, reply: Any) -> int:
        return int(reply)


SCRIPTS: tuple[type[Call[Any]], ...] = (
    AppendMessage, ClaimMessage, CompleteMessage, ScoreMessage, ReadMessage, ReadPair, ReadSessions, ReadSession,
    IndexKey, PurgePartition, PurgeStray,
)
