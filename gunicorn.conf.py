"""Gunicorn settings, read from the environment so `make run` and deploy/ share them."""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
worker_class = "app.worker.Worker"
keepalive = 75  # longer than typical load-balancer idle timeouts, so they close first
graceful_timeout = 20
timeout = 30
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
