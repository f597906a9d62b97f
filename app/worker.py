"""Gunicorn worker class: uvicorn on uvloop + httptools, access log off (it halves throughput)."""

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "uvloop", "http": "httptools", "access_log": False, "lifespan": "on"}
