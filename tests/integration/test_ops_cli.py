"""The operator CLI's target line and confirmation, list-keys (CLI and HTTP), import-legacy."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.helpers import (
    ETERNAL,
    ETERNAL_COLOR,
    GODMODE,
    GODMODE_COLOR,
    HUMAN,
    HUMAN_COLOR,
    godmode_question,
    godmode_session_posts,
    human,
    ok,
)
from tests.redis_server import RedisServer
from tests.service import ROOT

TOKEN = "integration-token"  # the session service's ADMIN_TOKEN (tests/integration/conftest.py)


def cli(redis_url: str, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; with `answer`, stdin is a terminal on which that line is typed."""
    env = {**os.environ, "REDIS_URL": redis_url}
    if answer is None:
        return subprocess.run([sys.executable, "-m", "app", *args], check=False, cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode() + b"\n")
        return subprocess.run([sys.executable, "-m", "app", *args], check=False, cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=60, stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)


def test_cli_says_which_redis_and_asks_before_destructive_commands(redis_server: RedisServer,
                                                                     rdb: redis.Redis) -> None:
    health = cli(redis_server.url, "health")
    assert health.returncode == 0 and f"Redis: {redis_server.url} (REDIS_URL)" in health.stderr
    hidden = cli("redis://:hunter2@127.0.0.1:1/0", "health")
    assert hidden.returncode == 1 and "redis://:***@127.0.0.1:1/0" in hidden.stderr and "hunter2" not in hidden.stderr
    default = subprocess.run([sys.executable, "-m", "app", "--help"], check=False, cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert "default redis://127.0.0.1:6379/0" in " ".join(default.stdout.split())

    refused = cli(redis_server.url, "rebuild-indexes")  # no terminal, no --yes
    assert refused.returncode == 1 and "pass --yes" in refused.stderr and refused.stdout == ""
    declined = cli(redis_server.url, "rebuild-indexes", answer="no")
    assert declined.returncode == 1 and "type yes to continue" in declined.stderr and declined.stdout == ""
    accepted = cli(redis_server.url, "rebuild-indexes", answer="yes")
    assert accepted.returncode == 0 and json.loads(accepted.stdout)["messages"] == 0
    assert cli(redis_server.url, "repartition", "--to", "4").returncode == 1
    assert rdb.get("store:partitions") in (None, b"12")  # refused: nothing moved


def test_entry_point_is_declared_and_runs() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["godmode-store"] == "app.cli:main"
    installed = Path(sys.executable).parent / "godmode-store"
    if installed.exists():  # installed by make (pip install -e .); a venv installed before it may lack it
        done = subprocess.run([str(installed), "--help"], check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "list-keys" in done.stdout


def test_list_keys_cli_and_http(http: httpx.Client, redis_server: RedisServer, rdb: redis.Redis) -> None:
    for i in range(30):
        ok(http.post("/api/comments", json=human(f"hi {i}", user=f"Lister{i}", color=HUMAN_COLOR)))
    q = godmode_question("Why?")
    ok(http.post("/api/comments", json=q))
    for body in godmode_session_posts(q["id"], "list-1", entities=1):
        ok(http.post("/api/comments", json=body))
    expected = {k.decode() for pattern in ("conv:*", "godmode:*") for k in rdb.scan_iter(pattern)}
    assert len(expected) == 32

    listed = cli(redis_server.url, "list-keys", "--all", "--count", "10")
    assert listed.returncode == 0 and set(listed.stdout.split()) == expected and "scan complete" in listed.stderr
    only = cli(redis_server.url, "list-keys", "--all", "--prefix", "godmode")
    assert only.stdout.split() == [f"godmode:{HUMAN}:{HUMAN_COLOR}:{GODMODE}:{GODMODE_COLOR}:list-1"]

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http.get("/api/admin/list-keys").status_code == 401
    assert http.get("/api/admin/list-keys", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert http.get("/api/admin/list-keys?cursor=x", headers=auth).status_code == 400
    assert http.get("/api/admin/list-keys?prefix=pending:", headers=auth).status_code == 400
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(200):
        page = ok(http.get("/api/admin/list-keys", params={"limit": 5, **({"cursor": cursor} if cursor else {})},
                           headers=auth))
        assert page["count"] == len(page["keys"])
        seen += page["keys"]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert set(seen) == expected  # SCAN may repeat a key across pages, never miss one


# -- import-legacy --------------------------------------------------------------------------------

T0 = 1762985133459  # November 2025, the original store's era
LEGACY_GODMODE = f"conv:{HUMAN}:{HUMAN_COLOR}:{GODMODE}:{GODMODE_COLOR}"
LEGACY_CONV = f"conv:{HUMAN}:{HUMAN_COLOR}:{ETERNAL}:{ETERNAL_COLOR}"


def _legacy_human(mid: str, ts: int, text: str, ais: str, status: str = "complete") -> dict[str, Any]:
    entity = "god-mode" if ais.startswith(GODMODE) else "the-eternal"
    return {"id": mid, "timestamp": ts, "text": text, "username": HUMAN, "color": HUMAN_COLOR,
            "domain": "saywhatwant.app", "language": "en", "message-type": "human", "misc": "",
            "botParams": {"entity": entity, "priority": 5, "ais": ais, "status": status, "attempts": 1}}


def _legacy_answer(mid: str, ts: int, text: str, reply_to: str | None, session_id: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"entity": "god-mode", "ais": f"{GODMODE}:{GODMODE_COLOR}", "humanUsername": HUMAN,
                              "humanColor": HUMAN_COLOR}
    if session_id:
        params["sessionId"] = session_id
    body: dict[str, Any] = {"id": mid, "timestamp": ts, "text": text, "username": GODMODE, "color": GODMODE_COLOR,
                            "domain": "saywhatwant.app", "message-type": "AI", "botParams": params}
    if reply_to:
        body["replyTo"] = reply_to
    return body


def legacy_export() -> dict[str, Any]:
    """What the Durable Object held for one human: a God Mode pair key with three sessions (the first
    posted with sessionIds, two older ones without, one of those without replyTo), a plain pair, the
    bot's session metadata and a key of another kind."""
    gm: list[dict[str, Any]] = []
    ts = T0
    for n, session_id in enumerate(["1762985133459-fswhr02", None, None]):
        qid = f"legacyq{n}"
        gm.append(_legacy_human(qid, ts, f"Question {n}?", f"{GODMODE}:{GODMODE_COLOR}"))
        answers = ["🔮 I will now begin the inquiry with 3 entities...", "(TheEternal) Look within.",
                   "(1984) Question the premise.", "(Sage) Both.", "🧠 Give me a minute...", "⚡ " + "s" * 3000]
        for i, text in enumerate(answers):
            ts += 1000
            gm.append(_legacy_answer(f"legacya{n}x{i}", ts, text, qid if n != 2 else None, session_id))
        ts += 60_000
    gm.append(_legacy_human("legacyq3", ts, "Unanswered?", f"{GODMODE}:{GODMODE_COLOR}", status="pending"))
    conv = [_legacy_human("legacyc0", T0 + 5, "hello", f"{ETERNAL}:{ETERNAL_COLOR}"),
            {"id": "legacyc1", "timestamp": T0 + 5, "text": "Hello, traveler.", "username": ETERNAL,
             "color": ETERNAL_COLOR, "domain": "saywhatwant.app", "message-type": "AI", "replyTo": "legacyc0",
             "botParams": {"entity": "the-eternal", "humanUsername": HUMAN, "humanColor": HUMAN_COLOR,
                           "ais": f"{ETERNAL}:{ETERNAL_COLOR}"}, "eqScore": 40},
            {"id": "bad id!", "timestamp": T0 + 9, "text": "x", "username": HUMAN, "color": HUMAN_COLOR}]
    return {LEGACY_GODMODE: gm, LEGACY_CONV: conv,
            "godmode-session:1762985133459-fswhr02": {"sessionId": "1762985133459-fswhr02", "humanQuestion": "Question 0?"},
            "stats:globalScore": 12}


def written(rdb: redis.Redis) -> set[bytes]:
    return {k for k in rdb.scan_iter() if k != b"store:partitions"}  # the CLI records PARTITIONS, as the service does


def test_import_legacy_splits_god_mode_sessions(http: httpx.Client, redis_server: RedisServer, rdb: redis.Redis,
                                                tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text(json.dumps(legacy_export()))

    dry = cli(redis_server.url, "import-legacy", str(export), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dryRun"] is True and report["imported"] == 4 + 18 + 2 and not written(rdb)
    assert report["keysWritten"] == {"conv": 2, "godmode": 3} and report["sessionsSplit"] == 3
    assert report["skipped"] == {"invalid message (id)": 1, "not a conv:/godmode: message key": 1}
    [move] = report["moves"]
    assert move["from"] == LEGACY_GODMODE and [t["messages"] for t in move["to"]] == [6, 6, 6]
    assert "would import 24 messages" in dry.stderr

    assert cli(redis_server.url, "import-legacy", str(export)).returncode == 1  # no terminal, no --yes
    assert not written(rdb)
    done = cli(redis_server.url, "import-legacy", str(export), "--yes")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"] == 24

    prefix = f"godmode:{HUMAN}:{HUMAN_COLOR}:{GODMODE}:{GODMODE_COLOR}:"
    listing = ok(http.get("/api/godmode-sessions", params={"humanUsername": HUMAN, "humanColor": HUMAN_COLOR}))
    assert listing["total"] == 3
    by_id = {s["sessionId"]: s for s in listing["sessions"]}
    assert set(by_id) == {"1762985133459-fswhr02", "legacy-legacyq1", "legacy-legacyq2"}
    assert all(s["messageCount"] == 6 for s in by_id.values())
    assert by_id["legacy-legacyq1"]["question"] == "Question 1?"
    assert by_id["legacy-legacyq2"]["question"] == "Question 2?"  # grouped: replyTo names the question now
    one = ok(http.get("/api/godmode-session/legacy-legacyq1", params={"humanUsername": HUMAN, "humanColor": HUMAN_COLOR}))
    assert [m["id"] for m in one["messages"]] == [f"legacya1x{i}" for i in range(6)]
    assert one["messages"][0]["timestamp"] == T0 + 6000 + 60_000 + 1000  # kept, not re-stamped
    assert one["messages"][0]["botParams"]["sessionId"] == "legacy-legacyq1"
    assert rdb.exists(prefix + "1762985133459-fswhr02")
    # The questions stay in the pair's conv: key; the unanswered one is queued again.
    assert [json.loads(m)["id"] for m in rdb.zrange(LEGACY_GODMODE, 0, -1)] == [f"legacyq{n}" for n in range(4)]
    assert ok(http.get("/api/queue/pending"))["pending"][0]["id"] == "legacyq3"
    pair = ok(http.get("/api/conversation", params={"humanUsername": HUMAN, "humanColor": HUMAN_COLOR,
                                                     "aiUsername": ETERNAL, "aiColor": ETERNAL_COLOR}))
    assert [m["id"] for m in pair] == ["legacyc0", "legacyc1"] and pair[1]["eqScore"] == 40
    poll = ok(http.get("/api/comments", params={"after": 0, "limit": 1000}))
    assert len(poll["messages"]) == 24 and poll["globalScore"] == 40
    assert rdb.get("godmode-session:1762985133459-fswhr02") is not None
    stats = ok(http.get("/api/admin/stats"))

    again = cli(redis_server.url, "import-legacy", str(export), "--yes")  # idempotent
    report = json.loads(again.stdout)
    assert again.returncode == 0 and report["imported"] == 0 and report["alreadyPresent"] == 24
    assert ok(http.get("/api/admin/stats")) == stats
    # Every index agrees with the keys: a rebuild from the keys alone finds the same store.
    rebuilt = cli(redis_server.url, "rebuild-indexes", "--yes")
    assert rebuilt.returncode == 0 and json.loads(rebuilt.stdout)["messages"] == 24
    assert ok(http.get("/api/admin/stats")) == stats


def test_import_legacy_refuses_a_key_the_service_already_wrote(http: httpx.Client, redis_server: RedisServer,
                                                                rdb: redis.Redis, tmp_path: Path) -> None:
    ok(http.post("/api/comments", json=human("live", entity=None, botParams={"ais": f"{ETERNAL}:{ETERNAL_COLOR}"})))
    export = tmp_path / "export.json"
    export.write_text(json.dumps({LEGACY_CONV: legacy_export()[LEGACY_CONV]}))
    done = cli(redis_server.url, "import-legacy", str(export), "--yes")
    assert done.returncode == 1 and json.loads(done.stdout)["conflicts"] == [LEGACY_CONV]
    assert rdb.zcard(LEGACY_CONV) == 1
