"""The processes a benchmark needs: a private redis-server and gunicorn apps, started and stopped here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.redis_server import RedisServer, free_port  # the tests' private redis-server, reused as is

ROOT = Path(__file__).resolve().parent.parent
SERVICE_APP = "app.asgi:app"
CEILING_APP = "bench.ceiling_app:app"
BARE_APP = "bench.bare_app:app"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

__all__ = ["BARE_APP", "CEILING_APP", "ROOT", "SERVICE_APP", "Gunicorn", "RedisServer", "start_gunicorn"]


@dataclass
class Gunicorn:
    """One gunicorn master started with the project's gunicorn.conf.py."""

    module: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def worker_cpu_s(self) -> dict[int, float]:
        """User + system CPU seconds each worker has used so far (the master does no request work)."""
        used = {}
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime: stat(5) fields 14, 15
        return used

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # gunicorn master: graceful stop of its workers
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_gunicorn(module: str, redis_url: str, workers: int, log_dir: Path, ready_path: str = "/readyz",
                   extra_env: Mapping[str, str] | None = None) -> Gunicorn:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    log_path = log_dir / f"gunicorn-{module.split(':')[0].replace('.', '_')}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", module],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = Gunicorn(module, port, proc, log_path)
    try:
        _wait_ready(server, workers, ready_path)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: Gunicorn, workers: int, path: str, timeout_s: float = 30.0) -> None:
    """Every worker forked and one answers `path` with 200."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.module} exited at start-up; see {server.log_path}")
            try:
                if client.get(path).status_code == 200 and len(server.worker_pids()) >= workers:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"{server.module} not ready after {timeout_s:.0f} s; see {server.log_path}")
