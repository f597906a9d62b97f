"""Gunicorn worker class: uvicorn on uvloop + httptools, access log off (it halves throughput)."""

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False, "lifespan": "on"}
