"""create_app(settings): routes, CORS, error map, and a Redis client per worker process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from . import api, logs, metrics
from .config import Settings, load_settings
from .middleware import Observe
from .store import Store, open_store

# Set by app.worker in a worker that replaces one that exited; the first workers keep checking
# Redis at boot, so a wrong REDIS_URL still fails the start.
REPLACEMENT_WORKER = False


def create_app(settings: Settings | None = None, store: Store | None = None) -> Starlette:
    """The app; pass `store` to run it on a client of your own (tests use fakeredis)."""
    settings = settings or load_settings()
    logs.configure(settings.log_level)
    Store.observer = metrics.observe_script

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if store is not None:
            app.state.store = store
            yield
            return
        if REPLACEMENT_WORKER:
            # Redis being down may be what killed its predecessor: come up anyway and answer 503
            # until Redis is back. Failing to boot here would make gunicorn stop every worker.
            lazy = Store.from_settings(settings)  # connects on first use
            app.state.store = lazy
            try:
                yield
            finally:
                await lazy.close()
            return
        # Opened after the fork, so every worker has its own connection pool.
        async with open_store(settings) as opened:
            app.state.store = opened
            yield

    app = Starlette(
        routes=api.routes(),
        middleware=[Middleware(Observe), Middleware(api.CORS)],
        exception_handlers=api.ERROR_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
