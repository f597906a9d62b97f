"""The seed's scenarios and the real clients' replays, run unchanged against a one-partition
service (conftest.py): every poll then reads one feed, the configuration the README recommends
for a single Redis."""

from __future__ import annotations

import httpx
import redis

from tests.integration.test_real_clients import (
    test_bot_loop_processes_every_human_message_exactly_once,
    test_frontend_poll_loop_sees_every_message_while_bots_write,
    test_full_god_mode_session_as_the_bot_posts_it,
)
from tests.integration.test_seed_scenarios import (
    test_1_session_isolation,
    test_2_frontend_polling_sees_every_session_message,
    test_3_unlimited_sessions_no_errors,
    test_4_global_polling_mixes_godmode_and_normal,
    test_5_backward_compatibility,
    test_success_criteria_100_sessions_of_31_entities,
)

__all__ = [
    "test_1_session_isolation",
    "test_2_frontend_polling_sees_every_session_message",
    "test_3_unlimited_sessions_no_errors",
    "test_4_global_polling_mixes_godmode_and_normal",
    "test_5_backward_compatibility",
    "test_bot_loop_processes_every_human_message_exactly_once",
    "test_frontend_poll_loop_sees_every_message_while_bots_write",
    "test_full_god_mode_session_as_the_bot_posts_it",
    "test_success_criteria_100_sessions_of_31_entities",
]


def test_the_store_has_one_partition_and_a_poll_cursor_one_position(http: httpx.Client, rdb: redis.Redis) -> None:
    assert rdb.get("store:partitions") == b"1"
    posted = http.post("/api/comments", json={"text": "hi", "username": "Human", "color": "080150227"})
    assert posted.status_code == 200, posted.text
    page = http.get("/api/comments", params={"after": 0}).json()
    assert [m["id"] for m in page["messages"]] == [posted.json()["id"]]
    assert len(page["cursor"].split(".")) == 3  # version, base, one partition's offset
    assert len(list(rdb.scan_iter("feed:*"))) == 1  # the one feed every poll reads
