"""Runs the whole platform on one machine and keeps it running: the body of start_services.sh.

Starts, in order: Redis (unless one is configured or already answering), the exchange simulator
(unless a real upstream is configured), the relayer. A child that dies is restarted with capped
exponential backoff; the relayer exiting with status 2 (bad configuration) stops everything,
since restarting cannot fix it. SIGINT/SIGTERM stop the children in reverse order (SIGTERM,
then SIGKILL after a grace period) and free their ports.

Python rather than bash so that signal handling, backoff and readiness checks are explicit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RUN_DIR = REPO / ".run"
# Well-known KRX codes subscribed when RELAYER_SUBSCRIBE is not set.
DEFAULT_CODES = (
    "A005930,A000660,A373220,A207940,A005380,A000270,A068270,A035420,A005490,A051910,"
    "A035720,A006400,A105560,A055550,A012330,A028260,A066570,A003670,A096770,A034730"
)
CONFIG_ERROR_EXIT = 2
STOP_GRACE_S = 10.0


def log(message: str) -> None:
    print(f"[start_services] {message}", flush=True)


@dataclass
class Child:
    name: str
    argv: list[str]
    restart: bool = True
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    next_start: float = 0.0

    def start(self) -> None:
        # A session of its own: Ctrl-C reaches only us, and we stop children in order.
        self.process = subprocess.Popen(self.argv, cwd=REPO, env={**os.environ, **self.env},
                                        start_new_session=True)
        self.started_at = time.monotonic()
        log(f"{self.name} started (pid {self.process.pid})")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()

    def wait_stopped(self, deadline: float) -> None:
        if not self.process:
            return
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in time; killing it")
            self.process.kill()
            self.process.wait()


class Platform:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stopping = False

    def add(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def supervise(self) -> int:
        while not self.stopping:
            for child in self.children:
                code = child.process.poll() if child.process else None
                if code is None or self.stopping:
                    continue
                if child.next_start == 0.0:
                    lived = time.monotonic() - child.started_at
                    child.failures = 0 if lived > 60 else child.failures + 1
                    if not child.restart or code == CONFIG_ERROR_EXIT:
                        log(f"{child.name} exited with status {code}; stopping the platform")
                        return code or 1
                    delay = min(30.0, 2.0 ** (child.failures - 1))
                    log(f"{child.name} exited with status {code}; restarting in {delay:.0f}s")
                    child.next_start = time.monotonic() + delay
                elif time.monotonic() >= child.next_start:
                    child.next_start = 0.0
                    child.start()
            time.sleep(0.2)
        return 0

    def stop_all(self) -> None:
        self.stopping = True
        for child in reversed(self.children):
            child.stop()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in reversed(self.children):
            child.wait_stopped(deadline)
        log("all services stopped")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"[start_services] {what} did not come up within {timeout:.0f}s")
        time.sleep(0.1)


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def ensure_redis(platform: Platform) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        log(f"using REDIS_URL {redact(url)}")
        return url
    url = "redis://127.0.0.1:6379/0"
    if redis_answers(url):
        log("using the Redis already running on 127.0.0.1:6379")
        return url
    if port_in_use("127.0.0.1", 6379):
        raise SystemExit("[start_services] port 6379 is in use by something that is not Redis; "
                         "stop it or set REDIS_URL")
    RUN_DIR.mkdir(exist_ok=True)
    server = subprocess.run(["which", "redis-server"], capture_output=True, text=True).stdout
    if server.strip():
        argv = [server.strip(), "--port", "6379", "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(RUN_DIR)]
        platform.add(Child("redis-server", argv))
    else:
        log("no redis-server installed: starting the embedded Redis (fakeredis; development only)")
        argv = [PYTHON, "scripts/embedded_redis.py", "--port", "6379"]
        platform.add(Child("embedded-redis", argv))
    wait_until(lambda: redis_answers(url), "Redis")
    return url


def ensure_upstream(platform: Platform) -> str | None:
    """Start the simulator unless a real upstream is configured; return its URL if started."""
    if os.environ.get("RELAYER_UPSTREAM", "sim") != "sim" or os.environ.get("RELAYER_UPSTREAM_URL"):
        log(f"upstream: {os.environ.get('RELAYER_UPSTREAM', 'sim')} (configured)")
        return None
    host = os.environ.get("SIM_HOST", "127.0.0.1")
    port = int(os.environ.get("SIM_PORT", "8765"))
    if port_in_use(host, port):
        raise SystemExit(f"[start_services] port {port} is in use; stop what holds it or set "
                         "SIM_PORT (or RELAYER_UPSTREAM_URL to use a simulator already running)")
    platform.add(Child("simulator", [PYTHON, "-m", "relayer.sim"]))
    wait_until(lambda: port_in_use(host, port), "the simulator")
    return f"ws://{host}:{port}/ws"


def redact(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(parts.password, "***") if parts.password else url


def main() -> int:
    platform = Platform()

    def request_stop(signum: int, _frame: object) -> None:
        log(f"received {signal.Signals(signum).name}; stopping")
        platform.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        redis_url = ensure_redis(platform)
        sim_url = ensure_upstream(platform)
        relayer_env = {"REDIS_URL": redis_url}
        if sim_url:
            relayer_env["RELAYER_UPSTREAM_URL"] = sim_url
        if "RELAYER_SUBSCRIBE" not in os.environ:
            relayer_env["RELAYER_SUBSCRIBE"] = DEFAULT_CODES
        platform.add(Child("relayer", [PYTHON, "-m", "relayer"], env=relayer_env))
        ns = os.environ.get("STOCKING_NS", "stocking")
        log("platform is up:")
        log(f"  Redis     {redact(redis_url)}")
        log(f"  upstream  {sim_url or os.environ.get('RELAYER_UPSTREAM_URL', '(adapter default)')}")
        log(f"  read a quote: .venv/bin/python -c \"import redis; print(redis.Redis.from_url("
            f"'{redact(redis_url)}').get('{ns}:quote:A005930'))\"")
        log("  stop: Ctrl-C")
        code = platform.supervise()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        code = 1
    finally:
        platform.stop_all()
    return code


if __name__ == "__main__":
    sys.exit(main())
