"""How commands reach Redis: one server, or a Redis Cluster. Only store.py uses this module.

A batch of commands goes out in one write per node and every reply is read back in order, error
replies in their place. Scripts are sent by EVALSHA; a node that answers NOSCRIPT (restarted,
SCRIPT FLUSH, a freshly promoted replica) gets the source and the command again.

Cluster mode routes each command by its key's slot, through the slot map of redis-py's
RedisCluster; a keyless command (TIME, SCRIPT LOAD) goes to the node of the next keyed command,
or of the previous one at the end of a batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis.asyncio as aioredis
from hiredis import pack_command
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import (
    AskError,
    InvalidResponse,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = tuple[Any, ...]
log = logging.getLogger("godmode_store")

_KEYLESS = frozenset({b"TIME", b"PING", b"SCRIPT", b"CONFIG", b"SCAN", b"WAIT", b"INFO", b"CLUSTER", b"ASKING",
                      b"DBSIZE"})
READ_SIZE = 1 << 16
FLUSH_AT = 64  # batches waiting for the pass's write: past this many, write now and heed backpressure
MAX_REDIRECTS = 3  # MOVED/ASK answered again: a slot mid-migration must not loop
TOPOLOGY_REFRESH_S = 0.5  # at most one CLUSTER SLOTS per worker this often while a node is failing


class ClusterUnavailable(RedisConnectionError):
    """The cluster client has no usable slot map (no node answered, a slot is not covered)."""


class NotReplicated(RedisError):
    """A write was applied on its master, but fewer replicas than REDIS_WAIT_REPLICAS acknowledged it."""


class Link:
    """Connections to one Redis server, created and bounded by a redis-py pool.

    Idle connections are kept here rather than handed back to the pool after each round trip: its
    checkout (lock, liveness probe, two observability hooks) cost more CPU than the round trip."""

    def __init__(self, pool: Any, timeout_s: float) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self._idle: list[Any] = []
        self._waiting = 0  # callers waiting on the pool for a connection

    async def send(self, packed: bytes, count: int) -> list[Any]:
        if self._idle:
            conn = self._idle.pop()
        else:
            self._waiting += 1
            try:
                conn = await self.pool.get_connection()
            finally:
                self._waiting -= 1
        broken = True
        try:
            await conn.send_packed_command(packed, check_health=False)
            replies: list[Any] = []
            # One deadline for the whole round trip: redis-py's per-reply timeout context was a
            # third of a 13-reply poll's CPU.
            async with asyncio.timeout(self.timeout_s):
                for _ in range(count):
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:  # the reply was read: the connection stays usable
                        replies.append(exc)
            broken = False
            return replies
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no reply within {self.timeout_s} s") from exc
        finally:
            if broken:  # a half-read reply would poison the next user; the idle ones may be dead too
                dropped, self._idle = [conn, *self._idle], []  # swapped before any await: others keep going
                for each in dropped:
                    try:
                        await each.disconnect(nowait=True)
                    except Exception:  # a failing close must not keep the pool's slot
                        log.debug("closing a broken connection failed", exc_info=True)
                    finally:
                        await self.pool.release(each)
            elif self._waiting:  # a caller waits on the full pool: hand the connection over
                await self.pool.release(conn)
            else:
                self._idle.append(conn)

    async def close(self) -> None:
        while self._idle:
            await self.pool.release(self._idle.pop())
        await self.pool.disconnect()


class _Trip:
    """One batch's place in a Pipe: how many replies it waits for, where they go, and until when."""

    __slots__ = ("count", "deadline", "future", "replies")

    def __init__(self, count: int, future: asyncio.Future[list[Any]], deadline: float) -> None:
        self.count = count
        self.future = future
        self.deadline = deadline
        self.replies: list[Any] = []


class Pipe:
    """One connection shared by every concurrent round trip (auto-pipelining, as centrifuge's
    rueidis does): batches are written back to back, once per event-loop pass, and one reader hands
    the replies out in order. Under load many requests then share a write and a read on both sides,
    which was most of a round trip's CPU. Blocking commands (WAIT) must not go here: they hold up all.

    Replies come in order, so the oldest batch's deadline is the next to check: one timer per pipe,
    not one per round trip. A timeout or a broken connection fails every batch in flight (their
    replies would reach the wrong caller otherwise); the next batch opens a new connection."""

    def __init__(self, pool: Any, timeout_s: float) -> None:
        self.pool = pool  # makes and configures the connection (auth, db, TLS); no slot of it is held
        self.timeout_s = timeout_s
        self._conn: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._opening: asyncio.Future[Any] | None = None
        self._trips: deque[_Trip] = deque()
        self._out: list[bytes] = []  # batches not yet written, in the order of _trips
        self._watch: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, packed: bytes, count: int) -> list[Any]:
        conn = self._conn if self._conn is not None else await self._open()
        if conn is not self._conn:  # lost while this caller waited for it to open
            raise RedisConnectionError("connection lost while opening")
        loop = asyncio.get_running_loop()
        trip = _Trip(count, loop.create_future(), loop.time() + self.timeout_s)
        self._trips.append(trip)  # in write order: no await between the two
        self._out.append(packed)
        if len(self._out) == 1:  # every batch of this loop pass goes out in one write
            loop.call_soon(self._flush, conn)
        if self._watch is None:
            self._watch = loop.call_at(trip.deadline, self._check, conn)
        if len(self._out) > FLUSH_AT:
            self._flush(conn)
            try:
                await conn._writer.drain()
            except (OSError, AttributeError, RuntimeError) as exc:  # the connection was closed under us
                # Fails this trip too: awaiting it below raises the error (and nothing is left unread).
                self._broken(conn, RedisConnectionError(f"connection lost while writing: {exc!r}"))
        return await trip.future

    def _flush(self, conn: Any) -> None:
        if conn is not self._conn or not self._out:  # dropped (its round trips failed with it), or written
            return
        out, self._out = self._out, []
        conn._writer.writelines(out)  # directly: redis-py's send_packed_command may defer it to a task

    def _check(self, conn: Any) -> None:
        """The timer: fail everything when the oldest batch is past its deadline, else wait for it."""
        self._watch = None
        if conn is not self._conn or not self._trips:
            return
        loop = asyncio.get_running_loop()
        oldest = self._trips[0]
        if loop.time() >= oldest.deadline:
            self._broken(conn, RedisTimeoutError(f"no reply within {self.timeout_s} s"))
        else:
            self._watch = loop.call_at(oldest.deadline, self._check, conn)

    async def _open(self) -> Any:
        if self._opening is None:  # one connect for every caller that finds the pipe closed
            self._opening = asyncio.ensure_future(self._connect())
            # Forgotten when it ends, not when a caller resumes: if every caller gave up (cancelled),
            # a later one would get this connect's connection, dropped since, or its old error.
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, opening: asyncio.Future[Any]) -> None:
        if self._opening is opening:
            self._opening = None
        if not opening.cancelled():
            opening.exception()  # retrieved: with every caller gone, asyncio would log it as lost

    async def _connect(self) -> Any:
        conn = self.pool.make_connection()
        await conn.connect()
        self._conn = conn
        read = self._read_raw if _raw_stream(conn) else self._read_parsed
        self._reader = asyncio.get_running_loop().create_task(read(conn))
        return conn

    async def _read_raw(self, conn: Any) -> None:
        """Replies parsed straight off the socket's bytes: one hiredis pass for all a read holds
        (redis-py's read_response costs a coroutine and a timeout check per reply)."""
        parser = hiredis.Reader(protocolError=InvalidResponse, replyError=conn._parser.parse_error)
        stream: asyncio.StreamReader = conn._reader
        try:
            while True:
                data = await stream.read(READ_SIZE)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if isinstance(reply, RedisConnectionError):  # -LOADING, -NOAUTH, ...: redis-py raises
                        raise reply  # these (so does _read_parsed): the round trip fails, not a reply value
                    if not isinstance(reply, hiredis.PushNotification):  # RESP3 pushes answer no command
                        self._deliver(reply)
        except (RedisError, OSError) as exc:
            self._lost(conn, exc)

    async def _read_parsed(self, conn: Any) -> None:
        """Replies through the connection's own parser (a client that hands out parsed replies)."""
        try:
            while True:
                try:
                    reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
                except ResponseError as exc:  # an error reply, read whole: it goes in its place
                    reply = exc
                self._deliver(reply)
        except (RedisError, OSError) as exc:
            self._lost(conn, exc)

    def _deliver(self, reply: Any) -> None:
        if not self._trips:
            raise RedisConnectionError("a reply nobody asked for: the connection is out of step")
        trip = self._trips[0]
        trip.replies.append(reply)
        if len(trip.replies) == trip.count:
            self._trips.popleft()
            if not trip.future.done():  # its caller may have given up (cancelled)
                trip.future.set_result(trip.replies)

    def _lost(self, conn: Any, exc: Exception) -> None:
        # Anything else the reader raises: the timer drops the connection.
        self._broken(conn, exc if isinstance(exc, RedisError) else RedisConnectionError(f"connection lost: {exc!r}"))

    def _broken(self, conn: Any, error: Exception) -> None:
        """Fail every batch in flight on `conn` and drop it (a later batch opens a new one)."""
        if conn is not self._conn:
            return  # already dropped
        self._conn = None
        self._out = []
        trips, self._trips = self._trips, deque()
        for trip in trips:
            if not trip.future.done():
                trip.future.set_exception(error)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        closing = asyncio.get_running_loop().create_task(_disconnect(conn))
        self._closing.add(closing)  # held until done: the loop keeps only weak references
        closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._opening is not None:  # a connect under way: let it end, then drop what it opened
            await asyncio.wait([self._opening])
        if self._conn is not None:
            self._broken(self._conn, RedisConnectionError("closed"))
        await asyncio.gather(*self._closing)


def _raw_stream(conn: Any) -> bool:
    """True when the connection reads bytes off a socket (redis-py's; fakeredis hands out replies)."""
    return isinstance(getattr(conn, "_reader", None), asyncio.StreamReader) and not conn.encoder.decode_responses


async def _disconnect(conn: Any) -> None:
    try:
        await conn.disconnect(nowait=True)
    except Exception:
        log.debug("closing a connection failed", exc_info=True)


def _check_wait(reply: Any, replicas: int) -> None:
    if isinstance(reply, ResponseError):
        raise reply
    if int(reply) < replicas:
        raise NotReplicated(f"write acknowledged by {int(reply)} of {replicas} replicas")


def _packed(commands: Sequence[Command]) -> bytes:
    return b"".join(pack_command(command) for command in commands)


async def _send_with_scripts(link: Link | Pipe, commands: Sequence[Command], scripts: Mapping[str, bytes],
                             wait_replicas: int = 0, wait_ms: int = 0) -> list[Any]:
    """Send a batch on one connection; rerun scripts the node does not know. With wait_replicas,
    every batch (the reruns too) ends in WAIT, and too few acknowledgements raise."""
    wait: list[Command] = [("WAIT", wait_replicas, wait_ms)] if wait_replicas else []
    replies = await link.send(_packed([*commands, *wait]), len(commands) + len(wait))
    if wait:
        _check_wait(replies.pop(), wait_replicas)
    for _ in range(3):  # scripts can be flushed again between the load and the rerun
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if not missing:
            break
        shas = dict.fromkeys(str(commands[i][1]) for i in missing)
        again: list[Command] = [("SCRIPT", "LOAD", scripts[sha]) for sha in shas]
        for i in missing:
            if _asking(commands, i):  # ASKING only holds for the command right after it
                again.append(commands[i - 1])
            again.append(commands[i])
        answers = await link.send(_packed([*again, *wait]), len(again) + len(wait))
        if wait:
            _check_wait(answers.pop(), wait_replicas)
        for loaded in answers[: len(shas)]:
            if isinstance(loaded, ResponseError):
                raise loaded
        at = len(shas)
        for i in missing:
            at += _asking(commands, i)
            replies[i] = answers[at]
            at += 1
    return replies


def _asking(commands: Sequence[Command], i: int) -> bool:
    return i > 0 and commands[i - 1][0] == "ASKING"


class ServerWire:
    """One Redis server (standalone mode)."""

    def __init__(self, client: aioredis.Redis, timeout_s: float, scripts: Mapping[str, bytes]) -> None:
        self.client = client
        self.link = Link(client.connection_pool, timeout_s)  # WAIT blocks its connection: not on the pipe
        self.pipe = Pipe(client.connection_pool, timeout_s)
        self.scripts = scripts

    async def send(self, commands: Sequence[Command], *, node: Any = None, wait_replicas: int = 0,
                   wait_ms: int = 0) -> list[Any]:
        way = self.link if wait_replicas else self.pipe
        return await _send_with_scripts(way, commands, self.scripts, wait_replicas, wait_ms)

    def group(self, keys: Sequence[str]) -> list[list[int]]:
        """Indexes of `keys`, grouped by the node that holds them: one group here."""
        return [list(range(len(keys)))]

    async def start(self) -> None:
        return None

    async def masters(self) -> list[Any]:
        return [None]

    async def close(self) -> None:
        await self.pipe.close()
        await self.link.close()
        await self.client.aclose()


class ClusterWire:
    """A Redis Cluster: redis-py's RedisCluster keeps the slot map; each node gets a Pipe and a Link."""

    def __init__(self, cluster: RedisCluster, pool_for: Any, timeout_s: float, scripts: Mapping[str, bytes]) -> None:
        self.cluster = cluster
        self.pool_for = pool_for  # (host, port) -> a redis-py connection pool for that node
        self.timeout_s = timeout_s
        self.scripts = scripts
        self.links: dict[str, Link] = {}
        self.pipes: dict[str, Pipe] = {}
        self._started = False
        self._refreshed_at = -math.inf
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the slot map (CLUSTER SLOTS); later commands route by it."""
        if not self._started:
            try:
                await self.cluster.initialize()
            except RedisClusterException as exc:  # e.g. no node answers: not a RedisError
                raise ClusterUnavailable(str(exc)) from exc
            self._started = True

    def _link(self, node: ClusterNode) -> Link:
        link = self.links.get(node.name)
        if link is None:
            link = self.links[node.name] = Link(self.pool_for(node.host, int(node.port)), self.timeout_s)
        return link

    def _way(self, node: ClusterNode, wait_replicas: int) -> Link | Pipe:
        """A node's pipe; its own connection for a batch ending in WAIT, which blocks it."""
        if wait_replicas:
            return self._link(node)
        pipe = self.pipes.get(node.name)
        if pipe is None:
            pipe = self.pipes[node.name] = Pipe(self._link(node).pool, self.timeout_s)
        return pipe

    def node_of(self, key: str | bytes) -> ClusterNode:
        return self.cluster.nodes_manager.get_node_from_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def _route(self, commands: Sequence[Command], indexes: Sequence[int] | None = None,
               pinned: Mapping[int, ClusterNode] | None = None) -> dict[str, tuple[ClusterNode, list[int]]]:
        """The commands at `indexes` (default: all), grouped by node: a command's node is `pinned`'s
        for it, else its key's; a keyless one goes with the next keyed one, or the previous at the end."""
        order = range(len(commands)) if indexes is None else indexes
        pinned = pinned or {}
        nodes: list[ClusterNode | None] = []
        for i in order:
            key = self._key(commands[i])
            nodes.append(pinned.get(i) or (None if key is None else self.node_of(key)))
        following: ClusterNode | None = None
        for at in range(len(nodes) - 1, -1, -1):
            if nodes[at] is None:
                nodes[at] = following
            else:
                following = nodes[at]
        previous: ClusterNode | None = None
        for at, found in enumerate(nodes):
            if found is None:
                nodes[at] = previous
            previous = nodes[at]
        batches: dict[str, tuple[ClusterNode, list[int]]] = {}
        for i, found in zip(order, nodes, strict=True):
            target = found or self.cluster.get_primaries()[0]
            batches.setdefault(target.name, (target, []))[1].append(i)
        return batches

    async def send(self, commands: Sequence[Command], *, node: ClusterNode | None = None, wait_replicas: int = 0,
                   wait_ms: int = 0) -> list[Any]:
        try:
            return await self._send(commands, node, wait_replicas, wait_ms)
        except RedisClusterException as exc:  # no slot map, a slot not covered: not a RedisError
            self.refresh_soon()
            raise ClusterUnavailable(str(exc)) from exc

    async def _send(self, commands: Sequence[Command], node: ClusterNode | None, wait_replicas: int,
                    wait_ms: int) -> list[Any]:
        await self.start()
        if node is not None:
            batches = {node.name: (node, list(range(len(commands))))}
        else:
            batches = self._route(commands)
        replies: list[Any] = [None] * len(commands)

        async def one(target: ClusterNode, batch: list[Command], indexes: list[int]) -> None:
            try:
                answers = await _send_with_scripts(self._way(target, wait_replicas), batch, self.scripts, wait_replicas, wait_ms)
            except (RedisConnectionError, RedisTimeoutError):
                self.refresh_soon()
                raise
            for i, answer in zip(indexes, answers, strict=True):
                if i >= 0:  # -1: an ASKING's OK
                    replies[i] = answer

        jobs = [(target, [commands[i] for i in indexes], indexes) for target, indexes in batches.values()]
        for attempt in range(MAX_REDIRECTS + 1):
            if len(jobs) == 1:
                await one(*jobs[0])
            else:
                await _gather(*(one(*job) for job in jobs))
            redirected = [i for i, reply in enumerate(replies) if isinstance(reply, AskError)]
            if node is not None or not redirected or attempt == MAX_REDIRECTS:
                return replies  # what is still redirected stays an error reply: a 503
            jobs = await self._redirect(commands, replies, redirected, batches)
        return replies

    async def _redirect(self, commands: Sequence[Command], replies: list[Any], redirected: list[int],
                        batches: dict[str, tuple[ClusterNode, list[int]]]) -> list[tuple[ClusterNode, list[Command],
                                                                                         list[int]]]:
        """What to send again: MOVED (the slot has a new master) after reading the slot map, to the
        node it now names; ASK (the slot is migrating) as ASKING + the command to the node named."""
        if any(isinstance(replies[i], MovedError) for i in redirected):
            await self.refresh(force=True)
        # A keyless command (TIME) sent with a redirected one goes again with it: a poll's bound must
        # come from the node its rows come from.
        resend = set(redirected)
        for _, indexes in batches.values():
            if resend & set(indexes):
                resend |= {i for i in indexes if self._key(commands[i]) is None}
        asked = {i: self._node_at(reply.host, int(reply.port)) for i in redirected
                 if isinstance(reply := replies[i], AskError) and not isinstance(reply, MovedError)}
        jobs = []
        for target, indexes in self._route(commands, sorted(resend), asked).values():
            batch: list[Command] = []
            slots: list[int] = []
            for i in indexes:
                if i in asked:
                    batch.append(("ASKING",))
                    slots.append(-1)
                batch.append(commands[i])
                slots.append(i)
            jobs.append((target, batch, slots))
        return jobs

    def _node_at(self, host: str, port: int) -> ClusterNode:
        found = self.cluster.get_node(host=host, port=port)
        return found if found is not None else ClusterNode(host, port)

    @staticmethod
    def _key(command: Command) -> Any:
        name = command[0].upper().encode() if isinstance(command[0], str) else command[0].upper()
        if name in (b"EVALSHA", b"EVAL"):
            return command[3] if int(command[2]) else None
        return None if name in _KEYLESS else command[1]

    def group(self, keys: Sequence[str]) -> list[list[int]]:
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self.node_of(key).name, []).append(i)
        return list(groups.values())

    async def masters(self) -> list[ClusterNode]:
        """The masters, in the order of the first slot each serves (stable across a failover)."""
        await self.start()
        first: dict[str, int] = {}
        for slot, holders in self.cluster.nodes_manager.slots_cache.items():
            if holders:
                first[holders[0].name] = min(slot, first.get(holders[0].name, REDIS_CLUSTER_HASH_SLOTS))
        return sorted(self.cluster.get_primaries(), key=lambda node: first.get(node.name, REDIS_CLUSTER_HASH_SLOTS))

    def refresh_soon(self) -> None:
        """Re-read the slot map in the background (a node failed: its replica may be promoted)."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self.refresh())

    async def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._refreshed_at < TOPOLOGY_REFRESH_S:
            return
        self._refreshed_at = time.monotonic()
        try:
            await self.cluster.nodes_manager.initialize()
        except (RedisError, RedisClusterException) as exc:
            log.warning("cluster topology refresh failed: %r", exc)

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        for pipe in self.pipes.values():
            await pipe.close()
        for link in self.links.values():
            await link.close()
        await self.cluster.aclose()


async def _gather(*jobs: Any) -> None:
    """Run every job to the end (no reply left half-read), then raise the first failure."""
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def node_url(url: str, host: str, port: int) -> str:
    """`url` pointed at another node: same scheme, credentials and options."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, "/0", parts.query, parts.fragment))
