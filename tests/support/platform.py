"""Running the platform's processes as operators do, for end-to-end tests: Gunicorn with its
Uvicorn workers (gunicorn.conf.py), the relayer, the simulator; each in its own process group,
with the environment under the test's control, asked over real HTTP and stopped by signal.

Used by tests/test_platform.py, tests/test_stream_platform.py, tests/test_concurrency.py,
tests/test_request_limits.py and tests/api/test_database_faults.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.env import REPO, scaled

# Settings the tests choose themselves; whatever the developer's shell has is removed.
CONTROLLED = ("REDIS_URL", "DATABASE_URL", "PORT", "WEB_CONCURRENCY", "SIM_HOST", "SIM_PORT",
              "STOCKING_ENV", "STOCKING_NS", "JWT_SECRET_KEY", "STOCKING_ADMIN_EMAIL",
              "STOCKING_ADMIN_PASSWORD", "PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS",
              "RELAYER_UPSTREAM", "RELAYER_UPSTREAM_URL", "RELAYER_SUBSCRIBE",
              "PORTONE_STORE_ID", "PORTONE_CHANNEL_KEY", "PORTONE_V2_API_SECRET",
              "PORTONE_WEBHOOK_SECRET", "PORTONE_API_BASE_URL", "PAYMENT_PRODUCTS",
              "API_HOST", "METRICS_TOKEN", "METRICS_PUBLIC", "API_DOCS_ENABLED")


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    return {**env, "PYTHONUNBUFFERED": "1", **settings}


def http(method: str, url: str, body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request on a new connection (so that any worker may take it)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    return http("GET", url, headers=headers)


def wait_for(check: Callable[[], bool], what: str, timeout: float,
             process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not check():
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} before {what}:\n"
                                 f"{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


def port_free(port: int) -> bool:
    """Whether a server could listen on the port now (Gunicorn binds 0.0.0.0 like this)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(process: subprocess.Popen[bytes], signum: signal.Signals, timeout: float) -> float:
    """Send the signal; seconds until the process exited (killed and failed if it did not)."""
    started = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"still running {timeout}s after {signum.name}") from None
    return time.monotonic() - started


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`command` in the repository, its output (both streams) appended to `log`."""
    with log.open("ab") as output:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: a failed test kills the workers too


def start_gunicorn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "api.main:app"],
                 env, log)


def wait_for_workers(gunicorn: subprocess.Popen[bytes], log: Path, count: int) -> list[int]:
    """Until `count` workers have started their app (no request sent); their pids."""
    wait_for(lambda: len(re.findall(r"Application startup complete", log.read_text())) == count,
             f"{count} workers started", 60, gunicorn, log)
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log.read_text())]


def counter_per_worker(metrics_dir: Path, name: str, **labels: str) -> dict[str, float]:
    """pid -> the sum of the samples of counter `name` (`..._total`) with these labels, read
    from each Gunicorn worker's own file in PROMETHEUS_MULTIPROC_DIR."""
    per_worker: dict[str, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for sample in metric.samples:
                if sample.name == name and all(sample.labels.get(label) == value
                                               for label, value in labels.items()):
                    per_worker[pid] = per_worker.get(pid, 0.0) + sample.value
    return per_worker
