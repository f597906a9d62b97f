"""Operator CLI: `godmode-store …` (also `python -m app …` from the venv). Exit 0 on success, 1 on
failure. It says which Redis it acts on, and asks before a destructive command unless --yes."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import keys, legacy, models, ops
from .config import ConfigError, load_settings
from .errors import AppError
from .scripts import SessionRow
from .sessions import PAGE_MAX
from .store import Store, open_store, recorded_partitions

DESTRUCTIVE = ("rebuild-indexes", "repartition", "import-legacy")


def redis_target(url: str) -> str:
    """The Redis URL with any password hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def confirm(question: str, args: argparse.Namespace) -> bool:
    """--yes, or a "yes" typed at a terminal. Without a terminal (scripts, CI) it refuses."""
    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        print(f"{question}\nrefused: no terminal to ask; pass --yes", file=sys.stderr)
        return False
    print(f"{question}\ntype yes to continue: ", file=sys.stderr, end="", flush=True)
    return sys.stdin.readline().strip().lower() == "yes"


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
    rows: list[SessionRow] = []
    after = None
    while True:  # every page, newest first; printed oldest first
        page = await store.list_sessions(human_user, human_color, ai_user, ai_color, PAGE_MAX, after)
        rows += page.rows
        if page.next is None:
            break
        after = page.next
    for row in reversed(rows):
        s = models.session_summary(human_user, human_color, row)
        print(f"{s.key}\t{s.messageCount} messages\t{s.bytes} bytes\t{s.question!r}")
    return 0


async def _rebuild(store: Store, args: argparse.Namespace) -> int:
    """Rebuild every index from the conv:/godmode: keys alone (run with the service stopped)."""
    if not confirm("rebuild-indexes replaces the stream, id, session, size and queue indexes; "
                   "stop the service first.", args):
        return 1
    stats = await store.rebuild_indexes()
    print(models.encode(stats).decode())
    return 0


async def _repartition(store: Store, args: argparse.Namespace) -> int:
    """Move the store to another PARTITIONS (run with the service stopped)."""
    if not 1 <= args.to <= keys.MAX_PARTITIONS:
        print(f"error: --to must be from 1 to {keys.MAX_PARTITIONS}", file=sys.stderr)
        return 1
    if not confirm(f"repartition rebuilds every partition index for PARTITIONS={args.to}; stop the service "
                   "first.", args):
        return 1
    stats = await store.rebuild_indexes(keys.partitions(args.to))
    print(models.encode(stats).decode())
    print(f"now start the service with PARTITIONS={args.to}", file=sys.stderr)
    return 0


async def _list_keys(store: Store, args: argparse.Namespace) -> int:
    cursor, total = args.cursor, 0
    while True:
        page = await ops.list_keys(store, args.prefix, cursor, args.count)
        for name in page.keys:
            print(name)
        total += len(page.keys)
        cursor = page.cursor
        if cursor is None or not args.all:
            break
    print(f"{total} keys; " + ("scan complete" if cursor is None else f"next page: --cursor {cursor}"),
          file=sys.stderr)
    return 0


async def _import_legacy(store: Store, args: argparse.Namespace) -> int:
    """Split legacy God Mode pair keys into session keys (see app/legacy.py)."""
    try:
        export = json.loads(await asyncio.to_thread(Path(args.file).read_text, "utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(export, dict):
        print("error: the export must be a JSON object of storage key -> message array", file=sys.stderr)
        return 1
    if not args.dry_run and not confirm(f"import-legacy writes {len(export)} legacy keys into this store "
                                        "(stop the service first).", args):
        return 1
    report = await legacy.import_legacy(store, export, dry_run=args.dry_run)
    print(json.dumps(report.body(), indent=2))
    verb = "would import" if args.dry_run else "imported"
    print(f"{verb} {report.imported} messages ({report.already_present} already present) into "
          f"{report.keys_written['conv']} conv: and {report.keys_written['godmode']} godmode: keys; "
          f"{report.sessions_split} sessions split out of legacy God Mode keys; "
          f"{len(report.conflicts)} conflicts", file=sys.stderr)
    return 1 if report.conflicts else 0


COMMANDS = {"health": _health, "stats": _stats, "sessions": _sessions, "rebuild-indexes": _rebuild,
            "repartition": _repartition, "list-keys": _list_keys, "import-legacy": _import_legacy}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="godmode-store", description="godmode-store operator commands "
                                "(Redis from $REDIS_URL, default redis://127.0.0.1:6379/0)")
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
    k = sub.add_parser("list-keys", help="conv:/godmode: keys, one SCAN page at a time")
    k.add_argument("--prefix", help="conv, godmode, or a key prefix such as conv:Human:080150227:")
    k.add_argument("--cursor", help="continue from this page's cursor")
    k.add_argument("--count", type=int, default=100, help="SCAN COUNT hint (default 100)")
    k.add_argument("--all", action="store_true", help="follow the cursor to the end")
    i = sub.add_parser("import-legacy", help="import a JSON export of the original store, splitting "
                       "legacy God Mode keys into per-session keys")
    i.add_argument("file", help="JSON object: storage key -> message array")
    i.add_argument("--dry-run", action="store_true", help="report what would move; write nothing")
    i.add_argument("--yes", action="store_true", help="confirm: the service is stopped")
    return p


async def _main(args: argparse.Namespace) -> int:
    settings = load_settings()
    source = "REDIS_URL" if os.environ.get("REDIS_URL") else "default; set REDIS_URL to change"
    print(f"Redis: {redis_target(settings.redis_url)} ({source})", file=sys.stderr)
    if args.command in ("repartition", "rebuild-indexes", "stats", "sessions", "list-keys", "import-legacy"):
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
