"""Request ids, the access line and LOG_LEVEL, settings of the server half; in-process on fakeredis."""

from __future__ import annotations

import json
import logging

import fakeredis
import pytest
from starlette.testclient import TestClient

from app import metrics
from app.config import ConfigError, Settings, load_all, load_server_settings
from app.main import create_app
from app.store import Store


def client(level: str) -> TestClient:
    settings = Settings(log_level=level)
    store = Store(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), settings)
    return TestClient(create_app(settings, store))


def access_lines(err: str) -> list[dict[str, object]]:
    return [entry for entry in map(json.loads, filter(None, err.splitlines())) if entry.get("logger") == "access"]


def test_access_line_follows_log_level_and_carries_the_request_id(capfd: pytest.CaptureFixture[str]) -> None:
    with client("info") as c:
        r = c.get("/healthz", headers={"X-Request-ID": "abc.123"})
    assert r.headers["x-request-id"] == "abc.123"
    [line] = access_lines(capfd.readouterr().err)
    assert line["request_id"] == "abc.123" and line["route"] == "/healthz" and line["status"] == 200
    assert list(line)[:4] == ["ts", "level", "logger", "event"]
    with client("warning") as c:
        assert c.get("/healthz").headers["x-request-id"]
    assert access_lines(capfd.readouterr().err) == []


def test_app_records_are_json_lines_of_the_same_shape(capfd: pytest.CaptureFixture[str]) -> None:
    with client("info") as c:
        logging.getLogger("godmode_store").warning("inside")  # outside a request: no id
        c.get("/api/comments?after=0", headers={"X-Request-ID": "r-1"})
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x]
    inside = next(x for x in lines if x["event"] == "inside")
    assert inside["logger"] == "godmode_store" and inside["level"] == "warning" and "request_id" not in inside


def test_metrics_endpoint_in_one_process() -> None:
    before = metrics.APPENDS.labels("conv")._value.get()
    with client("warning") as c:
        c.post("/api/comments", json={"text": "hi", "username": "U", "color": "080150227"})
        text = c.get("/metrics").text
    assert metrics.APPENDS.labels("conv")._value.get() == before + 1
    assert 'godmode_queue_depth{state="pending"} 0.0' in text and "godmode_redis_up 1.0" in text


def test_server_settings_are_checked_with_the_app_settings() -> None:
    with pytest.raises(ConfigError) as err:
        load_all({"WEB_CONCURRENCY": "abc", "PORT": "0", "LOG_LEVEL": "loud", "CONV_WINDOW": "0"})
    assert [p.split()[0] for p in err.value.problems] == ["PORT", "WEB_CONCURRENCY", "CONV_WINDOW", "LOG_LEVEL"]
    server = load_server_settings({"HOST": "127.0.0.1", "PORT": "9000", "CONTROL_SOCKET": "/run/x.ctl"}, cpu_count=3)
    assert (server.host, server.port, server.workers, server.control_socket) == ("127.0.0.1", 9000, 3, "/run/x.ctl")
    assert load_server_settings({}).control_socket is None and load_server_settings({}).host == "0.0.0.0"
