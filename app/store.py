"""The only module that talks to Redis. Scripts live in lua/, one atomic operation per file;
their KEYS, ARGV and replies are typed in scripts.py. Every command goes through `_wire`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from . import keys, scripts
from .config import ConfigError, Settings
from .errors import AppError, Conflict, StoreUnavailable
from .feed import Page, PageBuilder
from .keys import Partition
from .models import AppendPlan
from .scripts import AppendResult, Call, ClaimResult, CompleteResult, SessionRow, SessionsPage, StoredMessage, text
from .sessions import PAGE_MAX_BYTES, SESSION_MAX_BYTES
from .wire import ClusterWire, NotReplicated, ServerWire, node_url

T = TypeVar("T")
log = logging.getLogger("godmode_store")

GLOBAL_SCORE_TTL_S = 1.0  # polls show a globalScore at most this old; summing it costs a read per partition
HEALTH_MAX_AGE_S = 1.0  # /readyz answers from a PING at most this old: probes every few seconds never wait
SHARE_WEIGHT = 0.5  # the newest page's spread over partitions counts half
SHARE_MIN_ROWS = 8  # a page with fewer rows says nothing about the spread
ROW_BYTES_WEIGHT = 0.5  # the newest page's mean row size counts half: a few polls follow a change of sizes
EVICTING_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


_LUA_DEFINES = re.compile(r"^local (?:function (\w+)|(\w+(?:, *\w+)*) *=)", re.MULTILINE)
_LUA_NAME = re.compile(r"[A-Za-z_]\w*")


def _lib_for(lib: str, script: str) -> str:
    """The top-level definitions of _lib.lua that `script` uses, directly or through each other, in
    _lib's order (each with the comment lines above it). Redis runs the whole prepended source at
    every EVALSHA, and each `local function` in it costs a closure per call (~0.1 µs each, with its
    garbage collection): append_message left 11 of them behind."""
    starts = [m.start() for m in _LUA_DEFINES.finditer(lib)]
    blocks: list[tuple[set[str], int]] = []  # (names defined, where its text starts)
    for i, start in enumerate(starts):
        head = lib.rfind("\n\n", 0, start) + 1 if i else 0  # its comments, after the blank line above
        if i and head <= starts[i - 1]:
            head = start  # no blank line since the previous definition
        m = _LUA_DEFINES.match(lib, start)
        assert m is not None
        names = {m[1]} if m[1] else {n.strip() for n in m[2].split(",")}
        blocks.append((names, head))
    texts = [lib[head:(blocks[i + 1][1] if i + 1 < len(blocks) else len(lib))]
             for i, (_names, head) in enumerate(blocks)]
    wanted = set(_LUA_NAME.findall(script))
    kept = [False] * len(blocks)
    changed = True
    while changed:
        changed = False
        for i, (names, _head) in enumerate(blocks):
            if not kept[i] and names & wanted:
                kept[i], changed = True, True
                wanted |= set(_LUA_NAME.findall(texts[i]))
    return "".join(t for t, keep in zip(texts, kept, strict=True) if keep)


def _source(name: str) -> bytes:
    lua = resources.files(__package__).joinpath("lua")
    script = lua.joinpath(f"{name}.lua").read_text("utf-8")
    return (_lib_for(lua.joinpath("_lib.lua").read_text("utf-8"), script) + script).encode()


@dataclass(frozen=True, slots=True)
class _Script:
    source: bytes
    sha: str


_SCRIPTS = {
    call.script: _Script(src, hashlib.sha1(src).hexdigest())
    for call in scripts.SCRIPTS
    for src in (_source(call.script),)
}
SCRIPT_SOURCES = {script.sha: script.source for script in _SCRIPTS.values()}


@dataclass(frozen=True, slots=True)
class QueueHead:
    """What one partition's queue looks like, read without a script."""

    partition: Partition
    best_rank: float | None  # score of the head of pending
    oldest_claim: float | None  # claimedAt of the oldest processing entry
    pending: int
    processing: int


@dataclass(frozen=True, slots=True)
class FeedPage:
    page: Page
    global_score: int


class Store:
    # Told (script, seconds, ok) once per script per round trip of _eval_many; app.metrics sets it.
    observer: Callable[[str, float, bool], None] | None = None

    def __init__(self, client: aioredis.Redis | None, settings: Settings, wire: ServerWire | ClusterWire | None = None
                 ) -> None:
        self.redis = client  # one Redis only: tests and bench read it directly
        self.settings = settings
        if wire is None:
            assert client is not None
            wire = ServerWire(client, settings.redis_timeout_s, SCRIPT_SOURCES)
        self.wire = wire
        self.partitions = keys.partitions(settings.partitions, settings.cluster)
        self._score_cache: tuple[float, int] = (-1.0, 0)
        self._row_bytes: float | None = None  # recent feed rows' mean size: bounds a poll's first reads
        self._lane_shares: tuple[float, ...] = ()  # each partition's part of recent pages: sizes first reads
        self.eviction_warning: str | None = None
        self.eviction_checked = False
        self.cluster_state: str | None = None  # CLUSTER INFO's cluster_state, in cluster mode
        self._health: tuple[float, bool] = (-HEALTH_MAX_AGE_S - 1, False)
        self._health_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        options = _pool_options(settings)
        if not settings.cluster:
            # A burst beyond REDIS_MAX_CONNECTIONS waits (up to REDIS_TIMEOUT_S) for a connection
            # instead of failing at once: the plain pool answered every request past 256 with a 503.
            pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, **options)
            return cls(aioredis.Redis(connection_pool=pool), settings)
        # RedisCluster keeps the slot map (CLUSTER SLOTS at start and after failures); each node's
        # commands go through a blocking pool of its own, built like the standalone one.
        topology = RedisCluster.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_s,
                                         socket_connect_timeout=settings.redis_timeout_s, max_connections=4)
        wire = ClusterWire(
            topology,
            lambda host, port: aioredis.BlockingConnectionPool.from_url(
                node_url(settings.redis_url, host, port), **options),
            settings.redis_timeout_s, SCRIPT_SOURCES)
        return cls(None, settings, wire)

    async def close(self) -> None:
        await self.wire.close()

    def partition_of(self, human_user: str, human_color: str) -> Partition:
        return keys.partition_of(human_user, human_color, self.settings.partitions, self.settings.cluster)

    # -- the wire -------------------------------------------------------------------------------

    async def _wire(self, commands: Sequence[tuple[Any, ...]], *, errors_as_values: bool = False,
                    durable: bool = False, node: Any = None) -> list[Any]:
        """Send commands in one write per node and read every reply (wire.py). Reconnects are
        retried once; an error reply raises (or, with errors_as_values, comes back in its place).
        `durable` writes wait for REDIS_WAIT_REPLICAS replicas; `node` targets one cluster node."""
        wait = self.settings.redis_wait_replicas if durable else 0
        wait_ms = self.settings.wait_ms if wait else 0
        try:
            try:
                replies = await self.wire.send(commands, node=node, wait_replicas=wait, wait_ms=wait_ms)
            except RedisConnectionError:  # one resend, at once: connecting already retries with backoff
                replies = await self.wire.send(commands, node=node, wait_replicas=wait, wait_ms=wait_ms)
        except NotReplicated as exc:
            raise StoreUnavailable(f"storage unavailable: {exc}") from exc
        except RedisError as exc:
            self._health = (time.monotonic(), False)  # /readyz says so at once, not after its cache ages
            raise StoreUnavailable(f"storage unavailable: {type(exc).__name__}") from exc
        if not errors_as_values:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise _store_error(reply)
        return replies

    async def _eval_many(self, calls: Sequence[Call[T]], *, durable: bool = False) -> list[T]:
        """Run scripts in one round trip (the wire loads any a node does not know and runs it again)."""
        if not calls:
            return []
        commands = [("EVALSHA", _SCRIPTS[call.script].sha, *call.keys_and_args()) for call in calls]
        observer = Store.observer  # read on the class: an instance lookup would bind it as a method
        start, ok = time.perf_counter(), False
        try:
            replies = await self._wire(commands, durable=durable)
            out = [call.decode(reply) for call, reply in zip(calls, replies, strict=True)]
            ok = True  # a reply the contract cannot read counts as a failure too
            return out
        finally:
            if observer is not None:
                for name in dict.fromkeys(call.script for call in calls):
                    observer(name, time.perf_counter() - start, ok)

    async def _eval(self, call: Call[T], *, durable: bool = False) -> T:
        [result] = await self._eval_many([call], durable=durable)
        return result

    async def _masters(self) -> list[Any]:
        """The nodes to ask for what every master holds (SCAN, CONFIG, INFO): [None] on one Redis."""
        try:
            return await self.wire.masters()
        except RedisError as exc:
            raise StoreUnavailable(f"storage unavailable: {type(exc).__name__}") from exc

    async def ping(self) -> None:
        """Every master answers (one Redis: the one server); on a cluster, also reads cluster_state."""
        if not self.settings.cluster:
            await self._wire([("PING",)])
            return
        masters = await self._masters()
        replies = await asyncio.gather(*(self._wire([("CLUSTER", "INFO")], node=m) for m in masters),
                                       return_exceptions=True)
        answered = [text(r[0]) for r in replies if isinstance(r, list)]
        if not answered:
            self.cluster_state = None
            raise StoreUnavailable("storage unavailable: no cluster master answers")
        states = {line.partition(":")[2].strip() for info in answered for line in info.splitlines()
                  if line.startswith("cluster_state:")}
        self.cluster_state = "ok" if states == {"ok"} and len(answered) == len(masters) else "fail"

    async def healthy(self, max_age_s: float = HEALTH_MAX_AGE_S) -> bool:
        """Whether Redis answered a PING in the last max_age_s; concurrent callers share one PING
        (2,000 concurrent /readyz made 2,000 PINGs and failed hundreds while Redis was fine)."""
        checked_at, ok = self._health
        if time.monotonic() - checked_at <= max_age_s:
            return ok
        async with self._health_lock:
            checked_at, ok = self._health
            if time.monotonic() - checked_at <= max_age_s:  # another caller just checked
                return ok
            try:
                await self.ping()
                ok = True
            except AppError:
                ok = False
            self._health = (time.monotonic(), ok)
            return ok

    # -- start-up -------------------------------------------------------------------------------

    async def check_partitions(self) -> None:
        """Record PARTITIONS on first start; refuse a different one later (data would be unfindable)."""
        _, recorded = await self._wire([("SET", keys.PARTITIONS_KEY, self.settings.partitions, "NX"),
                                        ("GET", keys.PARTITIONS_KEY)])
        if recorded is not None and int(recorded) != self.settings.partitions:
            raise ConfigError(
                f"invalid configuration: PARTITIONS={self.settings.partitions}, but this Redis holds a store of "
                f"PARTITIONS={int(recorded)}; start with PARTITIONS={int(recorded)}, or stop every instance and run "
                f"`python -m app repartition --to {self.settings.partitions} --yes`"
            )

    async def check_replicas(self) -> list[str]:
        """Masters with fewer connected replicas than REDIS_WAIT_REPLICAS: every write to them would
        answer 503 until replicas connect. Logged at start-up."""
        wanted = self.settings.redis_wait_replicas
        if not wanted:
            return []
        short = []
        for node in await self._masters():
            try:
                [reply] = await self._wire([("INFO", "replication")], node=node)
            except (StoreUnavailable, Conflict):  # unreachable, or INFO disabled on a managed Redis
                continue
            info = text(reply) if isinstance(reply, bytes) else str(reply)
            connected = int(info.partition("connected_slaves:")[2].split()[0] or 0) if "connected_slaves:" in info else 0
            if connected < wanted:
                where = "Redis" if node is None else f"master {node.name}"
                short.append(f"{where} has {connected} connected replicas, REDIS_WAIT_REPLICAS={wanted}: "
                             "its writes answer 503 until enough replicas connect")
        for warning in short:
            log.warning(warning)
        return short

    async def check_eviction(self) -> str | None:
        """A warning when Redis may evict this service's keys (they carry no TTL; derived data heals,
        but evicted messages are lost)."""
        policies = set()
        try:
            for node in await self._masters():
                [reply] = await self._wire([("CONFIG", "GET", "maxmemory-policy")], node=node)
                policies.add(text(dict(pairs(reply)).get(b"maxmemory-policy", b"")))
        except (StoreUnavailable, Conflict):  # CONFIG is disabled on some managed Redis
            return None
        self.eviction_checked = True
        evicting = sorted(policies & set(EVICTING_POLICIES))
        if evicting:
            self.eviction_warning = (f"Redis maxmemory-policy is {evicting[0]}: it may evict stored messages; "
                                     "use noeviction (deploy/redis.conf)")
            log.warning(self.eviction_warning)
        return self.eviction_warning

    # -- writes ---------------------------------------------------------------------------------

    def append_call(self, plan: AppendPlan) -> scripts.AppendMessage:
        """The append script's call for a validated message: pure, so bench preloads can send it."""
        p, s = plan.partition, self.settings
        pair_sessions, session_field = p.session_index(plan.human_user, plan.human_color, plan.session_member)
        return scripts.AppendMessage(
            key=plan.key, feed=p.feed, ids=p.ids, lapses=p.lapses, meta=p.meta, sizes=p.sizes, pending=p.pending,
            processing=p.processing, contexts=p.contexts, sessions=p.sessions(plan.human_user, plan.human_color),
            pair_sessions=pair_sessions, session_ids=p.session_ids,
            id=plan.id, middle=plan.middle, status=plan.status, eq_score=plan.eq_score, domain=plan.domain,
            default_domain=s.default_domain, reply_to=plan.reply_to, kind=plan.kind, conv_window=s.conv_window,
            max_bytes=s.max_key_bytes, feed_window=s.feed_window, ttl_ms=s.idempotency_ttl_s * 1000,
            rank_base="" if plan.queue_rank_base is None else plan.queue_rank_base, context=plan.context,
            session_member=plan.session_member, session_field=session_field,
        )

    async def append_message(self, plan: AppendPlan) -> AppendResult:
        return await self._eval(self.append_call(plan), durable=True)

    async def append_messages(self, plans: Sequence[AppendPlan]) -> list[AppendResult]:
        """Several appends in one round trip per node (operators' and the benchmark's bulk loads)."""
        return await self._eval_many([self.append_call(plan) for plan in plans], durable=True)

    async def save_session_meta(self, key: str, data: bytes, *, only_new: bool = False) -> bool:
        """Store the bot's session metadata; with only_new, keep what is there. True if written."""
        [done] = await self._wire([("SET", key, data, "NX") if only_new else ("SET", key, data)], durable=True)
        return done is not None and done is not False

    async def exists(self, key: str) -> bool:
        [found] = await self._wire([("EXISTS", key)])
        return bool(found)

    async def import_messages(self, partition: Partition, key: str, scored_members: Sequence[tuple[str, str | bytes]],
                              kind: str, human_user: str, human_color: str, session_member: str) -> None:
        """Write stored-format messages with their own scores into a key nobody indexed yet, then
        index the key as rebuild-indexes does (legacy imports)."""
        args = [part for score, member in scored_members for part in (score, member)]
        await self._wire([("ZADD", key, *args)])
        await self._eval(scripts.IndexKey.build(partition, key, kind, human_user, human_color, session_member,
                                                self.settings.feed_window))

    async def known_ids(self, partition: Partition, message_ids: Sequence[str]) -> list[bool]:
        replies = await self._wire([("HEXISTS", partition.ids, i) for i in message_ids]) if message_ids else []
        return [bool(r) for r in replies]

    async def is_indexed(self, partition: Partition, key: str) -> bool:
        [indexed] = await self._wire([("HEXISTS", partition.sizes, key)])
        return bool(indexed)

    # -- messages by id -------------------------------------------------------------------------

    async def partitions_holding(self, message_id: str) -> list[Partition]:
        """The partitions whose id index knows this id: one cheap read per partition, no scan.
        More than one only when two humans' clients picked the same id."""
        replies = await self._wire([("HEXISTS", p.ids, message_id) for p in self.partitions])
        return [p for p, known in zip(self.partitions, replies, strict=True) if known]

    async def read_message(self, partition: Partition, message_id: str) -> StoredMessage | None:
        return await self._eval(scripts.ReadMessage.build(partition, message_id))

    async def score_message(self, partition: Partition, message_id: str, score: int) -> bytes | None:
        return await self._eval(scripts.ScoreMessage.build(partition, message_id, score), durable=True)

    # -- queue ----------------------------------------------------------------------------------

    async def queue_heads(self) -> list[QueueHead]:
        commands: list[tuple[Any, ...]] = []
        for p in self.partitions:
            commands += [("ZRANGE", p.pending, 0, 0, "WITHSCORES"), ("ZRANGE", p.processing, 0, 0, "WITHSCORES"),
                         ("ZCARD", p.pending), ("ZCARD", p.processing)]
        replies = await self._wire(commands)
        heads = []
        for i, p in enumerate(self.partitions):
            best, oldest, pending, processing = replies[4 * i : 4 * i + 4]
            best_pairs, oldest_pairs = scored(best), scored(oldest)
            heads.append(QueueHead(p, float(best_pairs[0][1]) if best_pairs else None,
                                   float(oldest_pairs[0][1]) if oldest_pairs else None, int(pending), int(processing)))
        return heads

    async def claim(self, partition: Partition, mode: str, *, target: str = "", worker: bytes = b'""',
                    token: str = "") -> ClaimResult:
        return await self._eval(scripts.ClaimMessage.build(
            partition, mode, target=target, worker=worker, token=token,
            timeout_ms=self.settings.claim_timeout_s * 1000), durable=True)

    async def requeue_expired(self, partitions: Iterable[Partition]) -> int:
        """Put expired claims back in line; returns how many."""
        timeout_ms = self.settings.claim_timeout_s * 1000
        results = await self._eval_many([scripts.ClaimMessage.build(p, "requeue", timeout_ms=timeout_ms)
                                         for p in partitions], durable=True)
        return sum(r.requeued for r in results)

    async def complete(self, partition: Partition, message_id: str, token: str) -> CompleteResult:
        return await self._eval(scripts.CompleteMessage.build(partition, message_id, token), durable=True)

    async def pending_ids(self, limit: int) -> list[tuple[Partition, str]]:
        """The first `limit` pending ids across partitions, in queue order."""
        replies = await self._wire([("ZRANGE", p.pending, 0, limit - 1, "WITHSCORES") for p in self.partitions])
        ranked = [
            (float(score), p.index, text(member))
            for p, reply in zip(self.partitions, replies, strict=True)
            for member, score in scored(reply)
        ]
        ranked.sort()
        return [(self.partitions[index], message_id) for _, index, message_id in ranked[:limit]]

    async def read_messages(self, wanted: Sequence[tuple[Partition, str]]) -> list[StoredMessage | None]:
        return await self._eval_many([scripts.ReadMessage.build(p, message_id) for p, message_id in wanted])

    # -- reads ----------------------------------------------------------------------------------

    async def read_feed(self, positions: tuple[int, ...], limit: int, type_mark: bytes | None) -> FeedPage:
        """One page of the global poll: native reads of each partition's feed, one round trip
        (rarely more, see feed.py), plus the summed globalScore when the cached one is stale."""
        shares = self._lane_shares if len(self._lane_shares) == len(positions) else None
        builder = PageBuilder(positions, limit, row_bytes=self._row_bytes, shares=shares)
        stale = time.monotonic() - self._score_cache[0] > GLOBAL_SCORE_TTL_S
        requests = builder.requests()
        # TIME goes first to each node holding feeds (one on a single Redis): the page holds
        # nothing the slowest node's clock could still stamp.
        groups = self.wire.group([self.partitions[i].feed for i, _, _ in requests])
        commands: list[tuple[Any, ...]] = []
        for group in groups:
            commands.append(("TIME",))
            commands += [self._feed_read(*requests[j]) for j in group]
        if stale:
            commands += self._score_reads()
        replies = await self._wire(commands)
        at, times = 0, []
        taken: list[tuple[int, Any]] = []
        for group in groups:
            seconds, micros = replies[at]
            times.append(int(seconds) * 1000 + int(micros) // 1000)
            taken += zip(group, replies[at + 1 : at + 1 + len(group)], strict=True)
            at += 1 + len(group)
        builder.set_bound(min(times))
        for j, reply in taken:
            builder.take(requests[j][0], scored(reply))
        if stale:
            self._cache_score(replies[at:])
        while not builder.finish_round():
            requests = builder.requests()
            replies = await self._wire([self._feed_read(i, start, count) for i, start, count in requests])
            for (i, _, _), reply in zip(requests, replies, strict=True):
                builder.take(i, scored(reply))
        if builder.read_rows:  # what the next polls expect a row to weigh (see feed.py)
            mean = builder.read_bytes / builder.read_rows
            seen = self._row_bytes
            self._row_bytes = mean if seen is None else ROW_BYTES_WEIGHT * mean + (1 - ROW_BYTES_WEIGHT) * seen
        page = builder.page(type_mark)
        self._learn_shares(builder.delivered)
        return FeedPage(page, self._score_cache[1])

    def _learn_shares(self, delivered: tuple[int, ...]) -> None:
        """Each partition's part of recent pages, for the next polls' first reads (see feed.py)."""
        total = sum(delivered)
        if total < SHARE_MIN_ROWS:  # too few rows to say how the traffic spreads
            return
        now = [count / total for count in delivered]
        seen = self._lane_shares
        self._lane_shares = tuple(now if len(seen) != len(now) else
                                  [SHARE_WEIGHT * a + (1 - SHARE_WEIGHT) * b for a, b in zip(now, seen, strict=True)])

    def _feed_read(self, index: int, start: str, count: int) -> tuple[Any, ...]:
        return ("ZRANGE", self.partitions[index].feed, start, "+inf", "BYSCORE", "LIMIT", 0, count, "WITHSCORES")

    async def read_pair(self, human_user: str, human_color: str, ai_user: str, ai_color: str, after: int,
                        limit: int) -> list[bytes]:
        """A pair's newest messages; for a GodMode identity (any case) merged with its sessions."""
        p = self.partition_of(human_user, human_color)
        return await self._eval(scripts.ReadPair(
            keys.conv_key(human_user, human_color, ai_user, ai_color, p.key_suffix),
            p.pair_sessions(human_user, human_color, ai_user, ai_color),
            keys.human_godmode_prefix(human_user, human_color), p.key_suffix, after + 1, limit,
            "1" if ai_user.lower() == "godmode" else "0"))

    async def list_sessions(self, human_user: str, human_color: str, ai_user: str | None, ai_color: str | None,
                            limit: int, after: tuple[str, str] | None = None,
                            max_bytes: int = PAGE_MAX_BYTES) -> SessionsPage:
        """One page of a human's (or one pair's) sessions, newest first, after the (member, score)
        a previous page ended with: one script over the page, then their metadata where needed."""
        p = self.partition_of(human_user, human_color)
        index = (p.sessions(human_user, human_color) if ai_user is None or ai_color is None
                 else p.pair_sessions(human_user, human_color, ai_user, ai_color))
        member, score = after or ("", "")
        page = await self._eval(scripts.ReadSessions(index, p.ids, p.sizes,
                                                     keys.human_godmode_prefix(human_user, human_color),
                                                     p.key_suffix, member, score, limit, max_bytes))
        rows = await self._with_meta(page.rows)
        used, keep = 0, len(rows)
        for i, row in enumerate(rows):  # metadata counts too: cut the page where it overflows
            used += len(row.first) + len(row.replied or b"") + len(row.meta or b"")
            if i > 0 and used > max_bytes:
                keep = i
                break
        if keep < len(rows):
            return SessionsPage(rows[:keep], page.total, (rows[keep - 1].member, rows[keep - 1].score))
        return SessionsPage(rows, page.total, page.next)

    async def read_session(self, human_user: str, human_color: str, ai_user: str | None, ai_color: str | None,
                           session_id: str, max_bytes: int = SESSION_MAX_BYTES) -> SessionRow | None:
        """One session without walking the others: its key from the pair, or (pair unknown) from
        the partition's session_ids hash. None when there is no such session."""
        p = self.partition_of(human_user, human_color)
        if ai_user is None or ai_color is None:
            [found] = await self._wire([("HGET", p.session_ids,
                                         keys.session_id_field(human_user, human_color, session_id))])
            if found is None:
                return None
            member = text(found)
        else:
            member = keys.session_member(ai_user, ai_color, session_id)
        key = keys.human_godmode_prefix(human_user, human_color) + member + p.key_suffix
        row = await self._eval(scripts.ReadSession(key, p.ids, p.sizes, max_bytes, member))
        return None if row is None else (await self._with_meta([row]))[0]

    async def _with_meta(self, rows: list[SessionRow]) -> list[SessionRow]:
        """Rows with the bot's metadata where their question needs it, read with plain GETs in one
        round trip: the metadata keys live in any hash slot, so a script may not read them."""
        wanted = [i for i, row in enumerate(rows) if row.needs_meta]
        if not wanted:
            return rows
        replies = await self._wire([("GET", keys.session_meta_key(rows[i].member.rsplit(":", 1)[1])) for i in wanted])
        out = list(rows)
        for i, meta in zip(wanted, replies, strict=True):
            out[i] = msgspec.structs.replace(rows[i], meta=meta)
        return out

    # -- operations -----------------------------------------------------------------------------

    async def global_score(self) -> int:
        return self._cache_score(await self._wire(self._score_reads()))

    def _score_reads(self) -> list[tuple[Any, ...]]:
        return [("HGET", p.meta, "globalScore") for p in self.partitions]

    def _cache_score(self, replies: Sequence[Any]) -> int:
        """globalScore is the sum of the partitions' counters (replies to _score_reads)."""
        total = sum(int(r or 0) for r in replies)
        self._score_cache = (time.monotonic(), total)
        return total

    async def stats(self) -> dict[str, int]:
        commands: list[tuple[Any, ...]] = []
        for p in self.partitions:
            commands += [("HGETALL", p.meta), ("ZCARD", p.pending), ("ZCARD", p.processing)]
        replies = await self._wire(commands)
        out: dict[str, int] = {}
        for i in range(0, len(replies), 3):
            counters, pending, processing = replies[i : i + 3]
            for field, value in pairs(counters):
                name = text(field)
                if name not in ("clock", "seq"):
                    out[name] = out.get(name, 0) + int(value)
            out["pending"] = out.get("pending", 0) + int(pending)
            out["processing"] = out.get("processing", 0) + int(processing)
        return out

    async def queue_depth(self, claimed_before_ms: int) -> tuple[int, int, int]:
        """(pending, processing, processing claimed before the cutoff) over every partition."""
        commands: list[tuple[Any, ...]] = []
        for p in self.partitions:
            commands += [("ZCARD", p.pending), ("ZCARD", p.processing),
                         ("ZCOUNT", p.processing, "-inf", claimed_before_ms)]
        replies = await self._wire(commands)
        return (sum(int(r) for r in replies[0::3]), sum(int(r) for r in replies[1::3]),
                sum(int(r) for r in replies[2::3]))

    async def scan_page(self, pattern: str, cursor: str | None, count: int) -> tuple[str, list[str]]:
        """One SCAN step: (next cursor, "0" when done; keys found). On a cluster the cursor is
        "<master>.<its cursor>", masters in the order of the first slot each serves (a failover keeps
        it): the scan walks each master in turn."""
        masters = await self._masters()
        at, _, node_cursor = (cursor or "0").rpartition(".")
        index = int(at or 0)
        if index >= len(masters):
            return "0", []
        [(following, found)] = await self._wire([("SCAN", node_cursor, "MATCH", pattern, "COUNT", count)],
                                                node=masters[index])
        following = int(following)
        if following == 0:
            index, following = index + 1, 0
            if index == len(masters):
                return "0", [text(k) for k in found]
        return (f"{index}.{following}" if index else str(following)), [text(k) for k in found]

    async def scan(self, pattern: str, count: int = 1000) -> AsyncIterator[str]:
        """Every key matching `pattern`, on every master."""
        for node in await self._masters():
            cursor: Any = 0
            while True:
                [(cursor, found)] = await self._wire([("SCAN", cursor, "MATCH", pattern, "COUNT", count)], node=node)
                for key in found:
                    yield text(key)
                if int(cursor) == 0:
                    break

    async def purge(self) -> int:
        """Delete everything this service stored: each partition wholesale in one atomic step (so
        counts stay exact under traffic), then session metadata and stray message keys by SCAN."""
        deleted = sum(await self._eval_many([scripts.PurgePartition.build(p) for p in self.partitions]))
        async for key in self.scan(keys.SESSION_META_PREFIX + "*"):
            deleted += await self._unlink([key])
        # What purge_partition could not find (its index was lost) goes too, unless a write after the
        # purge indexed it: keys written since are counted and stay (purge_stray checks atomically).
        async for key in self.scan("sessions:*"):  # a human's index, or one pair's
            _, _, human_user, human_color = key.split(":")[:4]
            p = self.partition_of(human_user, human_color)
            deleted += await self._eval(scripts.PurgeStray(key, p.sizes, keys.human_godmode_prefix(human_user,
                                                                                                    human_color)))
        for pattern in keys.MESSAGE_PATTERNS:
            async for key in self.scan(pattern):
                try:
                    home: Partition | None = self.partition_of(*keys.message_key_human(key))
                except ValueError:  # not a name this service writes: nothing can index it
                    home = None
                if home is None or not key.endswith(home.key_suffix):  # on a cluster, only a tagged key shares its slot
                    deleted += await self._unlink([key])
                    continue
                deleted += await self._eval(scripts.PurgeStray(key, home.sizes, ""))
        return deleted

    async def rebuild_indexes(self, target: tuple[Partition, ...] | None = None) -> dict[str, int]:
        """Recreate every partition from the conv:/godmode: keys alone (SCAN MATCH), indexing each key
        with the append path's Lua helpers. With `target` (another partition count's partitions),
        build those instead: that is repartition. Run it with the service stopped.

        Kept: queue contexts of messages still queued, each partition's clock (never goes back).
        Lost: globalScore's share of trimmed messages (it restarts as the sum over stored messages).
        """
        old, new = self.partitions, target or self.partitions
        count = len(new)
        if self.settings.cluster and count != len(old):
            # Message keys carry their partition's hash tag on a cluster: a new count means new key
            # names in other slots, which no atomic RENAME can reach.
            raise ConfigError("invalid configuration: repartition is not supported with REDIS_MODE=cluster; "
                              "keep PARTITIONS as recorded (12 spreads over 1, 2, 3, 4, 6 or 12 masters)")
        clocks: list[int] = []
        contexts: dict[str, bytes] = {}
        claims: dict[str, bytes] = {}
        for p in old:
            clock, ctx, held = await self._wire([("HGET", p.meta, "clock"), ("HGETALL", p.contexts),
                                                 ("HGETALL", p.claims)])
            clocks.append(int(clock or 0))
            contexts.update((text(k), v) for k, v in pairs(ctx))
            claims.update((text(k), v) for k, v in pairs(held))
        sessions = [key async for key in self.scan("sessions:*")]
        # Contexts go last: a rebuild cut short can run again without losing them.
        stale = [k for p in {*old, *new} for k in p.own_keys() if k not in (p.contexts, p.claims)] + sessions
        await self._unlink(stale)

        totals = {"convKeys": 0, "godmodeKeys": 0, "messages": 0, "bytes": 0}
        for kind in (keys.CONV, keys.GODMODE):
            batch: list[scripts.IndexKey] = []
            async for key in self.scan(kind + ":*"):
                [key_type] = await self._wire([("TYPE", key)])
                if text(key_type) != "zset":
                    continue
                human_user, human_color = keys.message_key_human(key)
                p = keys.partition_of(human_user, human_color, count, self.settings.cluster)
                if not key.endswith(p.key_suffix):  # a cluster key outside its partition's slot: not ours
                    continue
                member = ""
                if kind == keys.GODMODE:
                    member = keys.session_member(*keys.untagged(key).split(":")[3:6])
                batch.append(scripts.IndexKey.build(p, key, kind, human_user, human_color, member,
                                                    self.settings.feed_window))
                if len(batch) >= 100:
                    await self._index(batch, totals, kind)
                    batch = []
            await self._index(batch, totals, kind)

        await self._unlink(list({k for p in (*old, *new) for k in (p.contexts, p.claims)}))
        commands: list[tuple[Any, ...]] = []
        for p in new:
            indexed_clock, waiting, busy = await self._wire([("HGET", p.meta, "clock"), ("ZRANGE", p.pending, 0, -1),
                                                             ("ZRANGE", p.processing, 0, -1)])
            commands.append(("HSET", p.meta, "clock", max([int(indexed_clock or 0), *clocks])))
            for message_id in (text(i) for ids in (waiting, busy) for i in ids):
                if message_id in contexts:
                    commands.append(("HSET", p.contexts, message_id, contexts[message_id]))
            for message_id in (text(i) for i in busy):
                if message_id in claims:
                    commands.append(("HSET", p.claims, message_id, claims[message_id]))
        for i in range(0, len(commands), 500):
            await self._wire(commands[i : i + 500])
        if target is not None:
            await self._wire([("SET", keys.PARTITIONS_KEY, count)])
        stats = await Store(self.redis, _with_partitions(self.settings, count), self.wire).stats()
        return {**totals, "globalScore": stats.get("globalScore", 0), "partitions": count}

    async def _unlink(self, names: Sequence[str]) -> int:
        """UNLINK one key per command (a cluster routes each to its slot), 500 per round trip."""
        deleted = 0
        for i in range(0, len(names), 500):
            deleted += sum(await self._wire([("UNLINK", name) for name in names[i : i + 500]]))
        return deleted

    async def _index(self, batch: list[scripts.IndexKey], totals: dict[str, int], kind: str) -> None:
        for messages, size in await self._eval_many(batch):
            if messages:
                totals[kind + "Keys"] += 1
                totals["messages"] += messages
                totals["bytes"] += size


def _pool_options(settings: Settings) -> dict[str, Any]:
    return {
        "max_connections": settings.redis_max_connections,
        "timeout": settings.redis_timeout_s,
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "health_check_interval": 30,
        "protocol": 3,  # maps and doubles arrive typed: scores need no parsing on the poll path
        # Only reconnects are retried: every write carries an id, so a replay is idempotent.
        # Retrying timeouts too made a stalled Redis hold a request for 4 x REDIS_TIMEOUT_S.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3, supported_errors=(RedisConnectionError,)),
        "retry_on_error": [RedisConnectionError],
    }


def pairs(reply: Any) -> list[Any]:
    """An HGETALL / CONFIG GET reply as (field, value) pairs: a RESP3 map or a RESP2 flat list."""
    if isinstance(reply, dict):
        return list(reply.items())
    return list(zip(reply[::2], reply[1::2], strict=True))


def scored(reply: Any) -> list[Any]:
    """A WITHSCORES reply as [member, float score] pairs: RESP3's nested pairs as they are (no copy
    on the poll path), RESP2's flat list zipped."""
    if not reply or isinstance(reply[0], (list, tuple)):
        return reply  # type: ignore[no-any-return]
    return [(member, float(score)) for member, score in zip(reply[::2], reply[1::2], strict=True)]


def _with_partitions(settings: Settings, count: int) -> Settings:
    return replace(settings, partitions=count)


def _store_error(exc: ResponseError) -> Exception:
    # Someone (an operator, another app) put a different type under one of our keys. Scripts check
    # their keys before their first write, so nothing was written.
    if "WRONGTYPE" in str(exc):
        log.warning("WRONGTYPE from Redis: %s", exc)
        return Conflict("a key this request needs holds another data type; see the server log")
    return StoreUnavailable(f"storage error: {exc}")


async def recorded_partitions(settings: Settings) -> int | None:
    """The PARTITIONS the store in this Redis was created with, if any."""
    store = Store.from_settings(settings)
    try:
        [recorded] = await store._wire([("GET", keys.PARTITIONS_KEY)])
        return int(recorded) if recorded is not None else None
    finally:
        await store.close()


@asynccontextmanager
async def open_store(settings: Settings, attempts: int = 5, delay_s: float = 0.5) -> AsyncIterator[Store]:
    """A Store whose Redis answered a PING (retried a few times, so a wrong address fails at boot)
    and holds a store of the same PARTITIONS."""
    store = Store.from_settings(settings)
    try:
        for attempt in range(1, attempts + 1):
            try:
                await store.ping()  # on a cluster, reads the slot map first
                break
            except StoreUnavailable:
                if attempt == attempts:
                    raise
                await asyncio.sleep(delay_s * attempt)
        await store.check_partitions()
        await store.check_eviction()
        await store.check_replicas()
        yield store
    finally:
        await store.close()
