"""Operator CLI: `python -m app health|stats|sessions|rebuild-indexes|repartition`. Exit 0 on success, 1 on failure."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from . import keys, models
from .config import ConfigError, load_settings
from .errors import AppError
from .store import Store, open_store, recorded_partitions


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


async def _repartition(store: Store, args: argparse.Namespace) -> int:
    """Move the store to another PARTITIONS (run with the service stopped)."""
    if not args.yes:
        print("repartition rebuilds every partition index under a new partition count; stop the service "
              "first, then pass --yes", file=sys.stderr)
        return 1
    if not 1 <= args.to <= keys.MAX_PARTITIONS:
        print(f"error: --to must be from 1 to {keys.MAX_PARTITIONS}", file=sys.stderr)
        return 1
    stats = await store.rebuild_indexes(keys.partitions(args.to))
    print(models.encode(stats).decode())
    print(f"now start the service with PARTITIONS={args.to}", file=sys.stderr)
    return 0


COMMANDS = {"health": _health, "stats": _stats, "sessions": _sessions, "rebuild-indexes": _rebuild,
            "repartition": _repartition}


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
    m = sub.add_parser("repartition", help="move the store to another partition count (PARTITIONS)")
    m.add_argument("--to", type=int, required=True, help="the new partition count")
    m.add_argument("--yes", action="store_true", help="confirm: the service is stopped")
    return p


async def _main(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.command in ("repartition", "rebuild-indexes", "stats", "sessions"):
        # Act on the store as it was created, whatever PARTITIONS this shell has.
        recorded = await recorded_partitions(settings)
        if recorded is not None:
            settings = dataclasses.replace(settings, partitions=recorded)
    async with open_store(settings, attempts=1) as store:
        return await COMMANDS[args.command](store, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (AppError, ConfigError) as exc:
        detail: Any = exc.message if isinstance(exc, AppError) else str(exc)
        print(f"error: {detail}", file=sys.stderr)
        return 1
