"""Runs the whole platform on one machine and keeps it running: the body of start_services.sh.

Starts, in order: Redis (unless one is configured or already answering), the database
migrations (once; a failure stops everything), the exchange simulator (unless a real upstream
is configured), the relayer, the fills worker (`python -m api.fills`), the API (Gunicorn,
`gunicorn.conf.py`), which must answer GET /health before the platform counts as up. A child
that dies is restarted with capped exponential backoff; the relayer exiting with status 2 (bad
configuration) stops everything, since restarting cannot fix it. SIGINT/SIGTERM stop the
children one at a time in reverse order (SIGTERM, then SIGKILL of the child's whole process
group after a grace period) and free their ports.

In development (STOCKING_ENV is not `production`) it also provides what the API needs to be
usable at once: an admin account (admin@stocking.local with a password drawn for this run,
printed once) unless STOCKING_ADMIN_EMAIL/STOCKING_ADMIN_PASSWORD are set, and a JWT signing
key for this run unless JWT_SECRET_KEY is set.

Python rather than bash so that signal handling, backoff and readiness checks are explicit.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
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
# Longer than Gunicorn's graceful_timeout (10 s), so that in-flight requests can finish.
STOP_GRACE_S = 15.0
# Each Gunicorn worker imports the app and runs its startup before /health answers.
API_START_TIMEOUT_S = 60.0
DEV_ADMIN_EMAIL = "admin@stocking.local"


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
        self.kill_leftovers()

    def kill_leftovers(self) -> None:
        """Kill what the child left in its process group (Gunicorn workers of a master that
        died would keep the port)."""
        if self.process:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


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
                    child.kill_leftovers()
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
        # One at a time, newest first: the API stops before what it reads from, the relayer
        # disconnects from a simulator that is still there and flushes into a Redis that is.
        for child in reversed(self.children):
            child.stop()
            child.wait_stopped(time.monotonic() + STOP_GRACE_S)
        log("all services stopped")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def api_host() -> str:
    """Where Gunicorn listens (gunicorn.conf.py): API_HOST, by default this machine only."""
    return os.environ.get("API_HOST") or "127.0.0.1"


def local_url(host: str, port: int) -> str:
    """The URL to reach a server listening on host:port from this machine (listening on every
    interface includes the loopback)."""
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def port_free_for_listening(host: str, port: int) -> bool:
    """Whether Gunicorn could bind host:port (what it will try), the way it binds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
        return True


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0,
               child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if child is not None and not child.running():
            code = child.process.poll() if child.process else None
            raise SystemExit(f"[start_services] {child.name} exited with status {code} before "
                             f"{what} came up; see its output above")
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


def development() -> bool:
    return os.environ.get("STOCKING_ENV", "development").lower() != "production"


def migrate_database() -> None:
    """`python -m api.migrate` once, before anything uses the database; fails loudly."""
    url = os.environ.get("DATABASE_URL", "sqlite:///./stocking.db")
    log(f"migrating the database {redact(url)}")
    result = subprocess.run([PYTHON, "-m", "api.migrate"], cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"[start_services] database migrations FAILED (status "
                         f"{result.returncode}); see the error above (DATABASE_URL is "
                         f"{redact(url)})")


def development_credentials() -> dict[str, str]:
    """In development, what the API needs to be usable at once, unless configured."""
    if not development():
        return {}
    env: dict[str, str] = {}
    email, password = (os.environ.get("STOCKING_ADMIN_EMAIL"),
                       os.environ.get("STOCKING_ADMIN_PASSWORD"))
    if not email and not password:
        env["STOCKING_ADMIN_EMAIL"] = DEV_ADMIN_EMAIL
        env["STOCKING_ADMIN_PASSWORD"] = secrets.token_urlsafe(12)
    elif not (email and password):
        log("WARNING: set both STOCKING_ADMIN_EMAIL and STOCKING_ADMIN_PASSWORD to have an "
            "admin account ensured; no admin account this time")
    if not os.environ.get("JWT_SECRET_KEY"):
        # Drawn here, not by gunicorn.conf.py, so that tokens survive our restarts of Gunicorn.
        env["JWT_SECRET_KEY"] = secrets.token_urlsafe(48)
    return env


def api_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def check_api_port() -> int:
    """PORT, if the API can listen on it; checked first, and again just before Gunicorn."""
    port = int(os.environ.get("PORT", "8000"))
    if not port_free_for_listening(api_host(), port):
        raise SystemExit(f"[start_services] port {port} is in use, so the API cannot listen on "
                         f"it; stop what holds it (`ss -ltnp 'sport = :{port}'` shows it) or "
                         "set PORT to a free port")
    return port


def ensure_api(platform: Platform, env: dict[str, str]) -> str:
    """Start Gunicorn and wait until it answers GET /health; return the API's local URL."""
    port = check_api_port()
    api = platform.add(Child("api", [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                     "api.main:app"], env=env))
    url = local_url(api_host(), port)
    wait_until(lambda: api_answers(url), f"the API ({url}/health)", API_START_TIMEOUT_S, api)
    return url


def print_login_hint(url: str, env: dict[str, str]) -> None:
    email = env.get("STOCKING_ADMIN_EMAIL") or os.environ.get("STOCKING_ADMIN_EMAIL")
    if not email:
        return
    password = env.get("STOCKING_ADMIN_PASSWORD")
    if password:
        log(f"  admin     {email} / {password}   (development account; the password was drawn "
            "for this run and is printed only here; set STOCKING_ADMIN_EMAIL and "
            "STOCKING_ADMIN_PASSWORD to choose your own)")
        credentials = shlex.quote(json.dumps({"email": email, "password": password}))
    else:
        log(f"  admin     {email} (password: STOCKING_ADMIN_PASSWORD)")
        # Double quotes, so that the shell fills in the password from the environment.
        credentials = ('"{\\"email\\": \\"' + email
                       + '\\", \\"password\\": \\"$STOCKING_ADMIN_PASSWORD\\"}"')
    log("  log in, then read a quote:")
    log(f"    TOKEN=$(curl -s -X POST {url}/api/v1/auth/login -H 'content-type: application/json' "
        f"-d {credentials} | python3 -c 'import json,sys; "
        "print(json.load(sys.stdin)[\"access_token\"])')")
    log(f'    curl -s {url}/api/v1/trading/realtime/stock/A005930 -H "authorization: Bearer '
        '$TOKEN"')


def main() -> int:
    platform = Platform()

    def request_stop(signum: int, _frame: object) -> None:
        log(f"received {signal.Signals(signum).name}; stopping")
        platform.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        check_api_port()
        redis_url = ensure_redis(platform)
        migrate_database()
        sim_url = ensure_upstream(platform)
        relayer_env = {"REDIS_URL": redis_url}
        if sim_url:
            relayer_env["RELAYER_UPSTREAM_URL"] = sim_url
        if "RELAYER_SUBSCRIBE" not in os.environ:
            relayer_env["RELAYER_SUBSCRIBE"] = DEFAULT_CODES
        platform.add(Child("relayer", [PYTHON, "-m", "relayer"], env=relayer_env))
        app_env = {"REDIS_URL": redis_url}
        platform.add(Child("fills", [PYTHON, "-m", "api.fills"], env=app_env))
        api_env = {**app_env, **development_credentials()}
        api_url = ensure_api(platform, api_env)
        ns = os.environ.get("STOCKING_NS", "stocking")
        log("platform is up:")
        log(f"  API       {api_url}   (docs: {api_url}/docs; {api_url}/ready; {api_url}/metrics)")
        log(f"  Redis     {redact(redis_url)}")
        log(f"  upstream  {sim_url or os.environ.get('RELAYER_UPSTREAM_URL', '(adapter default)')}")
        print_login_hint(api_url, api_env)
        log(f"  read a quote from Redis: .venv/bin/python -c \"import redis; print("
            f"redis.Redis.from_url('{redact(redis_url)}').get('{ns}:quote:A005930'))\"")
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
