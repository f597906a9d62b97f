"""Operator CLI: `python -m app health|stats|sessions|rebuild-indexes`. Exit 0 on success, 1 on failure."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from . import models
from .config import ConfigError, load_settings
from .errors import AppError
from .store import Store, open_store


async def _health(store: Store, args: argparse.Namespace) -> int:
    await store.ping()
    print("ok")
    return 0


async def _stats(store: Store, args: argparse.Namespace) -> int:
    print(models.encode(models.stats_body(await store.stats())).decode())
    return 0


async def _sessions(store: Store, args: argparse.Namespace) -> int:
    human_user = models.key_part(args.human_username, "humanUsername")
    human_color = models.key_part(args.human_color, "humanColor")
    ai_user = ai_color = None
    if args.ai:
        ai_user, _, ai_color = args.ai.partition(":")
        models.key_part(ai_user, "ai")
        models.key_part(ai_color, "ai")
    rows = await store.read_sessions(human_user, human_color, ai_user, ai_color)
    for row in sorted(rows, key=lambda r: models.decode(r.first)["timestamp"]):
        s = models.session_summary(human_user, human_color, row)
        print(f"{s['key']}\t{s['messageCount']} messages\t{s['bytes']} bytes\t{s['question']!r}")
    return 0


async def _rebuild(store: Store, args: argparse.Namespace) -> int:
    """Rebuild every index from the conv:/godmode: keys alone (run with the service stopped)."""
    if not args.yes:
        print("rebuild-indexes replaces the stream, id, session, size and queue indexes; "
              "stop the service first, then pass --yes", file=sys.stderr)
        return 1
    stats = await store.rebuild_indexes()
    print(models.encode(stats).decode())
    return 0


COMMANDS = {"health": _health, "stats": _stats, "sessions": _sessions, "rebuild-indexes": _rebuild}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="godmode-store operator commands "
                                "(Redis from $REDIS_URL)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("health", help="exit 0 when Redis answers, 1 otherwise")
    sub.add_parser("stats", help="keys, messages, bytes, queue and globalScore as JSON")
    s = sub.add_parser("sessions", help="list a human's God Mode sessions")
    s.add_argument("human_username")
    s.add_argument("human_color")
    s.add_argument("--ai", help="only this God Mode identity, as Name:color")
    r = sub.add_parser("rebuild-indexes", help="rebuild all indexes from the message keys (SCAN)")
    r.add_argument("--yes", action="store_true", help="confirm: the service is stopped")
    return p


async def _main(args: argparse.Namespace) -> int:
    async with open_store(load_settings(), attempts=1) as store:
        return await COMMANDS[args.command](store, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (AppError, ConfigError) as exc:
        detail: Any = exc.message if isinstance(exc, AppError) else str(exc)
        print(f"error: {detail}", file=sys.stderr)
        return 1
