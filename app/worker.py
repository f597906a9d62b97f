"""Gunicorn worker class: uvicorn on uvloop + httptools, access log off (it halves throughput)."""

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "uvloop", "http": "httptools", "access_log": False, "lifespan": "on"}

    def init_process(self) -> None:
        # Workers aged 1..N are the first ones; a later one replaces a worker that exited (killed,
        # crashed, recycled). gunicorn stops the whole service when a worker fails to boot, so a
        # replacement must not fail for Redis being down: app.main lets it start without a PING.
        if self.age > self.cfg.workers:
            from . import main

            main.REPLACEMENT_WORKER = True
        super().init_process()
