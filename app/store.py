"""The only module that talks to Redis. Scripts live in lua/, one atomic operation per file."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from . import keys
from .config import Settings
from .errors import Conflict, StoreUnavailable
from .models import AppendPlan, SessionRow, decode

SCRIPTS = (
    "append_message",
    "read_stream",
    "read_pair",
    "read_message",
    "peek_queue",
    "replace_message",
    "read_sessions",
)


def _lua(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class AppendResult:
    status: str  # ok | duplicate | too_large | backlog
    timestamp: int = 0
    key: str = ""
    domain: str = ""
    size: int = 0
    limit: int = 0
    current: int = 0


@dataclass(frozen=True, slots=True)
class StreamPage:
    global_score: int
    next_after: int
    has_more: bool
    messages: list[bytes]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    now: int
    key: str
    ts: str
    raw: bytes | None  # None: the id is known but its message was trimmed
    context: bytes | None


@dataclass(frozen=True, slots=True)
class QueuePeek:
    now: int
    pending: int
    processing: int
    kind: str  # '' | 'pending' | 'expired'
    id: str = ""
    key: str = ""
    ts: str = ""
    raw: bytes | None = None
    context: bytes | None = None

    def stored(self) -> StoredMessage:
        """The peeked message as read_message would have returned it."""
        return StoredMessage(self.now, self.key, self.ts, self.raw, self.context)


def _text(value: bytes | str | memoryview) -> str:
    return value if isinstance(value, str) else bytes(value).decode()


_TYPE_MARK = {"h": b'"message-type":"human"', "a": b'"message-type":"AI"'}


def _timestamp(message: bytes) -> int:
    """A stored message's timestamp, read from its JSON prefix `{"id":"…","timestamp":N,`."""
    start = message.index(b'"timestamp":') + 12
    return int(message[start : message.index(b",", start)])


def _recent_page(rows: list[bytes], limit: int, type_flag: str, global_score: int, after: int) -> StreamPage:
    has_more = len(rows) > limit
    page = rows[:limit]
    next_after = _timestamp(page[-1]) if page else after
    if type_flag:  # quotes inside JSON strings are escaped, so the mark only matches the field
        page = [m for m in page if _TYPE_MARK[type_flag] in m]
    return StreamPage(global_score, next_after, has_more, page)


def _location(loc: bytes) -> tuple[int, str]:
    ts, _domain, key = loc.decode().split(" ", 2)
    return int(ts), key


class Store:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._scripts = {name: client.register_script(_lua(name)) for name in SCRIPTS}
        self._append_static = (
            str(settings.conv_window),
            str(settings.max_key_bytes),
            str(settings.stream_window),
            str(settings.idempotency_ttl_s * 1000),
            str(settings.recent_messages),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        client = aioredis.Redis.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            health_check_interval=30,
            # Only reconnects are retried: every write carries an id, so a replay is idempotent.
            # supported_errors: Retry also retries TimeoutError by default, which made a stalled Redis
            # hold a request for 4 x REDIS_TIMEOUT_S (~21 s) instead of answering 503 after one.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3, supported_errors=(RedisConnectionError,)),
            retry_on_error=[RedisConnectionError],
        )
        return cls(client, settings)

    async def close(self) -> None:
        await self.redis.aclose()

    async def _run(self, call: Awaitable[Any]) -> Any:  # redis-py's reply types are loose unions
        try:
            return await call
        except ResponseError as exc:
            # Someone (an operator, another app) put a different type under one of our keys.
            # Scripts touch the message key before their first write, so nothing was written.
            if "WRONGTYPE" in str(exc):
                raise Conflict("a key this request needs holds another data type; see the server log") from exc
            raise StoreUnavailable(f"storage error: {exc}") from exc
        except RedisError as exc:
            raise StoreUnavailable(f"storage unavailable: {type(exc).__name__}") from exc

    async def _roundtrip(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send commands in one write and read every reply: one round trip, without the cost of
        a redis-py Pipeline (a third of a poll's CPU when profiled). Error replies come back as
        exceptions in the list; a broken connection is retried once, as reconnects are."""
        pool = self.redis.connection_pool
        packed = b"".join(pack_command(command) for command in commands)
        for attempt in (1, 2):
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.send_packed_command(packed, check_health=False)
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:  # the reply was read: the connection stays usable
                        replies.append(exc)
                return replies
            except RedisConnectionError:
                await conn.disconnect()
                if attempt == 2:
                    raise
            except BaseException:
                await conn.disconnect()  # a half-read reply would poison the next user
                raise
            finally:
                await pool.release(conn)
        raise AssertionError("unreachable")

    async def _eval(self, name: str, script_keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        """EVALSHA a script from lua/, loading it when Redis answers NOSCRIPT (after a restart)."""
        script = self._scripts[name]
        command = ("EVALSHA", script.sha, len(script_keys), *script_keys, *args)
        [reply] = await self._roundtrip(command)
        if isinstance(reply, NoScriptError):
            await self.redis.script_load(script.script)
            [reply] = await self._roundtrip(command)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def ping(self) -> bool:
        await self._run(self.redis.ping())
        return True

    # -- writes ---------------------------------------------------------------------------------

    def append_call(self, plan: AppendPlan) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """KEYS and ARGV of append_message.lua for `plan`. Pure: no I/O."""
        window, max_bytes, stream_window, ttl_ms, recent = self._append_static
        script_keys = (
            plan.key,
            keys.size_key(plan.key),
            keys.inflight_key(plan.key),
            keys.MSGLOC,
            keys.MSGLOC_EXPIRY,
            keys.STREAM,
            keys.STATS,
            keys.PENDING,
            keys.context_key(plan.id),
            plan.human_sessions_key or keys.STATS,  # unused slot when not a session
            keys.RECENT,
        )
        args = (
            plan.id,
            plan.head,
            plan.tail,
            plan.tail_after_completed,
            plan.domain,
            self.settings.default_domain,
            plan.reply_to,
            plan.kind,
            window,
            max_bytes,
            stream_window,
            ttl_ms,
            "a" if plan.is_ai else "h",
            plan.eq_score,
            "" if plan.queue_rank_base is None else plan.queue_rank_base,
            plan.context,
            plan.session_member,
            recent,
        )
        return script_keys, args

    @property
    def append_script(self) -> tuple[str, str]:
        """(sha, source) of append_message.lua, for callers that pipeline it (bench preloads)."""
        script = self._scripts["append_message"]
        return script.sha, _text(script.script)

    async def append_message(self, plan: AppendPlan) -> AppendResult:
        reply = await self._run(self._eval("append_message", *self.append_call(plan)))
        status = _text(reply[0])
        if status == "ok":
            return AppendResult("ok", int(reply[1]), plan.key, _text(reply[2]))
        if status == "duplicate":
            ts, key = _location(reply[1])
            return AppendResult("duplicate", ts, key)
        return AppendResult(status, size=int(reply[1]), limit=int(reply[2]), current=int(reply[3]), key=plan.key)

    async def replace_message(
        self, msg: StoredMessage, message_id: str, new_raw: bytes, move: str = "", score: int = 0, delta: int = 0
    ) -> bool:
        assert msg.raw is not None or move == "drop"
        done = await self._run(
            self._eval("replace_message", (
                    msg.key or keys.STATS,
                    keys.size_key(msg.key),
                    keys.inflight_key(msg.key),
                    keys.PENDING,
                    keys.PROCESSING,
                    keys.context_key(message_id),
                    keys.STATS,
                    keys.RECENT,
                ),
                (message_id, msg.ts, msg.raw or b"", new_raw, move, score, delta),
            )
        )
        return bool(done)

    async def drop_queue_entry(self, message_id: str) -> None:
        """Forget a queue entry whose message is gone (no message key is touched)."""
        await self.replace_message(StoredMessage(0, "", "0", None, None), message_id, b"", "drop")

    async def save_session_meta(self, key: str, data: bytes) -> None:
        await self._run(self.redis.set(key, data))

    # -- reads ----------------------------------------------------------------------------------

    async def read_stream(self, after: int, limit: int, type_flag: str) -> StreamPage:
        """One page of the global poll: from the recent copies when they cover `after` (one
        native read), else gathered through the stream index by read_stream.lua."""
        if after >= 0:
            rows, oldest, score = await self._run(self._roundtrip(
                ("ZRANGE", keys.RECENT, f"({after}", "+inf", "BYSCORE", "LIMIT", 0, limit + 1),
                ("ZRANGE", keys.RECENT, 0, 0),
                ("HGET", keys.STATS, "globalScore"),
            ))
            if isinstance(rows, Exception) or isinstance(oldest, Exception):
                raise StoreUnavailable("storage error reading store:recent")
            # Every stored message at or after the oldest copy has a copy, so the copies hold all
            # of the page when no timestamp fits between `after` and the oldest copy. The oldest
            # copy only moves forward, so reading it after the page (not before) keeps this true
            # when writes land between the two reads.
            if oldest and after >= _timestamp(oldest[0]) - 1:
                return _recent_page(rows, limit, type_flag, int(score or 0), after)
        return await self._read_stream_index(after, limit, type_flag)

    async def _read_stream_index(self, after: int, limit: int, type_flag: str) -> StreamPage:
        start = "-" if after < 0 else f"({after}-0"
        reply = await self._run(self._eval("read_stream", (keys.STREAM, keys.STATS), (start, limit, type_flag)))
        return StreamPage(int(reply[0]), int(reply[1]) or after, bool(reply[2]), reply[3:])

    async def read_conversation(self, key: str, after: int, limit: int) -> list[bytes]:
        rows: list[bytes] = await self._run(
            self.redis.zrange(key, "+inf", f"({after}", desc=True, byscore=True, offset=0, num=limit)
        )
        rows.reverse()
        return rows

    async def read_pair(self, human_user: str, human_color: str, ai_user: str, ai_color: str, after: int, limit: int) -> list[bytes]:
        result: list[bytes] = await self._run(
            self._eval("read_pair", (keys.conv_key(human_user, human_color, ai_user, ai_color), keys.human_sessions_key(human_user, human_color)),
                (*keys.session_pair_range(ai_user, ai_color), keys.human_godmode_prefix(human_user, human_color), f"({after}", limit),
            )
        )
        return result

    async def read_message(self, message_id: str) -> StoredMessage | None:
        reply = await self._run(self._eval("read_message", (keys.MSGLOC, keys.context_key(message_id)), (message_id,)))
        if len(reply) == 1:
            return None
        return StoredMessage(int(reply[0]), _text(reply[1]), _text(reply[2]), reply[3] or None, reply[4] or None)

    async def peek_queue(self) -> QueuePeek:
        reply = await self._run(
            self._eval("peek_queue", (keys.PENDING, keys.PROCESSING, keys.MSGLOC),
                (self.settings.claim_timeout_s * 1000, keys.CONTEXT_PREFIX),
            )
        )
        now, pending, processing, kind = int(reply[0]), int(reply[1]), int(reply[2]), _text(reply[3])
        if not kind:
            return QueuePeek(now, pending, processing, "")
        if len(reply) < 6:
            return QueuePeek(now, pending, processing, kind, _text(reply[4]))
        return QueuePeek(
            now, pending, processing, kind, _text(reply[4]), _text(reply[5]), _text(reply[6]), reply[7] or None, reply[8] or None
        )

    async def pending_ids(self, limit: int) -> list[str]:
        ids = await self._run(self.redis.zrange(keys.PENDING, 0, limit - 1))
        return [_text(i) for i in ids]

    async def queue_counts(self) -> tuple[int, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.PENDING)
            pipe.zcard(keys.PROCESSING)
            pending, processing = await self._run(pipe.execute())
        return int(pending), int(processing)

    async def read_sessions(
        self,
        human_user: str,
        human_color: str,
        ai_user: str | None,
        ai_color: str | None,
        session_id: str = "",
        with_messages: bool = False,
    ) -> list[SessionRow]:
        if ai_user is not None and ai_color is not None:
            lex = keys.session_pair_range(ai_user, ai_color)
        else:
            lex = ("-", "+")
        reply = await self._run(
            self._eval("read_sessions", (keys.human_sessions_key(human_user, human_color), keys.MSGLOC),
                (
                    *lex,
                    keys.human_godmode_prefix(human_user, human_color),
                    keys.SIZE_PREFIX,
                    keys.SIZE_SUFFIX,
                    keys.SESSION_META_PREFIX,
                    session_id,
                    "1" if with_messages else "0",
                ),
            )
        )
        return [
            SessionRow(_text(reply[i]), int(reply[i + 1]), int(reply[i + 2]), reply[i + 3], reply[i + 4],
                       reply[i + 5] or None, reply[i + 6] or None, reply[i + 7] or None)
            for i in range(0, len(reply), 8)
        ]

    async def get_session_meta(self, session_id: str) -> bytes | None:
        meta: bytes | None = await self._run(self.redis.get(keys.session_meta_key(session_id)))
        return meta

    # -- operations -----------------------------------------------------------------------------

    async def global_score(self) -> int:
        return int(await self._run(self.redis.hget(keys.STATS, "globalScore")) or 0)

    async def stats(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.STATS)
            pipe.zcard(keys.PENDING)
            pipe.zcard(keys.PROCESSING)
            counters, pending, processing = await self._run(pipe.execute())
        out = {_text(k): int(v) for k, v in counters.items()}
        out["pending"], out["processing"] = int(pending), int(processing)
        return out

    async def scan(self, pattern: str, count: int = 1000) -> AsyncIterator[bytes]:
        try:
            async for key in self.redis.scan_iter(match=pattern, count=count):
                yield key
        except RedisError as exc:
            raise StoreUnavailable(f"storage unavailable: {type(exc).__name__}") from exc

    async def rebuild_indexes(self) -> dict[str, int]:
        """Recreate every index from the conv:/godmode: keys alone, found with SCAN MATCH.

        For an operator after a partial loss or a restore; run it with the service stopped.
        Lost: queue contexts of messages no longer queued, and globalScore's share of trimmed
        messages (it restarts as the sum over stored messages).
        """
        clock = int(await self._run(self.redis.hget(keys.MSGLOC, keys.CLOCK_FIELD)) or 0)  # never goes back
        singletons = (keys.STREAM, keys.RECENT, keys.MSGLOC, keys.MSGLOC_EXPIRY, keys.STATS, keys.PENDING, keys.PROCESSING)
        await self._run(self.redis.unlink(*singletons))
        for pattern in (keys.SIZE_PREFIX + "*", keys.INFLIGHT_PREFIX + "*", keys.SESSIONS_PREFIX + "*"):
            async for stale in self.scan(pattern):
                await self._run(self.redis.unlink(stale))

        counters: dict[str, int] = {"convKeys": 0, "godmodeKeys": 0, "messages": 0, "bytes": 0, "globalScore": 0}
        entries: list[tuple[int, str, str]] = []  # (ts, message key, type flag) for the stream
        recent: list[tuple[int, bytes]] = []  # min-heap of the newest messages for store:recent
        queued: set[str] = set()
        for kind, pattern in ((keys.CONV, "conv:*"), (keys.GODMODE, "godmode:*")):
            async for raw_key in self.scan(pattern):
                key = _text(raw_key)
                if await self._run(self.redis.type(key)) != b"zset":
                    continue
                rows: list[tuple[bytes, float]] = await self._run(self.redis.zrange(key, 0, -1, withscores=True))
                counters[kind + "Keys"] += 1
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(keys.size_key(key), mapping={"total": sum(len(m) for m, _ in rows), "count": len(rows)})
                    if kind == keys.GODMODE:
                        _, human_user, human_color, ai_user, ai_color, session_id = key.split(":")
                        pipe.zadd(keys.human_sessions_key(human_user, human_color),
                                  {keys.session_member(ai_user, ai_color, session_id): 0})
                    for raw, score in rows:
                        ts, msg = int(score), decode(raw)
                        params = msg.get("botParams") or {}
                        pipe.hset(keys.MSGLOC, msg["id"], f"{ts} {msg.get('domain') or self.settings.default_domain} {key}")
                        is_ai = msg.get("message-type") == "AI"
                        entries.append((ts, key, "a" if is_ai else "h"))
                        heapq.heappush(recent, (ts, raw))
                        if len(recent) > self.settings.recent_messages:
                            heapq.heappop(recent)
                        counters["messages"] += 1
                        counters["bytes"] += len(raw)
                        counters["globalScore"] += int(msg.get("eqScore") or 0)
                        status = params.get("status")
                        if not is_ai and status in ("pending", "processing"):
                            queued.add(msg["id"])
                            pipe.zadd(keys.inflight_key(key), {msg["id"]: ts})
                            pipe.hincrby(keys.size_key(key), "inflight", len(raw))
                            if status == "pending":
                                rank = keys.queue_rank_base(int(params.get("priority", 5))) + ts
                                pipe.zadd(keys.PENDING, {msg["id"]: rank})
                            else:
                                pipe.zadd(keys.PROCESSING, {msg["id"]: int(params.get("claimedAt") or ts)})
                    await self._run(pipe.execute())

        entries.sort()
        async with self.redis.pipeline(transaction=False) as pipe:
            for ts, message_key, flag in entries[-self.settings.stream_window :]:
                pipe.xadd(keys.STREAM, {"k": message_key, "t": flag}, id=f"{ts}-0")
            pipe.hset(keys.MSGLOC, keys.CLOCK_FIELD, max([clock] + [ts for ts, _, _ in entries[-1:]]))
            pipe.hset(keys.STATS, mapping=counters)  # type: ignore[arg-type]
            if recent:
                pipe.zadd(keys.RECENT, {raw: ts for ts, raw in recent})
            await self._run(pipe.execute())
        async for ctx_key in self.scan(keys.CONTEXT_PREFIX + "*"):
            if _text(ctx_key)[len(keys.CONTEXT_PREFIX) :] not in queued:
                await self._run(self.redis.unlink(ctx_key))
        return counters

    async def purge(self) -> int:
        """Delete every key this service writes (SCAN by prefix, never FLUSHDB)."""
        deleted = 0
        for pattern in keys.ALL_PATTERNS:
            batch: list[bytes] = []
            async for key in self.scan(pattern):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self._run(self.redis.unlink(*batch))
                    batch = []
            if batch:
                deleted += await self._run(self.redis.unlink(*batch))
        return deleted


@asynccontextmanager
async def open_store(settings: Settings, attempts: int = 5, delay_s: float = 0.5) -> AsyncIterator[Store]:
    """A Store whose Redis answered a PING, retried a few times so a wrong address fails at boot."""
    store = Store.from_settings(settings)
    try:
        for attempt in range(1, attempts + 1):
            try:
                await store.ping()
                break
            except StoreUnavailable:
                if attempt == attempts:
                    raise
                await asyncio.sleep(delay_s * attempt)
        yield store
    finally:
        await store.close()

