"""create_app(settings): routes, CORS, error map, and a Redis client per worker process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from . import api
from .config import Settings, load_settings
from .store import open_store


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Opened after the fork, so every worker has its own connection pool.
        async with open_store(settings) as store:
            app.state.store = store
            yield

    app = Starlette(
        routes=api.routes(settings),
        middleware=[Middleware(api.CORS)],
        exception_handlers=api.ERROR_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
