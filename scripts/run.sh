#!/usr/bin/env bash
# `make run`: check the settings, make sure a Redis answers, serve with gunicorn.
# A local redis-server is started only when nothing answers at $REDIS_URL, the URL is redis:// on
# this machine and redis-server is installed; it is stopped again when this script ends (Ctrl-C,
# SIGTERM or gunicorn exiting), and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export PORT=${PORT:-8080}
REDIS_DIR=${REDIS_DIR:-$PWD/.redis}  # the local redis-server's data (AOF) and log

"$PY" -m app.serve --check  # every bad setting listed at once, before anything starts

redis_answers() {
  "$PY" - <<'PYEOF'
import os, sys, redis
try:
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=1, socket_timeout=1).ping()
except Exception:
    sys.exit(1)
PYEOF
}

redis_pid=""
gunicorn_pid=""
stop_all() {
  trap - EXIT INT TERM
  if [[ -n $gunicorn_pid ]] && kill -0 "$gunicorn_pid" 2>/dev/null; then
    kill -TERM "$gunicorn_pid" 2>/dev/null || true  # graceful: in-flight requests finish
    wait "$gunicorn_pid" 2>/dev/null || true
  fi
  if [[ -n $redis_pid ]]; then
    kill -TERM "$redis_pid" 2>/dev/null || true  # redis-server writes its AOF and exits
    for _ in $(seq 100); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
    echo "Stopped the local redis-server (pid $redis_pid); its data stays in $REDIS_DIR" >&2
  fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! redis_answers; then
  read -r scheme host port <<<"$("$PY" -c 'import os,urllib.parse as u; p=u.urlparse(os.environ["REDIS_URL"]); print(p.scheme, p.hostname or "-", p.port or 6379)')"
  if [[ $scheme == unix ]]; then
    echo "No Redis answers at $REDIS_URL (unix socket). Start the Redis that owns that socket, or point REDIS_URL at a running Redis." >&2
    exit 1
  fi
  if [[ $scheme != redis || ( $host != 127.0.0.1 && $host != localhost ) ]]; then
    echo "No Redis answers at $REDIS_URL. Start it, or point REDIS_URL at a running Redis." >&2
    exit 1
  fi
  if ! command -v redis-server >/dev/null; then
    echo "No Redis answers at $REDIS_URL and redis-server is not installed." >&2
    echo "Install it (apt-get install redis-server) or set REDIS_URL to a running Redis." >&2
    exit 1
  fi
  if "$PY" -c 'import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$port"; then
    echo "Port $port is taken by something that does not answer as Redis at $REDIS_URL; free it or change REDIS_URL." >&2
    exit 1
  fi
  mkdir -p "$REDIS_DIR"
  echo "Starting a local redis-server on 127.0.0.1:$port (data in $REDIS_DIR, appendonly yes); it stops when make run ends" >&2
  redis-server --port "$port" --bind 127.0.0.1 --dir "$REDIS_DIR" --appendonly yes \
    --daemonize yes --logfile "$REDIS_DIR/redis.log" --pidfile "$REDIS_DIR/redis.pid"
  for _ in $(seq 100); do [[ -s $REDIS_DIR/redis.pid ]] && break; sleep 0.05; done
  redis_pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null || true)
  for _ in $(seq 100); do redis_answers && break; sleep 0.1; done
  if ! redis_answers; then
    echo "The local redis-server did not answer within 10 s; see $REDIS_DIR/redis.log" >&2
    exit 1
  fi
fi

# Not exec: this shell stays to stop the local Redis after gunicorn. gunicorn.conf.py +
# app.asgi:app, as in deploy/Dockerfile (app.serve execs gunicorn -c gunicorn.conf.py app.asgi:app).
"$PY" -m app.serve &
gunicorn_pid=$!
set +e
wait "$gunicorn_pid"
status=$?
gunicorn_pid=""
exit "$status"
