"""Measures what one oversized request head costs a Gunicorn worker (docs/OPERATIONS.md,
"Request size limits").

What runs, all on this machine: a private `redis-server` on a free port, a fresh SQLite
database, and Gunicorn with ONE worker from gunicorn.conf.py (or with `--worker` another worker
class, e.g. `uvicorn_worker.UvicornWorker` to see Uvicorn without the API's head limit). Then
one raw-socket request `GET /health` with a single header of `--mib` MiB. Reported: the status
line, the seconds until the answer, and the worker's peak RSS (`VmHWM`) before and after.

Usage:
    .venv/bin/python scripts/measure_request_head.py [--mib 200] [--worker api.server.Worker]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_support import REPO, free_port


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


def wait_until(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if callable(check) and check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no {what} within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=200, help="size of the one header, MiB")
    parser.add_argument("--worker", default=None,
                        help="Gunicorn worker class (default: gunicorn.conf.py's)")
    options = parser.parse_args()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("needs redis-server", file=sys.stderr)
        return 2

    folder = Path(tempfile.mkdtemp(prefix="stocking-head-"))
    redis_port, api_port = free_port(), free_port()
    database_url = f"sqlite:///{folder / 'stocking.db'}"
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "DATABASE_URL": database_url, "PORT": str(api_port), "WEB_CONCURRENCY": "1",
           "GUNICORN_CMD_ARGS": f"--worker-class {options.worker}" if options.worker else ""}
    redis = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(folder)],
                             stdout=subprocess.DEVNULL)
    gunicorn = None
    try:
        subprocess.run([sys.executable, "-m", "api.migrate"], cwd=REPO, env=env, check=True,
                       capture_output=True)
        log = folder / "gunicorn.log"
        with log.open("wb") as output:
            gunicorn = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "api.main:app"],
                cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True)
        health = f"http://127.0.0.1:{api_port}/health"
        wait_until(lambda: urllib.request.urlopen(health, timeout=2).status == 200,
                   "answer on /health")
        worker = int(re.findall(r"Booting worker with pid: (\d+)", log.read_text())[-1])
        before = peak_rss_kib(worker)

        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", api_port)) as sock:
            sock.settimeout(600)
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
                             + b"a" * (options.mib << 20) + b"\r\nConnection: close\r\n\r\n")
            except OSError as exc:  # the server closed while we were still sending
                print(f"send stopped: {exc}")
            answer = sock.recv(65536)
        elapsed = time.monotonic() - started

        status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        print(f"worker class: {options.worker or 'gunicorn.conf.py'}; "
              f"header of {options.mib} MiB")
        print(f"answer: {status_line!r} after {elapsed:.2f} s")
        if Path(f"/proc/{worker}").exists():
            print(f"worker peak RSS: {before / 1024:.1f} MB before, "
                  f"{peak_rss_kib(worker) / 1024:.1f} MB after")
        else:
            lines = [line for line in log.read_text().splitlines()
                     if "WORKER TIMEOUT" in line or "was sent SIGKILL" in line]
            print(f"worker {worker} is gone (peak RSS {before / 1024:.1f} MB before): "
                  + ("; ".join(lines) or "see the Gunicorn log"))
        return 0
    finally:
        if gunicorn is not None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            gunicorn.wait(30)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
