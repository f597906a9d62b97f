"""The seed's scenarios, the real clients' replays and the two-instance reliability checks, run
unchanged against the service with REDIS_MODE=cluster on a real 3-master cluster with replicas.

They are the same test functions as on one Redis: this package's conftest gives them a service,
a `rdb` (redis-py's cluster client) and `keyname` (message keys carry their partition's tag here).
"""

from __future__ import annotations

from tests.integration.portable import *  # collected here, against the cluster's service
from tests.reliability.test_cursor import test_cursor_followers_see_every_message_once_across_instances
from tests.reliability.test_polling import test_two_instances_writers_and_pollers_nothing_lost_or_repeated
from tests.reliability.test_queue import test_bot_workers_on_two_instances_process_each_message_exactly_once

__all__ = [  # the portable tests come with the * import
    "test_bot_workers_on_two_instances_process_each_message_exactly_once",
    "test_cursor_followers_see_every_message_once_across_instances",
    "test_two_instances_writers_and_pollers_nothing_lost_or_repeated",
]
