"""create_app(settings): routes, CORS, error map, and a Redis client per worker process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from . import api
from .config import Settings, load_settings
from .store import Store, open_store


def _configure_logging() -> None:
    logger = logging.getLogger("godmode_store")
    if not logger.handlers:  # same line format as gunicorn's own log
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def create_app(settings: Settings | None = None, store: Store | None = None) -> Starlette:
    """The app; pass `store` to run it on a client of your own (tests use fakeredis)."""
    settings = settings or load_settings()
    _configure_logging()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if store is not None:
            app.state.store = store
            yield
            return
        # Opened after the fork, so every worker has its own connection pool.
        async with open_store(settings) as opened:
            app.state.store = opened
            yield

    app = Starlette(
        routes=api.routes(),
        middleware=[Middleware(api.CORS)],
        exception_handlers=api.ERROR_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
