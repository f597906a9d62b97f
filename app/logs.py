"""Logs: one JSON line per record, the same shape for gunicorn's, uvicorn's and the app's records and
for the access line written once per request. structlog renders all of them; LOG_LEVEL governs all.

    {"ts":"2026-11-25T20:21:00.123456Z","level":"info","logger":"access","pid":4242,"event":"request",
     "method":"POST","route":"/api/comments","status":200,"duration_ms":1.234,"request_id":"9f3c..."}
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from typing import Any

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

ACCESS_LOGGER = "access"
_HANDLER = "godmode_store.stderr"  # the app logger's own handler, outside gunicorn
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}


def _pid(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    event["pid"] = os.getpid()
    return event


_FIRST = ("ts", "level", "logger", "event")


def _dumps(event: EventDict, **_: Any) -> str:
    ordered = {name: event.pop(name) for name in _FIRST if name in event}  # a line reads left to right
    ordered.update(event)
    return msgspec.json.encode(ordered, enc_hook=repr).decode()


_STAMP = structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")
# Applied to every record; a stdlib record's message becomes `event`, its logger's name `logger`.
_SHARED: list[Processor] = [structlog.contextvars.merge_contextvars, _STAMP, structlog.stdlib.add_log_level,
                            _pid]
_RENDER = structlog.processors.JSONRenderer(serializer=_dumps)


def level_number(level: str) -> int:
    return _LEVELS[level.lower()]


def formatter() -> logging.Formatter:
    """The stdlib side: a record rendered like a structlog event."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_SHARED],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, _RENDER],
    )


def dict_config(level: str) -> dict[str, Any]:
    """logging.config.dictConfig for the whole process: gunicorn.conf.py hands it to gunicorn
    (logconfig_dict), so its master and workers log through the same JSON formatter."""
    name = level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": formatter}},
        "handlers": {"console": handler, "error_console": handler},  # gunicorn's defaults name both
        "root": {"level": name, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": name, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": name, "handlers": ["console"], "propagate": False},
            "godmode_store": {"level": name, "handlers": [], "propagate": True},
        },
    }


def configure(level: str) -> None:
    """Set up the access logger (structlog, straight to stderr) and, outside gunicorn (the CLI,
    tests), the stdlib handler; under gunicorn that came from dict_config already."""
    structlog.configure(
        processors=[*_SHARED, _RENDER],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,  # tests reconfigure; a bound logger is made once per process anyway
    )
    app_logger = logging.getLogger("godmode_store")
    under_gunicorn = any(isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
                         for h in logging.getLogger().handlers)
    if not under_gunicorn:
        handler = next((h for h in app_logger.handlers if h.get_name() == _HANDLER), None)
        if handler is None:
            handler = logging.StreamHandler(sys.stderr)
            handler.set_name(_HANDLER)
            handler.setFormatter(formatter())
            app_logger.addHandler(handler)
        assert isinstance(handler, logging.StreamHandler)
        handler.stream = sys.stderr  # the current one (tests swap it; setStream would flush a closed one)
    app_logger.setLevel(level_number(level))


def access_logger() -> Any:
    return structlog.get_logger(ACCESS_LOGGER).bind(logger=ACCESS_LOGGER)
