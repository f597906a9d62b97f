"""`python -m app.serve`: check every setting, then become gunicorn (same PID, so it gets the
signals). gunicorn reads WEB_CONCURRENCY when it is imported, before any config file, and a bad
value there is a raw traceback: so the settings are checked here first, with one list of every
problem. `--check` only checks."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, load_all

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ("-m", "gunicorn", "-c", "gunicorn.conf.py", "app.asgi:app")


def problems(environ: dict[str, str] | None = None) -> list[str]:
    try:
        load_all(environ, cpu_count=multiprocessing.cpu_count())
    except ConfigError as exc:
        return exc.problems
    return []


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    found = problems()
    if found:
        print("godmode-store cannot start:\n" + "".join(f"  - {p}\n" for p in found), file=sys.stderr, end="")
        return 2
    if args == ["--check"]:
        return 0
    os.chdir(ROOT)  # gunicorn.conf.py is found relative to the project
    os.execv(sys.executable, [sys.executable, *COMMAND, *args])


if __name__ == "__main__":
    sys.exit(main())
