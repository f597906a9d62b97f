"""4. Hostile input: the OpenAPI spec at /openapi.json, schemathesis fuzzing every operation from it,
and hand-written cases. Zero 5xx; every rejection a 4xx with a JSON body that has "error"; a
rejected request writes nothing (the store's counters, key count and id index are unchanged)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis

from app.api import routes
from app.config import Settings
from app.openapi import build_spec
from tests.helpers import partitions, queue_sizes, stats
from tests.redis_server import RedisServer
from tests.reliability.harness import record
from tests.service import Service

ROOT = Path(__file__).resolve().parents[2]


def fingerprint(rdb: redis.Redis) -> tuple[Any, ...]:
    ids = sum(rdb.hlen(p.ids) for p in partitions())
    feeds = sum(rdb.zcard(p.feed) for p in partitions())
    return sorted(stats(rdb).items()), rdb.dbsize(), ids, queue_sizes(rdb), feeds


@pytest.fixture
def http(pair_of_services: list[Service], rdb: redis.Redis) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pair_of_services[0].base_url, timeout=20) as client:
        yield client


def seed(http: httpx.Client) -> dict[str, Any]:
    """One queued human message and one AI reply, so ids exist for 404/409 paths."""
    q = {"id": "seedq", "text": "question", "username": "Human", "color": "080150227",
         "botParams": {"entity": "the-eternal", "ais": "TheEternal:080175220"}}
    a = {"id": "seeda", "text": "answer", "username": "TheEternal", "color": "080175220", "message-type": "AI",
         "replyTo": "seedq", "botParams": {"humanUsername": "Human", "humanColor": "080150227"}}
    first = http.post("/api/comments", json=q).json()
    assert http.post("/api/comments", json=a).status_code == 200
    return first


# -- the spec -----------------------------------------------------------------------------------


def test_openapi_describes_every_route(http: httpx.Client) -> None:
    r = http.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    spec = r.json()
    assert spec == json.loads(json.dumps(build_spec(Settings())))
    assert spec["openapi"].startswith("3.")
    served = {(re.sub(r"\{(\w+)\}", r"{\1}", route.path), method.lower())
              for route in routes() for method in route.methods or () if method != "HEAD"}
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert served == documented
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody")
            if method in ("post", "patch") and path != "/api/admin/purge":
                assert body and "application/json" in body["content"], (method, path)
            if path not in ("/healthz", "/openapi.json", "/metrics"):  # /metrics reports Redis down in-band
                error = op["responses"]["503"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                assert spec["components"]["schemas"][error]["required"] == ["error"]
    schemathesis.openapi.from_dict(spec)  # loads: a well-formed OpenAPI 3.1 document


# -- schemathesis -------------------------------------------------------------------------------


def run_schemathesis(service: Service, server: RedisServer, tmp: Path, *args: str, timeout: float) -> dict[str, Any]:
    config = tmp / "schemathesis.toml"
    config.write_text("[cache]\nenabled = false\n")  # no .schemathesis/ left in the work tree
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.reliability.st_hooks", "GMS_FUZZ_REDIS_PORT": str(server.port),
           "PYTHONPATH": str(ROOT), "SCHEMATHESIS_TELEMETRY": "false"}
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
              "negative_data_rejection,missing_required_header,ignored_auth,"
              "rejections_write_nothing,errors_are_json_with_error,valid_requests_accepted")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", service.base_url + "/openapi.json", "--checks", checks,
         "--seed", "20261125", "--workers", "1", "--request-timeout", "10", "--max-failures", "20",
         "--continue-on-failure", "--no-color", *args],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-20000:] + proc.stderr[-3000:]
    generated = re.search(r"(\d+) generated", out)
    return {"cases": int(generated.group(1)) if generated else 0, "seconds": round(time.monotonic() - started, 1)}


def test_schemathesis_fuzzes_every_operation(pair_of_services: list[Service], shared_redis: RedisServer,
                                             http: httpx.Client, tmp_path: Path) -> None:
    seed(http)
    result = run_schemathesis(pair_of_services[0], shared_redis, tmp_path, "--max-examples", "50",
                              "--phases", "examples,coverage,fuzzing", timeout=120)
    record("hostile: schemathesis (fast)", **{"fuzz cases": result["cases"], "5xx": 0, "seconds": result["seconds"]})


@pytest.mark.soak
def test_soak_schemathesis_all_phases(pair_of_services: list[Service], shared_redis: RedisServer,
                                      http: httpx.Client, tmp_path: Path) -> None:
    seed(http)
    result = run_schemathesis(pair_of_services[0], shared_redis, tmp_path, "--max-examples", "300", "--max-time", "90",
                              "--phases", "examples,coverage,fuzzing,stateful", timeout=300)
    record("hostile: schemathesis (soak)", **{"fuzz cases": result["cases"], "5xx": 0, "seconds": result["seconds"]})


# -- hand-written cases -------------------------------------------------------------------------

GOOD = {"text": "hi", "username": "Human", "color": "080150227"}
PAIR = {"humanUsername": "Human", "humanColor": "080150227", "aiUsername": "TheEternal", "aiColor": "080175220"}
FORBIDDEN_KEY_CHARS = [":", "*", "?", "[", "]", "\\", "{", "}", "\x00", "\x1f", "\x7f", "\x85", "\n"]


def nested(depth: int) -> bytes:
    return b'{"text":' * depth + b'"x"' + b"}" * depth


def rejections() -> list[tuple[str, str, dict[str, Any], int]]:
    """(method, path, httpx kwargs, expected status)."""
    cases: list[tuple[str, str, dict[str, Any], int]] = []
    raw = {"headers": {"content-type": "application/json"}}

    def post(body: Any, status: int = 400, path: str = "/api/comments") -> None:
        cases.append(("POST", path, {"json": body}, status))

    def post_raw(content: bytes, status: int = 400, path: str = "/api/comments", method: str = "POST") -> None:
        cases.append((method, path, {"content": content, **raw}, status))

    # huge bodies: declared, and chunked (no Content-Length); one message past the per-key limit
    post_raw(b'{"text":"' + b"x" * (3 * 1024 * 1024) + b'"}', 413)
    cases.append(("POST", "/api/comments", {"content": iter([b'{"text":"', b"x" * (3 * 1024 * 1024), b'"}']),
                                            **raw}, 413))
    post({**GOOD, "text": "x" * 200_000}, 413)
    post({**GOOD, "context": ["x" * 1000] * 201}, 400)
    post_raw(b'{"sessionKey":"godmode-session:s1","sessionData":{"blob":"' + b"x" * 70_000 + b'"}}', 413,
             "/api/godmode-session")
    # deeply nested and malformed JSON, on every endpoint that reads a body
    for path, method in (("/api/comments", "POST"), ("/api/comments/seedq", "PATCH"), ("/api/queue/claim-next", "POST"),
                         ("/api/queue/claim", "POST"), ("/api/queue/complete", "POST"), ("/api/godmode-session", "POST")):
        for content in (nested(5000), b"[" * 100_000, b'{"text":"\xff\xfe"}', b'{"text":"\\ud800"}', b"{} x", b"",
                        b"NaN", b'{"eqScore":NaN}', b"null", b"[]", b'"str"', b"12"):
            post_raw(content, 400, path, method)
        cases.append((method, path, {"data": {"text": "form"}}, 415))
    # wrong types
    for field, value in (("text", 5), ("text", ""), ("text", None), ("username", []), ("color", 80150227),
                         ("id", {}), ("id", "a" * 65), ("eqScore", "72"), ("eqScore", 101), ("eqScore", -1),
                         ("eqScore", True), ("eqScore", 1.5), ("eqScore", 10**40), ("botParams", "x"),
                         ("context", "x"), ("context", [1]), ("message-type", "robot"), ("message-type", 1),
                         ("domain", 'x"y'), ("domain", "x y"), ("replyTo", "a:b"), ("priority", 100)):
        post({**GOOD, field: value})
    for params in ({"priority": -1}, {"priority": "5"}, {"sessionId": "a*b", "entity": "god-mode"}, {"ais": "A:B:C"},
                   {"ais": "*:x"}, {"entity": "a:b"}, {"entity": 5}):
        post({**GOOD, "botParams": params})
    post({"text": "x", "username": "TheEternal", "color": "080175220", "message-type": "AI"})  # no human named
    post({"text": "x", "username": "TheEternal", "color": "080175220", "message-type": "ai",
          "botParams": {"humanUsername": "Human", "humanColor": "red"}})
    # glob, ':' and control characters in key parts, in bodies and in queries
    for ch in FORBIDDEN_KEY_CHARS:
        post({**GOOD, "username": f"a{ch}b"})
        cases.append(("GET", "/api/conversation", {"params": {**PAIR, "humanUsername": f"H{ch}"}}, 400))
        cases.append(("GET", "/api/godmode-sessions", {"params": {"humanUsername": "H", "humanColor": f"1{ch}"}}, 400))
    post({**GOOD, "username": "x" * 65})
    post({**GOOD, "color": "٠٨٠١٥٠٢٢٧"})
    post({**GOOD, "color": "080150227-short"})
    cases.append(("GET", "/api/godmode-conversation", {"params": {"humanUsername": "H", "humanColor": "1",
                                                                   "sessionId": "*"}}, 400))
    cases.append(("GET", "/api/godmode-session/a*b", {"params": {"humanUsername": "H", "humanColor": "1"}}, 400))
    cases.append(("GET", "/api/godmode-sessions", {"params": {"humanUsername": "H", "humanColor": "1",
                                                               "aiUsername": "GodMode"}}, 400))
    # cursors and limits that are not integers
    for name in ("after", "limit"):
        for value in ("1e5", "0x10", "1.5", "٣", "9" * 31, "--1", " 1", "+1", "1_000", "\x00"):
            cases.append(("GET", "/api/comments", {"params": {name: value}}, 400))
            cases.append(("GET", "/api/conversation", {"params": {**PAIR, name: value}}, 400))
    cases.append(("GET", "/api/comments", {"params": {"type": "robot"}}, 400))
    cases.append(("GET", "/api/queue/pending", {"params": {"limit": "lots"}}, 400))
    # ids: ':' is how the clock hides in store:msgloc, so no id may contain it
    post({**GOOD, "id": ":clock"})
    post({**GOOD, "replyTo": ":clock"})
    cases.append(("PATCH", "/api/comments/:clock", {"json": {"eqScore": 1}}, 400))
    cases.append(("PATCH", "/api/comments/..%2F..%2Fetc", {"json": {"eqScore": 1}}, 404))  # no such route
    cases.append(("PATCH", "/api/comments/nosuchid", {"json": {"eqScore": 1}}, 404))
    cases.append(("PATCH", "/api/comments/seedq", {"json": {"eqScore": None}}, 400))
    cases.append(("POST", "/api/queue/claim", {"json": {"messageId": "seeda", "workerId": "w"}}, 409))
    cases.append(("POST", "/api/queue/claim", {"json": {"messageId": "nosuchid", "workerId": "w"}}, 404))
    cases.append(("POST", "/api/queue/complete", {"json": {"messageId": "seeda"}}, 409))
    cases.append(("POST", "/api/queue/claim-next", {"json": {"workerId": "w" * 129}}, 400))
    cases.append(("POST", "/api/queue/claim-next", {"json": {"workerId": 7}}, 400))
    post({"sessionKey": "godmode-session:s1", "sessionData": {"sessionId": "other"}}, 400, "/api/godmode-session")
    post({"sessionKey": "godmode:s1", "sessionData": {}}, 400, "/api/godmode-session")
    post({"sessionKey": "godmode-session:s1", "sessionData": {"messageIds": "x"}}, 400, "/api/godmode-session")
    # routes and methods that do not exist; purge without the token
    cases.append(("DELETE", "/api/comments", {}, 404))
    cases.append(("GET", "/api/nothing/here", {}, 404))
    cases.append(("POST", "/api/admin/purge", {}, 401))
    cases.append(("POST", "/api/admin/purge", {"headers": {"authorization": "Bearer wrong"}}, 403))
    return cases


def test_hand_written_hostile_requests_are_rejected_cleanly(http: httpx.Client, rdb: redis.Redis) -> None:
    started = time.monotonic()
    seed(http)
    before = fingerprint(rdb)
    failures = []
    cases = rejections()
    for method, path, kwargs, status in cases:
        r = http.request(method, path, **kwargs)
        body = r.json() if r.headers.get("content-type") == "application/json" else None
        if r.status_code != status or not isinstance(body, dict) or not isinstance(body.get("error"), str):
            failures.append(f"{method} {path} {str(kwargs)[:120]}: {r.status_code} {r.text[:160]!r} (wanted {status})")
    assert not failures, "\n".join(failures[:20])
    assert fingerprint(rdb) == before, "a rejected request wrote to the store"
    # The service is still whole: writes and reads work.
    assert http.post("/api/comments", json={**GOOD, "id": "stillfine"}).json()["status"] == "success"
    record("hostile: hand-written", **{"cases": len(cases), "5xx": 0, "seconds": round(time.monotonic() - started, 1)})


HOSTILE_BUT_VALID = [
    "\x00\x01\x1f control", "emoji 😀👍🏽", "rtl \u202eevil", "zero\u200bwidth", 'quotes " \\ \' `', "</script><b>",
    "%s %d %% lua %d+ ]] [[", "\u2028\u2029 separators", "{\"id\":\"fake\",\"timestamp\":1}", "x" * 8000,
]


def test_hostile_but_valid_text_round_trips_exactly(http: httpx.Client, rdb: redis.Redis) -> None:
    """Text and key parts are free text within their rules: stored and served back byte for byte."""
    sent = {}
    for n, text in enumerate(HOSTILE_BUT_VALID):
        user = ["Ωμέγα", "😀", "名前", "a b", "-", "x" * 64][n % 6]
        body = {"id": f"odd{n}", "text": text, "username": user, "color": "080150227", "domain": "a.b:8080",
                "botParams": {"ais": "Ünïcode:~!@#$%^&()"}}
        r = http.post("/api/comments", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["key"] == f"conv:{user}:080150227:Ünïcode:~!@#$%^&()"
        sent[body["id"]] = body
    page = http.get("/api/comments", params={"after": 0, "limit": 1000}).json()["messages"]
    got = {m["id"]: m for m in page}
    for mid, body in sent.items():
        assert got[mid]["text"] == body["text"] and got[mid]["username"] == body["username"]
    conv = http.get("/api/conversation", params={"humanUsername": "Ωμέγα", "humanColor": "080150227",
                                                 "aiUsername": "Ünïcode", "aiColor": "~!@#$%^&()"}).json()
    assert {m["id"] for m in conv} == {i for i, b in sent.items() if b["username"] == "Ωμέγα"}


def test_negative_and_huge_cursors_are_clamped(http: httpx.Client, rdb: redis.Redis) -> None:
    ids = [http.post("/api/comments", json={**GOOD, "id": f"c{i}"}).json()["id"] for i in range(5)]
    time.sleep(0.005)  # a poll holds back the current millisecond (see README: the poll)
    for after in ("-1", "-5", "-" + "9" * 30, "0", ""):
        assert [m["id"] for m in http.get("/api/comments", params={"after": after}).json()["messages"]] == ids
    assert http.get("/api/comments", params={"after": "9" * 30}).json()["messages"] == []
    for limit, count in (("0", 1), ("-7", 1), ("1", 1), ("9" * 30, 5)):
        page = http.get("/api/comments", params={"after": 0, "limit": limit}).json()
        assert len(page["messages"]) == count and page["hasMore"] is (count < 5), (limit, page)
    pair = {"humanUsername": "Human", "humanColor": "080150227", "aiUsername": "platform", "aiColor": "platform"}
    assert len(http.get("/api/conversation", params={**pair, "after": "-" + "9" * 30}).json()) == 5
    assert len(http.get("/api/conversation", params={**pair, "limit": "0"}).json()) == 1


def test_colliding_ids(pair_of_services: list[Service], http: httpx.Client, rdb: redis.Redis) -> None:
    """Same id, other text or another conversation of the same human: 'duplicate' with the original
    stamp and key, the original untouched. The same id from another human is stored apart, and
    by-id operations on it refuse to guess (409). Twenty racing posts of one id: one success."""
    first = http.post("/api/comments", json={**GOOD, "id": "same"}).json()
    for other in ({**GOOD, "id": "same", "text": "changed"},
                  {"id": "same", "text": "t", "username": "GodMode", "color": "171181104", "message-type": "AI",
                   "botParams": {"humanUsername": "Human", "humanColor": "080150227", "entity": "god-mode",
                                 "sessionId": "s1"}}):
        again = http.post("/api/comments", json=other).json()
        assert (again["status"], again["timestamp"], again["key"]) == ("duplicate", first["timestamp"], first["key"])
    (stored,) = rdb.zrange(first["key"], 0, -1)
    assert json.loads(stored)["text"] == "hi"
    elsewhere = http.post("/api/comments", json={**GOOD, "id": "same", "username": "Someone"}).json()
    assert elsewhere["status"] == "success" and elsewhere["key"] == "conv:Someone:080150227:platform:platform"
    patched = http.patch("/api/comments/same", json={"eqScore": 50})
    assert patched.status_code == 409 and "more than one conversation" in patched.json()["error"]
    assert json.loads(rdb.zrange(first["key"], 0, -1)[0])["eqScore"] == 0

    def racer(n: int) -> dict[str, Any]:
        svc = pair_of_services[n % 2]
        body = {**GOOD, "id": "race", "text": f"racer {n}", "username": "Racer"}
        reply: dict[str, Any] = httpx.post(svc.base_url + "/api/comments", json=body, timeout=20).json()
        return reply

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(racer, range(20)))
    assert sorted(a["status"] for a in answers) == ["duplicate"] * 19 + ["success"]
    assert len({(a["timestamp"], a["key"]) for a in answers}) == 1
    assert rdb.zcard(answers[0]["key"]) == 1 and stats(rdb)["messages"] == 3
