"""The HTTP tests that run unchanged on any deployment of the service: the seed's scenarios and the
real clients' replays. They need only the `http`, `rdb` and `keyname` fixtures, which each package
running them provides (tests/integration itself, tests/one_partition, tests/cluster). Not collected
here (not a test_*.py file): a package collects them by importing this module's names."""

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
