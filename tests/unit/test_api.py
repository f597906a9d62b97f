"""HTTP contract on fakeredis: statuses, JSON shapes, CORS, errors that name the field."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from starlette.testclient import TestClient

from app import keys
from app.config import Settings
from app.feed import encode_cursor
from app.main import create_app
from app.store import Store
from tests.helpers import ETERNAL, ETERNAL_COLOR, GODMODE, GODMODE_COLOR, HUMAN, HUMAN_COLOR, ai_reply, human, ok


def make_client(**settings: Any) -> TestClient:
    config = Settings(**settings)
    server = fakeredis.FakeServer()
    app = create_app(config, Store(fakeredis.FakeAsyncRedis(server=server), config))
    app.state.fake_server = server
    return TestClient(app)


def redis_of(client: TestClient) -> fakeredis.FakeRedis:
    """A plain client of the app's Redis, to act behind the service."""
    return fakeredis.FakeRedis(server=client.app.state.fake_server)  # type: ignore[attr-defined]


def poll(client: TestClient, **params: Any) -> dict[str, Any]:
    """GET /api/comments after the current millisecond (a poll holds back the millisecond it runs in)."""
    time.sleep(0.003)
    return ok(client.get("/api/comments", params=params))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client(admin_token="t0ken", client_version="2026.11.25") as c:
        yield c


def test_post_answers_id_timestamp_status_key(client: TestClient) -> None:
    body = human()
    r = client.post("/api/comments", json=body)
    assert r.status_code == 200
    assert r.json() == {"id": body["id"], "timestamp": r.json()["timestamp"], "status": "success",
                        "key": f"conv:{HUMAN}:{HUMAN_COLOR}:{ETERNAL}:{ETERNAL_COLOR}"}
    again = client.post("/api/comments", json=body).json()
    assert again["status"] == "duplicate" and again["timestamp"] == r.json()["timestamp"]


def test_poll_shape_with_version(client: TestClient) -> None:
    body = human()
    client.post("/api/comments", json=body)
    time.sleep(0.003)
    r = client.get("/api/comments", params={"after": 0, "limit": 200, "includeGodMode": "true"})
    data = r.json()
    assert r.headers["content-type"] == "application/json" and r.headers["access-control-allow-origin"] == "*"
    assert list(data) == ["messages", "nextAfter", "hasMore", "globalScore", "cursor", "reset", "version"]
    assert [m["id"] for m in data["messages"]] == [body["id"]]
    assert data["nextAfter"] == data["messages"][0]["timestamp"] and data["hasMore"] is False
    assert data["globalScore"] == 0 and data["version"] == "2026.11.25" and data["reset"] is False
    home = keys.partition_index(body["username"], body["color"], 12)  # the one partition with a message
    assert data["cursor"] == encode_cursor(tuple(data["nextAfter"] if i == home else 0 for i in range(12)))


def test_poll_cursor_resumes_where_the_page_ended(client: TestClient) -> None:
    sent = []
    for i in range(7):
        body = human(entity=None, user=f"Human{i}", text=f"m{i}")  # several humans: several partitions
        client.post("/api/comments", json=body)
        sent.append(body["id"])
        time.sleep(0.002)
    seen, cursor, pages = [], None, 0
    while True:
        data = poll(client, limit=3, after=0, **({"cursor": cursor} if cursor else {}))  # cursor wins over after
        seen += [m["id"] for m in data["messages"]]
        cursor, pages = data["cursor"], pages + 1
        assert data["reset"] is False
        if not data["hasMore"]:
            break
    assert seen == sent and pages == 3
    assert poll(client, cursor=cursor)["messages"] == []


def test_poll_reset_when_the_feed_no_longer_holds_the_position() -> None:
    with make_client(feed_window=4) as c:
        bodies = [human(entity=None, text=f"t{i}") for i in range(45)]
        for body in bodies:
            assert c.post("/api/comments", json=body).status_code == 200
        data = poll(c, after=0)
        assert data["reset"] is True and 4 <= len(data["messages"]) <= 36
        assert [m["id"] for m in data["messages"]] == [b["id"] for b in bodies][-len(data["messages"]):]
        assert poll(c, cursor=data["cursor"])["reset"] is False


def test_poll_cursor_of_another_partition_count_resets(client: TestClient) -> None:
    body = human(entity=None)
    client.post("/api/comments", json=body)
    data = poll(client, cursor=encode_cursor((0, 0, 0)))
    assert data["reset"] is True and [m["id"] for m in data["messages"]] == [body["id"]]


def test_poll_without_version_omits_it() -> None:
    with make_client() as c:
        assert "version" not in c.get("/api/comments").json()


def test_options_any_path_is_204_preflight(client: TestClient) -> None:
    r = client.options("/anything/at/all")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-methods"] == "GET, POST, PUT, DELETE, OPTIONS, PATCH"
    assert r.headers["access-control-allow-headers"] == "Content-Type, Authorization"
    assert r.headers["access-control-max-age"] == "86400"


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("DELETE", "/api/comments"), ("PUT", "/api/queue/claim")])
def test_unknown_route_or_method_is_404_json(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 404 and r.json() == {"error": "Not found"}
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"content": b"{not json"}, 400, "body"),
        ({"content": b"[1,2]"}, 400, "body"),
        ({"json": {"username": "Human", "color": "080150227"}}, 400, "text"),
        ({"json": {"text": "hi", "username": "Hu*man", "color": "080150227"}}, 400, "username"),
        ({"data": {"text": "hi"}}, 415, None),
    ],
)
def test_bad_post_is_clear_json_4xx(client: TestClient, kwargs: dict[str, Any], status: int, field: str | None) -> None:
    r = client.post("/api/comments", **kwargs)
    assert r.status_code == status and "error" in r.json()
    if field:
        assert r.json()["field"] == field and field in r.json()["error"]
    assert client.get("/api/admin/stats").json()["messages"] == 0


def test_body_over_limit_is_413() -> None:
    with make_client(max_body_bytes=2048) as c:
        r = c.post("/api/comments", content=b'{"text":"' + b"x" * 4000 + b'"}', headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["field"] == "body"


def test_message_over_key_limit_is_413_with_key_limit_size() -> None:
    with make_client(max_key_bytes=1024) as c:
        big = human(entity=None, text="x" * 2000)
        r = c.post("/api/comments", json=big)
        assert r.status_code == 413
        body = r.json()
        assert body["key"] == f"conv:{HUMAN}:{HUMAN_COLOR}:platform:platform" and body["limit"] == 1024
        assert body["size"] > 1024
        # A 413 leaves no idempotency record: the same id, smaller, is stored.
        assert ok(c.post("/api/comments", json={**big, "text": "small"}))["status"] == "success"


def test_backlog_413_names_the_in_flight_bytes() -> None:
    with make_client(max_key_bytes=2048) as c:
        for i in range(2):
            ok(c.post("/api/comments", json=human(text=f"{i} " + "p" * 500)))
        r = c.post("/api/comments", json=human(text="one too many " + "p" * 500))
        assert r.status_code == 413
        body = r.json()
        assert body["limit"] == 2048 and body["backlog"] > 1000 and body["size"] > body["backlog"]


@pytest.mark.parametrize("companion", ["feed", "ids", "meta", "sizes", "pending", "contexts"])
def test_post_with_a_companion_key_of_another_type_is_409_and_writes_nothing(client: TestClient,
                                                                             companion: str) -> None:
    redis = redis_of(client)
    redis.set(getattr(keys.partition_of(HUMAN, HUMAN_COLOR, 12), companion), "not mine")
    r = client.post("/api/comments", json=human())
    assert r.status_code == 409 and "error" in r.json()
    assert redis.keys("*") == [getattr(keys.partition_of(HUMAN, HUMAN_COLOR, 12), companion).encode()]


def test_keys_deleted_behind_the_service_are_never_a_5xx(client: TestClient) -> None:
    q = human()
    ok(client.post("/api/comments", json=q))
    redis = redis_of(client)
    redis.delete(*redis.keys("*"))  # every key: messages and every index
    assert client.patch(f"/api/comments/{q['id']}", json={"eqScore": 5}).status_code == 404
    assert client.post("/api/queue/complete", json={"messageId": q["id"]}).status_code == 404
    assert ok(client.post("/api/queue/claim-next", json={"workerId": "w"}))["success"] is False
    assert poll(client)["messages"] == []
    again = human()
    assert ok(client.post("/api/comments", json=again))["status"] == "success"
    assert [m["id"] for m in poll(client)["messages"]] == [again["id"]]
    assert ok(client.get("/api/admin/stats"))["messages"] == 1


@pytest.mark.parametrize("query", ["after=abc", "limit=x", "type=robot", "since=1.5", "cursor=abc", "cursor=c1.0",
                                   "cursor=c1.0.0.0.0.0.0.0.0.0.0.0.0.zzzzzzzzzzzz", "cursor=c9.0.0&after=5"])
def test_bad_poll_query_is_400(client: TestClient, query: str) -> None:
    r = client.get("/api/comments?" + query)
    assert r.status_code == 400 and r.json()["field"] in query and "error" in r.json()


def test_patch_score_and_unknown_id(client: TestClient) -> None:
    body = human()
    client.post("/api/comments", json=body)
    r = client.patch(f"/api/comments/{body['id']}", json={"eqScore": 72})
    assert r.status_code == 200 and r.json()["success"] is True
    assert r.json()["message"]["eqScore"] == 72 and r.json()["globalScore"] == 72
    assert client.patch("/api/comments/unknown1", json={"eqScore": 1}).status_code == 404
    assert client.patch(f"/api/comments/{body['id']}", json={"eqScore": "high"}).json()["field"] == "eqScore"


def test_claim_tokens_and_stale_complete(client: TestClient) -> None:
    body = human()
    client.post("/api/comments", json=body)
    claimed = ok(client.post("/api/queue/claim-next", json={"workerId": "w1"}))
    assert claimed["success"] is True and claimed["message"]["id"] == body["id"] and claimed["claimToken"]
    assert (claimed["totalPending"], claimed["remainingPending"]) == (1, 0)
    assert claimed["message"]["botParams"]["claimedBy"] == "w1"
    token = claimed["claimToken"]
    r = client.post("/api/queue/complete", json={"messageId": body["id"], "claimToken": "not-the-token"})
    assert r.status_code == 409 and r.json()["messageId"] == body["id"]
    bad = client.post("/api/queue/complete", json={"messageId": body["id"], "claimToken": "bad token!"})
    assert bad.status_code == 400 and bad.json()["field"] == "claimToken"
    assert ok(client.post("/api/queue/complete", json={"messageId": body["id"], "claimToken": token})) == {
        "success": True}
    assert client.post("/api/queue/complete", json={"messageId": body["id"], "claimToken": token}).status_code == 409


def test_queue_endpoints(client: TestClient) -> None:
    empty = client.post("/api/queue/claim-next", json={"workerId": "worker-1"}).json()
    assert empty == {"success": False, "message": None, "reason": "no_pending_messages",
                     "totalPending": 0, "remainingPending": 0}
    assert client.post("/api/queue/claim-next", json={}).status_code == 400
    body = human()
    client.post("/api/comments", json=body)
    pending = client.get("/api/queue/pending?limit=5").json()
    assert [m["id"] for m in pending["pending"]] == [body["id"]] and pending["platformOnly"] == []
    assert pending["kvStats"]["pending"] == 1 and pending["pending"][0]["context"] == body["context"]
    claimed = client.post("/api/queue/claim", json={"messageId": body["id"], "workerId": "w"})
    assert claimed.status_code == 200 and claimed.json()["message"]["botParams"]["status"] == "processing"
    assert set(claimed.json()) == {"success", "message", "claimToken"} and claimed.json()["claimToken"]
    assert client.post("/api/queue/claim", json={"messageId": body["id"], "workerId": "w2"}).status_code == 409
    assert client.post("/api/queue/claim", json={"messageId": "nope", "workerId": "w2"}).status_code == 404
    assert client.post("/api/queue/complete", json={"messageId": body["id"]}).json() == {"success": True}
    assert client.post("/api/queue/complete", json={"messageId": body["id"]}).status_code == 409
    assert client.post("/api/queue/complete", json={"messageId": "nope"}).status_code == 404


def test_conversation_requires_pair_and_rejects_globs(client: TestClient) -> None:
    r = client.get("/api/conversation", params={"humanUsername": "*", "humanColor": "*", "aiUsername": "*", "aiColor": "*"})
    assert r.status_code == 400 and r.json()["field"] == "humanUsername"
    r = client.get("/api/conversation", params={"humanUsername": "Human", "humanColor": "1"})
    assert r.status_code == 400 and r.json()["field"] == "aiUsername"


def test_conversation_is_bare_array_oldest_first_last_limit(client: TestClient) -> None:
    q = human()
    client.post("/api/comments", json=q)
    ids = [q["id"]]
    for i in range(4):
        reply = ai_reply(q["id"], f"a{i}")
        client.post("/api/comments", json=reply)
        ids.append(reply["id"])
    pair = {"humanUsername": HUMAN, "humanColor": HUMAN_COLOR, "aiUsername": ETERNAL, "aiColor": ETERNAL_COLOR}
    time.sleep(0.003)  # the current millisecond is held back
    assert [m["id"] for m in client.get("/api/conversation", params=pair).json()] == ids
    assert [m["id"] for m in client.get("/api/conversation", params={**pair, "limit": 2}).json()] == ids[-2:]


def test_godmode_session_endpoints_404_when_missing(client: TestClient) -> None:
    q = {"humanUsername": HUMAN, "humanColor": HUMAN_COLOR}
    assert client.get("/api/godmode-session/nothing-here", params=q).status_code == 404
    assert client.get("/api/godmode-conversation", params={**q, "sessionId": "x"}).status_code == 404
    assert client.get("/api/godmode-conversation", params=q).json()["field"] == "sessionId"
    assert client.get("/api/godmode-sessions", params={**q, "aiUsername": GODMODE, "aiColor": GODMODE_COLOR}).json() == {
        "sessions": [], "total": 0, "cursor": None}


def test_godmode_sessions_listing_pages_with_limit_and_cursor(client: TestClient) -> None:
    for i in range(5):
        client.post("/api/comments", json=ai_reply("q-none", f"status {i}", user=GODMODE, color=GODMODE_COLOR,
                                                   entity="god-mode", session_id=f"s-{i}"))
    q = {"humanUsername": HUMAN, "humanColor": HUMAN_COLOR}
    seen, cursor = [], None
    while True:
        page = ok(client.get("/api/godmode-sessions", params={**q, "limit": 2, **({"cursor": cursor} if cursor else {})}))
        assert page["total"] == 5 and len(page["sessions"]) <= 2
        seen += [s["sessionId"] for s in page["sessions"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == ["s-4", "s-3", "s-2", "s-1", "s-0"]
    assert len(ok(client.get("/api/godmode-sessions", params={**q, "limit": 100000}))["sessions"]) == 5  # clamped
    bad = client.get("/api/godmode-sessions", params={**q, "cursor": "s1.bm9wZQ"})
    assert bad.status_code == 400 and bad.json()["field"] == "cursor"
    one = ok(client.get("/api/godmode-session/s-3", params=q))
    assert one["truncated"] is False and one["messageCount"] == 1 and one["session"]["aiColor"] == GODMODE_COLOR


def test_godmode_session_metadata(client: TestClient) -> None:
    r = client.post("/api/godmode-session", json={"sessionKey": "godmode-session:1763027011418-1mmzaea",
                                                  "sessionData": {"sessionId": "1763027011418-1mmzaea", "messageIds": ["a"]}})
    assert r.json() == {"success": True, "sessionKey": "godmode-session:1763027011418-1mmzaea", "messageCount": 1}
    r = client.post("/api/godmode-session", json={"sessionKey": "godmode-session:x", "sessionData": {"big": "x" * 70000}})
    assert r.status_code == 413


def test_admin_stats_counts(client: TestClient) -> None:
    q = human()
    client.post("/api/comments", json=q)
    client.post("/api/comments", json=ai_reply(q["id"], eqScore=4))
    client.post("/api/comments", json=human(entity=None, user="Somebody"))
    stats = ok(client.get("/api/admin/stats"))
    assert stats["keys"] == {"conv": 2, "godmode": 0} and stats["messages"] == 3 and stats["bytes"] > 0
    assert (stats["pending"], stats["processing"], stats["globalScore"]) == (1, 0, 4)
    assert set(stats) == {"keys", "messages", "bytes", "pending", "processing", "globalScore"}


def test_admin_purge_needs_bearer_token(client: TestClient) -> None:
    client.post("/api/comments", json=human())
    assert client.post("/api/admin/purge").status_code == 401
    assert client.post("/api/admin/purge", headers={"Authorization": "Bearer wrong"}).status_code == 403
    r = client.post("/api/admin/purge", headers={"Authorization": "Bearer t0ken"})
    assert r.status_code == 200 and r.json()["success"] is True
    assert client.get("/api/admin/stats").json()["messages"] == 0


def test_admin_purge_disabled_without_token() -> None:
    with make_client() as c:
        r = c.post("/api/admin/purge", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "disabled" in r.json()["error"]


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["redis"] is True
