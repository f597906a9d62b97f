"""Regressions found by the reliability suite's hostile-input cases (tests/reliability)."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from starlette.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.store import Store


@pytest.fixture
def client() -> Iterator[TestClient]:
    config = Settings()
    store = Store(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), config)
    with TestClient(create_app(config, store), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("body", [
    b'{"text":"\xff","username":"U","color":"080150227"}',  # invalid UTF-8: was UnicodeDecodeError -> 500
    b"[" * 5000 + b"]" * 5000,  # nesting past msgspec's limit: was RecursionError -> 500
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
])
@pytest.mark.parametrize("path,method", [("/api/comments", "POST"), ("/api/comments/abc", "PATCH"),
                                         ("/api/queue/claim-next", "POST")])
def test_undecodable_bodies_are_400_not_500(client: TestClient, body: bytes, path: str, method: str) -> None:
    r = client.request(method, path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "body"
    assert client.get("/api/admin/stats").json()["messages"] == 0


def test_colors_and_cursors_take_ascii_digits_only(client: TestClient) -> None:
    # Python's \d matches Arabic-Indic and other Unicode digits; the contract is RRRGGGBBB.
    r = client.post("/api/comments", json={"text": "x", "username": "U", "color": "٠٨٠١٥٠٢٢٧"})
    assert r.status_code == 400 and r.json()["field"] == "color"
    assert client.get("/api/comments", params={"after": "٣"}).status_code == 400
    assert client.get("/api/comments", params={"limit": "١٠"}).status_code == 400
    assert client.post("/api/comments", json={"text": "x", "username": "U", "color": "080150227"}).status_code == 200


async def test_client_gone_mid_body_is_not_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    config = Settings()
    app = create_app(config, Store(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), config))
    incoming = [{"type": "http.request", "body": b'{"text":"hal', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return incoming.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/comments", "raw_path": b"/api/comments", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "app": app}
    with caplog.at_level("ERROR"):
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("cursor", [
    "c1.٣.٣",  # Unicode digits: int() takes them, the cursor grammar does not
    "c1." + "9" * 5000,
    "c1.0." + ".".join(["1"] * 5000),  # more offsets than any partition count
    "c1.0.0\x00",
    "c1.-1.-1",
])
def test_hostile_cursors_are_400_not_500(client: TestClient, cursor: str) -> None:
    r = client.get("/api/comments", params={"cursor": cursor})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "cursor"


@pytest.mark.parametrize("cursor", ["c1.-zzzzzzzzzz.0", "c1.0.zzzzzzzzzzz"])  # below -1, past 2**53
def test_out_of_range_cursor_positions_are_clamped_like_after(client: TestClient, cursor: str) -> None:
    r = client.get("/api/comments", params={"cursor": cursor})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("token", [5, ["t"], {"t": 1}, "has space", "x" * 65, True])
def test_claim_token_of_another_shape_is_400_not_500(client: TestClient, token: object) -> None:
    r = client.post("/api/queue/complete", json={"messageId": "m1", "claimToken": token})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "claimToken"
