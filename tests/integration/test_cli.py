"""The operator CLI against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from tests.helpers import HUMAN, HUMAN_COLOR, godmode_question, godmode_session_posts
from tests.redis_server import RedisServer
from tests.service import ROOT


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], check=False, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "REDIS_URL": redis_url}, timeout=60)


def test_health_exit_codes(redis_server: RedisServer) -> None:
    assert cli(redis_server.url, "health").returncode == 0
    down = cli("redis://127.0.0.1:1/0", "health")
    assert down.returncode == 1 and "unavailable" in down.stderr


def test_stats_sessions_and_rebuild(http: httpx.Client, redis_server: RedisServer) -> None:
    q = godmode_question("Why?")
    http.post("/api/comments", json=q)
    for body in godmode_session_posts(q["id"], "cli-1", entities=3):
        assert http.post("/api/comments", json=body).status_code == 200
    stats = json.loads(cli(redis_server.url, "stats").stdout)
    assert stats["messages"] == 7 and stats["keys"] == {"conv": 1, "godmode": 1}
    listing = cli(redis_server.url, "sessions", HUMAN, HUMAN_COLOR).stdout
    assert ":cli-1\t6 messages" in listing and "'Why?'" in listing
    assert cli(redis_server.url, "rebuild-indexes").returncode == 1  # needs --yes
    rebuilt = cli(redis_server.url, "rebuild-indexes", "--yes")
    assert rebuilt.returncode == 0 and json.loads(rebuilt.stdout)["messages"] == 7
    assert cli(redis_server.url, "sessions", "Hu*man", HUMAN_COLOR).returncode == 1
