"""Gunicorn settings, read from the environment so `make run` and deploy/ share them.

Every setting (gunicorn's and the app's) is checked here, before gunicorn binds its port; Redis is
checked in on_starting, also before the bind. A bad start prints one list of every problem and
exits 2, without a traceback.
"""

import asyncio
import multiprocessing
import os
import shutil
import sys
import tempfile

from app.config import ConfigError, load_all
from app.logs import dict_config


def _refuse(problems: list[str]) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    print("godmode-store cannot start:\n" + "".join(f"  - {p}\n" for p in problems), file=sys.stderr, end="")
    sys.stderr.flush()
    raise SystemExit(2)


_OWN_METRICS_DIR = False
try:
    server, settings = load_all(cpu_count=multiprocessing.cpu_count())
except ConfigError as exc:
    _refuse(exc.problems)

bind = f"{server.host}:{server.port}"
workers = server.workers
worker_class = "app.worker.Worker"
keepalive = 75  # longer than typical load-balancer idle timeouts, so they close first
# SIGTERM: stop accepting, let in-flight requests finish for up to graceful_timeout, then exit.
# Keep it below the orchestrator's grace period (k8s terminationGracePeriodSeconds: 30).
graceful_timeout = 20
timeout = 30
loglevel = settings.log_level
logconfig_dict = dict_config(settings.log_level)
accesslog = None  # the app writes its own JSON access line (app/middleware.py)
errorlog = "-"
# gunicorn's control socket defaults to one path per user, shared by every instance: off unless
# CONTROL_SOCKET names this instance's own.
if server.control_socket:
    control_socket = server.control_socket
else:
    control_socket_disable = True

# Metrics: each instance sums its own workers' files (prometheus-client multiprocess mode). Set
# before any worker imports app.metrics; wiped at start, as that mode requires.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="godmode-store-metrics-")
else:
    for _name in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]):
        if _name.endswith(".db"):
            os.unlink(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], _name))


def on_starting(arbiter: object) -> None:
    """Before the bind: Redis answers and holds a store of this PARTITIONS (else one clear line)."""
    from app.errors import AppError
    from app.store import open_store

    async def check() -> None:
        async with open_store(settings, attempts=3):
            pass

    try:
        asyncio.run(check())
    except ConfigError as exc:
        _refuse(exc.problems)
    except AppError as exc:
        target = _redis_target(settings.redis_url)
        _refuse([f"Redis at {target} does not answer ({exc.message}); start it, or set REDIS_URL to a running Redis"])


def _redis_target(url: str) -> str:
    from app.cli import redis_target

    return redis_target(url)


def child_exit(arbiter: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def on_exit(arbiter: object) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
