"""Settings: the only reader of the environment. Every bad variable is reported at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from . import keys


class ConfigError(ValueError):
    """One or more environment variables are missing or malformed; `problems` lists each."""

    def __init__(self, problems: str | list[str]) -> None:
        if isinstance(problems, str):  # store.py words its one problem with the prefix already
            problems = [problems.removeprefix("invalid configuration: ")]
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    redis_mode: str = "standalone"  # or "cluster": REDIS_URL names any node of a Redis Cluster
    redis_wait_replicas: int = 0  # replicas that must acknowledge each write (WAIT) before its 200
    max_key_bytes: int = 131072  # the old store's per-value ceiling: one session must fit in it
    conv_window: int = 300  # newest messages a conv: key keeps
    partitions: int = 12  # splits evenly over 1, 2, 3, 4 or 6 cluster masters; each poll reads one feed per partition
    feed_window: int = 4000  # copies per partition feed: 48k messages, minutes of God Mode traffic
    idempotency_ttl_s: int = 86_400  # how long a trimmed message's id still answers "duplicate"
    claim_timeout_s: int = 900  # a God Mode session keeps a worker busy for minutes
    max_body_bytes: int = 2 * 1024 * 1024  # context is up to 200 displayed messages of up to 8 KB
    max_session_meta_bytes: int = 64 * 1024
    redis_max_connections: int = 256  # per worker; bounds sockets under a burst
    redis_timeout_s: float = 5.0
    default_domain: str = "saywhatwant.app"
    client_version: str | None = None
    admin_token: str | None = field(default=None, repr=False)
    log_level: str = "info"  # of every log record, gunicorn's and the access line included

    @property
    def cluster(self) -> bool:
        return self.redis_mode == "cluster"

    @property
    def wait_ms(self) -> int:
        """How long a write waits for its replicas: half the round trip's deadline."""
        return max(1, int(self.redis_timeout_s * 500))


_INT_VARS = {
    "MAX_KEY_BYTES": ("max_key_bytes", 1024),
    "CONV_WINDOW": ("conv_window", 1),
    "PARTITIONS": ("partitions", 1),
    "FEED_WINDOW": ("feed_window", 1),
    "IDEMPOTENCY_TTL_S": ("idempotency_ttl_s", 1),
    "CLAIM_TIMEOUT_S": ("claim_timeout_s", 1),
    "MAX_BODY_BYTES": ("max_body_bytes", 1024),
    "MAX_SESSION_META_BYTES": ("max_session_meta_bytes", 1024),
    "REDIS_MAX_CONNECTIONS": ("redis_max_connections", 1),
    "REDIS_WAIT_REPLICAS": ("redis_wait_replicas", 0),
}
REDIS_MODES = ("standalone", "cluster")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    errors: list[str] = []

    url = env.get("REDIS_URL")
    if url is not None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            errors.append("REDIS_URL must start with redis://, rediss:// or unix://")
        values["redis_url"] = url

    mode = env.get("REDIS_MODE")
    if mode:
        if mode not in REDIS_MODES:
            errors.append(f"REDIS_MODE must be one of {', '.join(REDIS_MODES)}, got {mode!r}")
        elif mode == "cluster" and url is not None and not _cluster_url(url):
            errors.append("REDIS_URL must be redis://host:port or rediss://host:port (database 0) "
                          "with REDIS_MODE=cluster")
        values["redis_mode"] = mode

    for var, (name, minimum) in _INT_VARS.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            number = int(raw)
        except ValueError:
            errors.append(f"{var} must be an integer, got {raw!r}")
            continue
        if number < minimum:
            errors.append(f"{var} must be >= {minimum}, got {number}")
            continue
        values[name] = number

    raw_timeout = env.get("REDIS_TIMEOUT_S")
    if raw_timeout:
        try:
            timeout = float(raw_timeout)
            if not timeout > 0:
                raise ValueError
            values["redis_timeout_s"] = timeout
        except ValueError:
            errors.append(f"REDIS_TIMEOUT_S must be a positive number, got {raw_timeout!r}")

    for var, name in (("CLIENT_VERSION", "client_version"), ("ADMIN_TOKEN", "admin_token")):
        if env.get(var):
            values[name] = env[var]
    level = env.get("LOG_LEVEL")
    if level:
        if level.lower() not in LOG_LEVELS:
            errors.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        values["log_level"] = level.lower()
    if env.get("DEFAULT_DOMAIN"):
        values["default_domain"] = env["DEFAULT_DOMAIN"]
        if not keys.DOMAIN_RE.fullmatch(env["DEFAULT_DOMAIN"]):  # it is written into stored messages
            errors.append(f"DEFAULT_DOMAIN must be a host name (letters, digits, '.', '-', ':', '_'), "
                          f"got {env['DEFAULT_DOMAIN']!r}")

    if int(values.get("partitions", 1)) > keys.MAX_PARTITIONS:  # type: ignore[call-overload]
        errors.append(f"PARTITIONS must be <= {keys.MAX_PARTITIONS}, got {values['partitions']}")
    meta = values.get("max_session_meta_bytes", Settings.max_session_meta_bytes)
    if meta > values.get("max_body_bytes", Settings.max_body_bytes):  # type: ignore[operator]
        errors.append("MAX_SESSION_META_BYTES must not exceed MAX_BODY_BYTES")
    if errors:
        raise ConfigError(errors)
    return Settings(**values)  # type: ignore[arg-type]


def _cluster_url(url: str) -> bool:
    """A cluster has one database and no unix sockets."""
    parts = urlsplit(url)
    return parts.scheme in ("redis", "rediss") and parts.path in ("", "/", "/0") and bool(parts.hostname)


@dataclass(frozen=True)
class ServerSettings:
    """What only gunicorn.conf.py reads: the bind, the workers, the control socket."""

    host: str = "0.0.0.0"  # every interface: a container's port is only reachable this way
    port: int = 8080
    workers: int = 1
    control_socket: str | None = None  # gunicorn's gunicornc socket; None = no socket


def load_server_settings(environ: Mapping[str, str] | None = None, cpu_count: int = 1) -> ServerSettings:
    env = os.environ if environ is None else environ
    values: dict[str, object] = {"workers": cpu_count}
    errors: list[str] = []
    if env.get("HOST"):
        values["host"] = env["HOST"]
    for var, name, low, high in (("PORT", "port", 1, 65535), ("WEB_CONCURRENCY", "workers", 1, 256)):
        raw = env.get(var)
        if not raw:
            continue
        if not raw.isdigit() or not low <= int(raw) <= high:
            errors.append(f"{var} must be an integer from {low} to {high}, got {raw!r}")
            continue
        values[name] = int(raw)
    if env.get("CONTROL_SOCKET"):
        values["control_socket"] = env["CONTROL_SOCKET"]
    if errors:
        raise ConfigError(errors)
    return ServerSettings(**values)  # type: ignore[arg-type]


def load_all(environ: Mapping[str, str] | None = None, cpu_count: int = 1) -> tuple[ServerSettings, Settings]:
    """Both halves, every problem of both reported together."""
    problems: list[str] = []
    server = settings = None
    try:
        server = load_server_settings(environ, cpu_count)
    except ConfigError as exc:
        problems += exc.problems
    try:
        settings = load_settings(environ)
    except ConfigError as exc:
        problems += exc.problems
    if problems or server is None or settings is None:
        raise ConfigError(problems)
    return server, settings
