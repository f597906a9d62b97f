"""The seed's scenarios and the real clients' replays, run unchanged against a one-partition
service (conftest.py): every poll then reads one feed, the configuration the README recommends
for a single Redis."""

from __future__ import annotations

import httpx
import redis

from tests.integration.portable import *  # collected here, against this package's service


def test_the_store_has_one_partition_and_a_poll_cursor_one_position(http: httpx.Client, rdb: redis.Redis) -> None:
    assert rdb.get("store:partitions") == b"1"
    posted = http.post("/api/comments", json={"text": "hi", "username": "Human", "color": "080150227"})
    assert posted.status_code == 200, posted.text
    page = http.get("/api/comments", params={"after": 0}).json()
    assert [m["id"] for m in page["messages"]] == [posted.json()["id"]]
    assert len(page["cursor"].split(".")) == 3  # version, base, one partition's offset
    assert len(list(rdb.scan_iter("feed:*"))) == 1  # the one feed every poll reads
