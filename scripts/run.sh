#!/usr/bin/env bash
# Serve the API with gunicorn. If nothing answers at $REDIS_URL and it points at this machine,
# start a local redis-server with its data (AOF on) under .redis/ so `make run` needs no set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export PORT=${PORT:-8080}

if ! "$PY" - <<'PYEOF'
import os, sys, redis
try:
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=1).ping()
except Exception:
    sys.exit(1)
PYEOF
then
  read -r host port <<<"$("$PY" -c 'import os,urllib.parse as u; p=u.urlparse(os.environ["REDIS_URL"]); print(p.hostname or "127.0.0.1", p.port or 6379)')"
  if [[ "$host" != "127.0.0.1" && "$host" != "localhost" ]]; then
    echo "No Redis answers at $REDIS_URL. Start it, or point REDIS_URL at a running Redis." >&2
    exit 1
  fi
  if ! command -v redis-server >/dev/null; then
    echo "No Redis answers at $REDIS_URL and redis-server is not installed." >&2
    echo "Install it (apt-get install redis-server) or set REDIS_URL to a running Redis." >&2
    exit 1
  fi
  mkdir -p .redis
  echo "Starting a local redis-server on port $port (data in .redis/, appendonly yes)" >&2
  redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/.redis" --appendonly yes \
    --daemonize yes --logfile "$PWD/.redis/redis.log" --pidfile "$PWD/.redis/redis.pid"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

exec "$PY" -m gunicorn -c gunicorn.conf.py app.asgi:app
