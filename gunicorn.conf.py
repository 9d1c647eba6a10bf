"""Gunicorn configuration of the API: `gunicorn -c gunicorn.conf.py api.main:app`.

Gunicorn reads this file in the master process, before any worker exists. Two things are done
here for that reason, rather than in the app:
- PROMETHEUS_MULTIPROC_DIR: a fresh, empty folder where every worker writes its metrics, so that
  /metrics answers for all workers whichever one serves the scrape (api.system.metrics);
- in development, the JWT signing key when none is configured (see below).

Environment: API_HOST (127.0.0.1), PORT (8000), WEB_CONCURRENCY (2 workers), LOG_LEVEL (INFO),
STOCKING_ENV, JWT_SECRET_KEY. Any other Gunicorn setting can be overridden without editing this
file through Gunicorn's own GUNICORN_CMD_ARGS, e.g. GUNICORN_CMD_ARGS="--graceful-timeout 30
--keep-alive 75 --access-logfile -". docs/OPERATIONS.md explains each choice.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# Gunicorn puts its working directory on sys.path only after reading this file, and the
# `gunicorn` command's own folder is no help: the app's packages are found next to this file.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from api.auth.signing_key import development_key_for_children

wsgi_app = "api.main:app"
# Uvicorn's Gunicorn worker, from the maintained `uvicorn-worker` package (the one inside
# uvicorn itself is deprecated), with a limit on the request head: MAX_REQUEST_HEADER_BYTES
# (api/server.py; Gunicorn's own limit_request_* settings do not apply to Uvicorn workers).
worker_class = "api.server.Worker"
# This machine only, unless told: a development API (its /docs, its admin account with a
# printed password) must not be reachable from the network by accident. The image sets
# API_HOST=0.0.0.0, since inside a container the published port arrives from outside
# (docker-compose.yml publishes it on the host's 127.0.0.1 unless told otherwise).
api_host = os.environ.get("API_HOST") or "127.0.0.1"
if ":" in api_host and not api_host.startswith("["):
    api_host = f"[{api_host}]"  # an IPv6 address, as Gunicorn wants it
bind = [f"{api_host}:{int(os.environ.get('PORT', '8000'))}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Each worker imports the app and opens its own pools after the fork (no shared sockets).
preload_app = False

# A worker whose event loop has not checked in for this long is killed and replaced (Uvicorn
# workers heartbeat from the loop, so only a blocked loop trips it, not a slow request).
timeout = 30
# SIGTERM: stop accepting, give in-flight requests this long, then kill. start_services.sh
# waits a little longer than this before it kills anything.
graceful_timeout = 10
# Idle keep-alive seconds. Behind a load balancer, make it longer than the balancer's idle
# timeout, or the balancer will reuse connections the worker is closing (sporadic 502s).
keepalive = 5
# The heartbeat file: in memory where there is /dev/shm (a container's disk can stall).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# No `gunicornc` control socket: it sits at one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl), which two Gunicorns on one machine (tests, a second checkout)
# would fight over. Gunicorn is managed with signals (TERM, HUP, TTIN/TTOU).
control_socket_disable = True

# Logging: one format for the master, the workers and the app (api.* loggers propagate to the
# root). Access logs are off by default (the targets in docs/ARCHITECTURE.md are requests/s);
# turn them on with GUNICORN_CMD_ARGS="--access-logfile -" (the `gunicorn.access` logger is left
# to Gunicorn).
log_level = os.environ.get("LOG_LEVEL", "INFO").upper()
loglevel = log_level.lower()
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "default",
                    "stream": "ext://sys.stderr"},
    },
    "root": {"level": log_level, "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": log_level, "handlers": ["console"], "propagate": False},
    },
}

# Metrics. A folder we create is ours to delete at exit; one given by the operator is only
# emptied at start (stale files from a previous run would be counted again).
METRICS_DIR_PREFIX = "stocking-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)

# Development only: when JWT_SECRET_KEY is unset, ONE random key is drawn in the master, before
# the workers fork, so that every worker inherits the same key. If each worker drew its own (as
# ApiSettings does in a lone process), a token issued by one worker would be refused by the
# others. Tokens do not survive a restart of Gunicorn; start_services.sh draws the key itself so
# that they survive its restarts of Gunicorn. Production refuses to start without a key of at
# least 32 bytes (api.settings).
_drawn_key = development_key_for_children(os.environ)
if _drawn_key:
    os.environ["JWT_SECRET_KEY"] = _drawn_key


def _metrics_dir() -> Path:
    return Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_starting(server: Any) -> None:
    """Once per master, before the first worker: an existing, empty metrics folder."""
    folder = _metrics_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges stop counting (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    folder = _metrics_dir()
    if folder.name.startswith(METRICS_DIR_PREFIX) and folder.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(folder, ignore_errors=True)
