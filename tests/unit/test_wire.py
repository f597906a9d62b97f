"""app/wire.py: how a batch is split over cluster nodes, and a poll over nodes whose clocks differ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fakeredis
from redis.crc import key_slot

from app import keys, models
from app.config import Settings
from app.store import SCRIPT_SOURCES, Store
from app.wire import ClusterWire, ServerWire
from tests.helpers import HUMAN_COLOR, human

# -- routing over cluster nodes (a stand-in slot map: slots below 8192 on node a, the rest on b) --


@dataclass(frozen=True)
class Node:
    name: str
    host: str = "127.0.0.1"
    port: int = 0


A, B = Node("a"), Node("b")


class SlotMap:
    def get_node_from_slot(self, slot: int) -> Node:
        return A if slot < 8192 else B


class Topology:
    nodes_manager = SlotMap()

    def get_primaries(self) -> list[Node]:
        return [A, B]


def key_on(node: Node) -> str:
    return next(f"k{i}" for i in range(1000) if (key_slot(f"k{i}".encode()) < 8192) == (node is A))


def test_keyless_commands_go_with_the_next_keyed_command_or_the_previous_at_the_end() -> None:
    wire = ClusterWire(Topology(), None, 1.0, {})  # type: ignore[arg-type]
    a, b = key_on(A), key_on(B)
    batch = [("TIME",), ("ZRANGE", a, 0, 1), ("TIME",), ("EVALSHA", "sha", 2, b, a, "arg"), ("GET", a), ("WAIT", 1, 5)]
    routed = {name: indexes for name, (_, indexes) in wire._route(batch).items()}
    # TIME before a's read goes to a; the second TIME and the script (first key b) to b; WAIT with
    # the previous command (a's GET).
    assert routed == {"a": [0, 1, 4, 5], "b": [2, 3]}


def test_a_batch_groups_keys_by_node() -> None:
    wire = ClusterWire(Topology(), None, 1.0, {})  # type: ignore[arg-type]
    a, b = key_on(A), key_on(B)
    assert wire.group([a, b, a, b, b]) == [[0, 2], [1, 3, 4]]


# -- a poll over two nodes whose clocks differ ----------------------------------------------------

class TwoClocks(ServerWire):
    """One fakeredis server seen as two nodes: the partitions split in halves, and the second
    half's TIME runs `lag_ms` behind."""

    lag_ms = 0

    def group(self, names: Any) -> list[list[int]]:
        half = len(names) // 2
        return [list(range(half)), list(range(half, len(names)))]

    async def send(self, commands: Any, **options: Any) -> list[Any]:
        replies = await super().send(commands, **options)
        times = [i for i, command in enumerate(commands) if command[0] == "TIME"]
        if len(times) == 2:
            seconds, micros = (int(x) for x in replies[times[1]])
            behind = seconds * 1_000_000 + micros - self.lag_ms * 1000
            replies[times[1]] = [behind // 1_000_000, behind % 1_000_000]
        return replies


async def test_a_page_holds_nothing_the_slowest_nodes_clock_could_still_stamp() -> None:
    settings = Settings()
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    wire = TwoClocks(client, 5.0, SCRIPT_SOURCES)
    store = Store(client, settings, wire)
    try:
        users = [f"Clock{i}" for i in range(40)]  # every partition, on both "nodes"
        for user in users:
            assert (await store.append_message(models.plan_append(human(text="now", user=user), settings))).status == "ok"
        wire.lag_ms = 10_000  # the slow node could still stamp anything of the last 10 s: nothing is safe
        page = (await store.read_feed((-1,) * settings.partitions, 200, None)).page
        assert page.messages == [] and not page.has_more
        wire.lag_ms = 0  # clocks agree again: the follower resumes and gets every message once
        later = (await store.read_feed(page.positions, 200, None)).page
        assert sorted(models.decode(m)["username"] for m in later.messages) == sorted(users)
    finally:
        await store.close()


def test_partition_tags_split_evenly_over_three_masters_with_equal_slot_ranges() -> None:
    thirds = [key_slot(p.tag.strip("{}").encode()) * 3 // 16384 for p in keys.partitions(12, True)]
    assert sorted(thirds) == [0] * 4 + [1] * 4 + [2] * 4
    assert keys.partition_of("Ann", HUMAN_COLOR, 12, True).key_suffix.startswith("{p")
