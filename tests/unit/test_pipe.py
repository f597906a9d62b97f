"""app/wire.py's Pipe: concurrent round trips share one connection, and each gets its own replies,
whatever fails around it. On a real redis-server; BLPOP stands in for a reply that is slow to come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import BusyLoadingError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.wire import Pipe
from tests.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def pipes(client: aioredis.Redis) -> AsyncIterator[Callable[..., Pipe]]:
    """Pipes over the client's pool, closed when the test ends."""
    opened: list[Pipe] = []

    def open_pipe(timeout_s: float = 2.0) -> Pipe:
        opened.append(Pipe(client.connection_pool, timeout_s))
        return opened[-1]

    yield open_pipe
    for pipe in opened:
        await pipe.close()


def packed(*commands: tuple[object, ...]) -> bytes:
    return b"".join(pack_command(command) for command in commands)


async def test_concurrent_round_trips_each_get_their_own_replies_error_replies_in_place(
        client: aioredis.Redis, pipes: Callable[..., Pipe]) -> None:
    pipe = pipes()
    opened = int((await client.info("stats"))["total_connections_received"])

    async def trip(i: int) -> list[object]:
        big = b"x" * (i * 997 % 70_000 + 1)  # some replies span many reads
        return await pipe.send(packed(("SET", f"k{i}", big), ("STRLEN", f"k{i}"), ("INCR", f"k{i}"),
                                      ("ECHO", str(i))), 4)

    results = await asyncio.gather(*(trip(i) for i in range(300)))
    for i, (ok, length, incr, echo) in enumerate(results):
        assert ok is True or ok == b"OK"
        assert length == i * 997 % 70_000 + 1
        assert isinstance(incr, ResponseError)  # INCR of a non-number: an error reply, in its place
        assert echo == str(i).encode()
    # One connection carried them all.
    assert int((await client.info("stats"))["total_connections_received"]) - opened == 1


async def test_error_replies_keep_their_kind(pipes: Callable[..., Pipe]) -> None:
    """NOSCRIPT must stay a NoScriptError: the wire reloads scripts on it."""
    pipe = pipes()
    missing, pushed, wrong = await pipe.send(
        packed(("EVALSHA", "0" * 40, 0), ("LPUSH", "k", "v"), ("ZADD", "k", 1, "m")), 3)
    assert isinstance(missing, NoScriptError)
    assert pushed == 1
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)


async def test_a_caller_that_gives_up_takes_no_one_elses_replies(pipes: Callable[..., Pipe]) -> None:
    pipe = pipes()
    slow = asyncio.ensure_future(pipe.send(packed(("BLPOP", "empty", "0.2"), ("ECHO", "slow")), 2))
    await asyncio.sleep(0.05)
    after = asyncio.ensure_future(pipe.send(packed(("ECHO", "after"),), 1))
    slow.cancel()
    assert await after == [b"after"]
    assert await pipe.send(packed(("ECHO", "next"),), 1) == [b"next"]


async def test_a_timeout_fails_the_round_trips_in_flight_and_the_next_one_reconnects(
        pipes: Callable[..., Pipe]) -> None:
    pipe = pipes(0.3)
    stuck = asyncio.ensure_future(pipe.send(packed(("BLPOP", "empty", "0.6"),), 1))
    await asyncio.sleep(0.05)
    behind = asyncio.ensure_future(pipe.send(packed(("ECHO", "behind"),), 1))
    with pytest.raises(RedisTimeoutError):
        await stuck
    with pytest.raises((RedisTimeoutError, RedisConnectionError)):
        await behind  # its reply would have come after the stuck one's
    await asyncio.sleep(0.4)
    assert await pipe.send(packed(("ECHO", "again"),), 1) == [b"again"]


async def test_a_killed_connection_fails_its_round_trips_and_the_next_one_reconnects(
        client: aioredis.Redis, pipes: Callable[..., Pipe]) -> None:
    pipe = pipes()
    await pipe.send(packed(("CLIENT", "SETNAME", "piped"),), 1)
    waiting = asyncio.ensure_future(pipe.send(packed(("BLPOP", "empty", "1"), ("ECHO", "lost")), 2))
    await asyncio.sleep(0.05)
    await client.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    with pytest.raises(RedisConnectionError):
        await waiting
    assert await pipe.send(packed(("ECHO", "back"),), 1) == [b"back"]


async def test_resp3_pushes_answer_no_round_trip(redis_server: RedisServer) -> None:
    """A push (here a client-tracking invalidation) must not be taken for the next command's reply."""
    resp3 = aioredis.Redis.from_url(redis_server.url, protocol=3)
    other = aioredis.Redis.from_url(redis_server.url)
    pipe = Pipe(resp3.connection_pool, 2.0)
    try:
        assert await pipe.send(packed(("CLIENT", "TRACKING", "ON"), ("GET", "tracked")), 2) == [b"OK", None]
        await other.set("tracked", "changed")  # the server pushes an invalidation to the pipe's connection
        await asyncio.sleep(0.05)
        echo, info = await pipe.send(packed(("ECHO", "mine"), ("CLIENT", "TRACKINGINFO")), 2)
        assert echo == b"mine"
        assert b"on" in info[b"flags"]  # the same connection: not dropped as out of step and reopened
    finally:
        await pipe.close()
        await resp3.aclose()
        await other.aclose()


async def test_a_connect_whose_callers_all_gave_up_does_not_answer_a_later_one(
        client: aioredis.Redis, pipes: Callable[..., Pipe]) -> None:
    """The connect goes on when its only caller is cancelled; once it is over, a later caller must
    not be handed its (by then dropped) connection or its old error: it opens its own."""
    pipe = pipes()
    gave_up = asyncio.ensure_future(pipe.send(packed(("CLIENT", "SETNAME", "piped"),), 1))
    await asyncio.sleep(0)  # inside the connect
    gave_up.cancel()
    for _ in range(100):  # the connect finishes on its own
        if pipe._conn is not None:
            break
        await asyncio.sleep(0.01)
    assert pipe._conn is not None
    await pipe.send(packed(("CLIENT", "SETNAME", "piped"),), 1)
    await client.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    for _ in range(100):  # the reader sees the connection go
        if pipe._conn is None:
            break
        await asyncio.sleep(0.01)
    assert pipe._conn is None
    assert await pipe.send(packed(("ECHO", "fresh"),), 1) == [b"fresh"]


async def test_close_while_connecting_leaves_no_connection_open(client: aioredis.Redis) -> None:
    pipe = Pipe(client.connection_pool, 2.0)
    sending = asyncio.ensure_future(pipe.send(packed(("CLIENT", "SETNAME", "piped"),), 1))
    await asyncio.sleep(0)  # inside the connect
    await pipe.close()
    with pytest.raises(RedisConnectionError):
        await sending
    await asyncio.sleep(0.05)
    assert pipe._conn is None and pipe._reader is None
    names = [c["name"] for c in await client.client_list()]
    assert len(names) == 1, names  # only this client's own connection


@pytest.fixture(scope="module")
def loading_server() -> Iterator[RedisServer]:
    """A redis-server whose DEBUG RELOAD lasts long enough to be caught loading."""
    server = RedisServer("--enable-debug-command", "local", "--loading-process-events-interval-bytes", "1024")
    try:
        yield server
    finally:
        server.close()


async def test_an_error_reply_redis_py_raises_as_a_lost_connection_fails_the_round_trip(
        loading_server: RedisServer) -> None:
    """-LOADING (Redis restarted and reading its data back) parses to BusyLoadingError, a
    ConnectionError: it must fail the round trip (the store answers 503, and retries), not come back
    as a reply value (PING answered it would make /readyz say ready, a script's decode would fail)."""
    client = aioredis.Redis.from_url(loading_server.url, protocol=3)
    pipe = Pipe(client.connection_pool, 2.0)
    await client.execute_command("DEBUG", "POPULATE", 200_000)
    await pipe.send(packed(("PING",),), 1)
    reload = asyncio.ensure_future(asyncio.to_thread(
        redis.Redis(port=loading_server.port, socket_timeout=30).execute_command, "DEBUG", "RELOAD"))
    try:
        raised: list[Exception] = []
        deadline = asyncio.get_running_loop().time() + 20
        while not reload.done() and asyncio.get_running_loop().time() < deadline:
            try:
                replies = await pipe.send(packed(("PING",), ("GET", "key:1")), 2)
            except RedisConnectionError as exc:
                raised.append(exc)
            else:
                assert not any(isinstance(r, RedisConnectionError) for r in replies), replies
            await asyncio.sleep(0.005)
        await reload
        assert any(isinstance(e, BusyLoadingError) for e in raised), raised  # the test met the loading
        assert await pipe.send(packed(("GET", "key:1"),), 1) == [b"value:1"]
    finally:
        await asyncio.wait([reload], timeout=30)
        await pipe.close()
        await client.aclose()
