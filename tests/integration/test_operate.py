"""Operating the service as production runs it: metrics across workers, JSON logs and request ids,
start-up checks before the bind, make run's local Redis, graceful shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.helpers import godmode_question, godmode_session_posts, human, ok
from tests.redis_server import RedisServer, free_port
from tests.service import ROOT, Service

SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? ([0-9.e+-]+)$')


def scrape(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for line in r.text.splitlines():
        match = SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            pairs = frozenset(tuple(p.split("=", 1)) for p in re.findall(r'\w+="[^"]*"', labels or ""))
            out[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_add_up_across_two_workers(redis_server: RedisServer, rdb: redis.Redis, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    svc = Service(redis_server.url, workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), MAX_KEY_BYTES="65536",
                  MAX_BODY_BYTES="98304", LOG_LEVEL="warning")
    try:
        posts, duplicates = 40, 10
        bodies = [human(f"question {i}") for i in range(posts)]
        q = godmode_question("Why?")
        session = godmode_session_posts(q["id"], "metrics-1", entities=3, answer_bytes=100, synthesis_bytes=200)
        for body in [*bodies, q, *session]:  # a new connection each time: both workers take a share
            ok(httpx.post(svc.base_url + "/api/comments", json=body, timeout=10))
        for body in bodies[:duplicates]:
            assert ok(httpx.post(svc.base_url + "/api/comments", json=body, timeout=10))["status"] == "duplicate"
        too_big = human("x" * 70000)  # one message over MAX_KEY_BYTES
        assert httpx.post(svc.base_url + "/api/comments", json=too_big, timeout=10).status_code == 413
        huge = human("y" * 100000)  # a body over MAX_BODY_BYTES
        assert httpx.post(svc.base_url + "/api/comments", json=huge, timeout=10).status_code == 413
        ok(httpx.post(svc.base_url + "/api/queue/claim-next", json={"workerId": "w1"}, timeout=10))
        assert httpx.get(svc.base_url + "/nowhere", timeout=10).status_code == 404

        with httpx.Client(base_url=svc.base_url, timeout=10) as client:
            samples = scrape(client)
        posted = posts + 1 + len(session) + duplicates + 2
        assert metric(samples, "godmode_http_requests_total", method="POST", route="/api/comments",
                      status="200") == posted - 2
        assert metric(samples, "godmode_http_requests_total", method="POST", route="/api/comments",
                      status="413") == 2
        assert metric(samples, "godmode_http_request_duration_seconds_count", method="POST",
                      route="/api/comments") == posted
        assert metric(samples, "godmode_http_requests_total", method="GET", route="unmatched", status="404") == 1
        assert metric(samples, "godmode_appends_total", kind="conv") == posts + 1
        assert metric(samples, "godmode_appends_total", kind="godmode") == len(session)
        assert metric(samples, "godmode_append_duplicates_total", kind="conv") == duplicates
        assert metric(samples, "godmode_payload_too_large_total", reason="message") == 1
        assert metric(samples, "godmode_payload_too_large_total", reason="body") == 1
        # 41 queued questions (40 + the God Mode one), one claimed; nothing timed out
        assert metric(samples, "godmode_queue_depth", state="pending") == posts
        assert metric(samples, "godmode_queue_depth", state="processing") == 1
        assert metric(samples, "godmode_queue_expired_claims") == 0
        assert metric(samples, "godmode_redis_up") == 1
        scripts = metric(samples, "godmode_redis_script_duration_seconds_count", script="append_message", ok="true")
        assert scripts == posted - 1  # the 413 message ran the script too; the body 413 never reached it
        assert metric(samples, "godmode_redis_errors_total") == 0
        # Both workers served and wrote their own files; the scrape summed them.
        pids = {m.group(1) for f in metrics_dir.iterdir() if (m := re.match(r"counter_(\d+)\.db", f.name))}
        assert len(pids) >= 2
    finally:
        svc.stop()


def test_one_json_line_per_request_with_the_request_id(redis_server: RedisServer, rdb: redis.Redis,
                                                       tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    svc = Service(redis_server.url, workers=2, log=log, LOG_LEVEL="info")
    try:
        body = human("logged")
        sent = httpx.post(svc.base_url + "/api/comments", json=body, headers={"X-Request-ID": "trace-42"}, timeout=10)
        assert sent.status_code == 200 and sent.headers["x-request-id"] == "trace-42"
        made = httpx.patch(f"{svc.base_url}/api/comments/{body['id']}", json={"eqScore": 7}, timeout=10)
        assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
        bad = httpx.get(svc.base_url + "/healthz", headers={"X-Request-ID": "has spaces"}, timeout=10)
        assert bad.headers["x-request-id"] != "has spaces"
    finally:
        svc.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # every line is JSON
    access = [entry for entry in lines if entry["logger"] == "access"]
    post = next(e for e in access if e["request_id"] == "trace-42")
    assert post["method"] == "POST" and post["route"] == "/api/comments" and post["status"] == 200
    assert post["level"] == "info" and post["duration_ms"] > 0 and re.match(r"\d{4}-\d\d-\d\dT", post["ts"])
    patch = next(e for e in access if e["request_id"] == made.headers["x-request-id"])
    assert patch["route"] == "/api/comments/{id}"  # the template, not the path
    gunicorn = [e for e in lines if e["logger"].startswith("gunicorn")]
    assert any("Listening at" in e["event"] for e in gunicorn)  # gunicorn's own records, same shape
    assert {"ts", "level", "logger", "event", "pid"} <= gunicorn[0].keys()


def serve(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HOST": "127.0.0.1", **env})


def test_bad_settings_are_one_list_and_exit_non_zero_before_binding() -> None:
    port = str(free_port())
    bad = {"WEB_CONCURRENCY": "abc", "LOG_LEVEL": "bogus", "REDIS_URL": "http://x", "MAX_KEY_BYTES": "big",
           "PORT": port}
    for args in (("-m", "app.serve"), ("-m", "gunicorn", "-c", "gunicorn.conf.py", "app.asgi:app")):
        env = bad if args[1] == "app.serve" else {**bad, "WEB_CONCURRENCY": "2"}  # gunicorn itself parses it
        done = serve(env, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "Listening at" not in done.stderr
        problems = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
        expected = ["LOG_LEVEL", "REDIS_URL", "MAX_KEY_BYTES"] + (["WEB_CONCURRENCY"] if args[1] == "app.serve" else [])
        assert len(problems) == len(expected) and all(any(v in p for p in problems) for v in expected)
    # Redis not answering: one line, still before the bind.
    down = serve({"REDIS_URL": "unix:///nonexistent/redis.sock", "PORT": port, "WEB_CONCURRENCY": "1"},
                 "-m", "app.serve")
    assert down.returncode == 2 and "Traceback" not in down.stderr and "Listening at" not in down.stderr
    assert "Redis at unix:///nonexistent/redis.sock does not answer" in down.stderr


def test_unix_socket_urls_are_served(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer("--unixsocket", str(sock), "--unixsocketperm", "700")
    try:
        svc = Service(f"unix://{sock}", workers=1)
        try:
            ok(httpx.post(svc.base_url + "/api/comments", json=human("over a socket"), timeout=10))
            assert httpx.get(svc.base_url + "/readyz", timeout=10).json()["redis"] is True
        finally:
            svc.stop()
    finally:
        server.close()


def test_make_run_stops_the_redis_it_started(tmp_path: Path) -> None:
    redis_port, port = free_port(), free_port()
    env = {**os.environ, "PY": sys.executable, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PORT": str(port),
           "HOST": "127.0.0.1", "WEB_CONCURRENCY": "1", "REDIS_DIR": str(tmp_path / "redis"), "LOG_LEVEL": "warning"}
    err = tmp_path / "run.err"
    with err.open("wb") as out:
        proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=env, stderr=out, stdout=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, err.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        assert redis.Redis(port=redis_port).ping()
        proc.send_signal(signal.SIGTERM)  # what an orchestrator or `kill` sends; Ctrl-C is SIGINT, same path
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert "Starting a local redis-server" in text and "Stopped the local redis-server" in text
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=redis_port, socket_connect_timeout=1).ping()
    assert (tmp_path / "redis" / "appendonlydir").is_dir()  # its data is kept


def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    server = RedisServer("--enable-debug-command", "yes")
    svc = Service(server.url, workers=1)
    answers: list[int] = []
    started = time.monotonic()
    try:
        stall = threading.Thread(target=lambda: redis.Redis(port=server.port).execute_command("DEBUG", "SLEEP", "1.5"))
        stall.start()
        time.sleep(0.2)  # Redis is stalled: the next request waits on it

        def post() -> None:
            answers.append(httpx.post(svc.base_url + "/api/comments", json=human("in flight"), timeout=10).status_code)

        client = threading.Thread(target=post)
        client.start()
        time.sleep(0.3)
        svc.proc.send_signal(signal.SIGTERM)  # graceful: stop accepting, finish what is in flight
        client.join(10)
        stall.join(10)
        assert svc.proc.wait(20) == 0
    finally:
        svc.stop()
        server.close()
    assert answers == [200]
    assert time.monotonic() - started >= 1.5  # the request really waited on the stalled Redis
