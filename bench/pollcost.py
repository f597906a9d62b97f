"""Frontend-poll cost: Redis time per 200-message poll whose `after` lies 500 and 3,000 messages
back in a feed of ~4,000, through HTTP (wrk). A tab behind by 3,000 messages should cost about
what one behind by 500 costs: same page size, only the position differs."""

from __future__ import annotations

import random
from typing import Any

import httpx
import redis

from app.config import Settings
from app.models import decode

from .payloads import post_mix
from .preload import preload
from .ratio import always, measure
from .servers import Gunicorn
from .wrk import Load

MESSAGES = 4000
USERS = 400
PAGE = 200
BACK = (500, 3000)


def run(ours: Gunicorn, client: redis.Redis, redis_url: str, settings: Settings, load: Load) -> dict[str, Any]:
    client.flushall()  # our private server: the feed is exactly the preload
    rng = random.Random(12)
    stamps = sorted(preload(redis_url, settings, (post_mix(rng, i, users=USERS) for i in range(MESSAGES))))
    rows: dict[str, dict[str, Any]] = {}
    for back in BACK:
        # At least `back` messages after it; more when equal timestamps share the boundary's ms.
        after = stamps[-back] - 1
        path = f"/api/comments?after={after}&limit={PAGE}"
        page = httpx.get(ours.url + path, timeout=10)
        page.raise_for_status()
        measured = measure(ours, client, load, "get_paths.lua", always(path))
        rows[str(back)] = {
            "after": after,
            "messages_since": sum(1 for ts in stamps if ts > after),
            "page_messages": len(decode(page.content)["messages"]),
            "page_bytes": len(page.content),
            **measured.as_dict(),
        }
    for row in rows.values():
        usec = row["redis_usec_per_request"]
        row["redis_usec_per_message"] = round(usec / row["page_messages"], 3) if usec is not None else None
    near, far = (rows[str(back)] for back in BACK)

    def growth(field: str) -> float | None:
        return round(far[field] / near[field], 2) if near[field] and far[field] is not None else None

    return {
        "config": {"messages": MESSAGES, "users": USERS, "page": PAGE, "back": list(BACK), "load": load.__dict__},
        "by_back": rows,
        # 3,000 back ÷ 500 back: Redis command time (commandstats) and Redis process CPU per poll; and
        # command time per message answered, as pages differ a little when equal timestamps may not split
        "redis_usec_growth": growth("redis_usec_per_request"),
        "redis_cpu_growth": growth("redis_cpu_us_per_request"),
        "redis_usec_per_message_growth": growth("redis_usec_per_message"),
    }
