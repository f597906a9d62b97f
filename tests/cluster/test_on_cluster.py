"""The seed's scenarios, the real clients' replays and the two-instance reliability checks, run
unchanged against the service with REDIS_MODE=cluster on a real 3-master cluster with replicas.

They are the same test functions as on one Redis: this package's conftest gives them a service,
a `rdb` (redis-py's cluster client) and `keyname` (message keys carry their partition's tag here).
"""

from __future__ import annotations

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
from tests.reliability.test_cursor import test_cursor_followers_see_every_message_once_across_instances
from tests.reliability.test_polling import test_two_instances_writers_and_pollers_nothing_lost_or_repeated
from tests.reliability.test_queue import test_bot_workers_on_two_instances_process_each_message_exactly_once

__all__ = [
    "test_1_session_isolation",
    "test_2_frontend_polling_sees_every_session_message",
    "test_3_unlimited_sessions_no_errors",
    "test_4_global_polling_mixes_godmode_and_normal",
    "test_5_backward_compatibility",
    "test_bot_loop_processes_every_human_message_exactly_once",
    "test_bot_workers_on_two_instances_process_each_message_exactly_once",
    "test_cursor_followers_see_every_message_once_across_instances",
    "test_frontend_poll_loop_sees_every_message_while_bots_write",
    "test_full_god_mode_session_as_the_bot_posts_it",
    "test_success_criteria_100_sessions_of_31_entities",
    "test_two_instances_writers_and_pollers_nothing_lost_or_repeated",
]
