"""The seed's scenarios, the real clients' replays and the two-instance reliability checks, run
unchanged against a one-partition service (conftest.py): every poll then reads one feed, the
configuration the README recommends for a single Redis."""

from __future__ import annotations

import httpx
import redis

from app import keys
from tests.integration.portable import *  # collected here, against this package's service
from tests.reliability.test_cursor import test_cursor_followers_see_every_message_once_across_instances
from tests.reliability.test_polling import test_two_instances_writers_and_pollers_nothing_lost_or_repeated
from tests.reliability.test_queue import test_bot_workers_on_two_instances_process_each_message_exactly_once

__all__ = [  # the portable tests come with the * import
    "test_bot_workers_on_two_instances_process_each_message_exactly_once",
    "test_cursor_followers_see_every_message_once_across_instances",
    "test_two_instances_writers_and_pollers_nothing_lost_or_repeated",
]


def test_the_store_has_one_partition_and_a_poll_cursor_one_position(http: httpx.Client, rdb: redis.Redis) -> None:
    assert rdb.get(keys.PARTITIONS_KEY) == b"1"
    posted = http.post("/api/comments", json={"text": "hi", "username": "Human", "color": "080150227"})
    assert posted.status_code == 200, posted.text
    page = http.get("/api/comments", params={"after": 0}).json()
    assert [m["id"] for m in page["messages"]] == [posted.json()["id"]]
    assert len(page["cursor"].split(".")) == 3  # version, base, one partition's offset
    assert len(list(rdb.scan_iter("feed:*"))) == 1  # the one feed every poll reads
