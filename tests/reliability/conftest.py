"""Reliability suite: a fast part in every `make test`, a soak part behind `--soak` (`make soak`).

Tests marked `soak` are skipped unless pytest runs with --soak. Every test here runs its own
redis-server (tests/redis_server.py) and gunicorn masters (tests/service.py) on loopback ports,
and every load loop is bounded in count and in time. The figures each test records are printed
as a markdown table at the end of the run (paste into tests/reliability/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import RedisServer
from tests.reliability.harness import FIGURES, figures_markdown, redis_client, services
from tests.service import Service

ADMIN_TOKEN = "reliability-admin-token"  # set, so purge answers 401/403 (not "disabled"); never sent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the long reliability tests (marked soak); bounded to a few minutes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long reliability test, runs only with --soak (make soak)")


def _soak_enabled(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("--soak"))
    except ValueError:  # option not registered: this conftest was not loaded at start-up
        return False


SOAK_TIMEOUT_S = 600  # a soak test bounds its own load (200 s at most) and checks afterwards; the suite's 120 s is for the rest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _soak_enabled(config):
        for item in items:
            if "soak" in item.keywords:
                item.add_marker(pytest.mark.timeout(SOAK_TIMEOUT_S))
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak (make soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.write_sep("-", "reliability figures")
        terminalreporter.write_line(figures_markdown())


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> Iterator[bool]:
    yield _soak_enabled(request.config)


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def pair_of_services(shared_redis: RedisServer) -> Iterator[list[Service]]:
    """Two gunicorn masters, 2 workers each, on one Redis: what two replicas behind a balancer see.
    A small FEED_WINDOW would reset followers; the default holds everything these tests write."""
    with services(shared_redis.url, 2, workers=2, ADMIN_TOKEN=ADMIN_TOKEN) as svcs:
        yield svcs


@pytest.fixture
def rdb(shared_redis: RedisServer) -> redis.Redis:
    client = redis_client(shared_redis)
    client.flushdb()  # our own server: nothing here was created by anyone else
    return client
