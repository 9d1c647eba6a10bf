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

Settings come from the platform's settings classes (relayer.shared_settings and the API's,
the relayer's and the simulator's), so that this script reads every variable, and its default,
exactly as the children will. Only API_HOST and PORT are read here directly: they are
Gunicorn's (gunicorn.conf.py), not the app's.

Python rather than bash so that signal handling, backoff and readiness checks are explicit. Why
not an existing process manager: honcho (Foreman's Procfile runner) starts every process at
once, stops everything as soon as one exits, and has no readiness checks, start order or
restarts; supervisord has start priorities, stops in reverse order and restarts, but it cannot
start Redis only when none is answering, run the migrations to completion before anything else,
or wait for a port or GET /health before the next program, and it gives a crashing program up
(FATAL) after a few quick retries instead of backing off for as long as it takes.
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
from pydantic import ValidationError

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: its own folder is on the path, not the repo's
    sys.path.insert(0, str(REPO))

from api.auth.signing_key import development_key_for_children  # noqa: E402
from api.settings import ApiSettings, Environment  # noqa: E402
from relayer.backoff import Backoff, Jitter  # noqa: E402
from relayer.market_calendar import CalendarKind  # noqa: E402
from relayer.settings import DEVELOPMENT_SUBSCRIBE, RelayerSettings, UpstreamKind  # noqa: E402
from relayer.shared_settings import DEFAULT_REDIS_URL, SharedSettings  # noqa: E402
from relayer.sim.__main__ import SimSettings  # noqa: E402

PYTHON = sys.executable
RUN_DIR = REPO / ".run"
CONFIG_ERROR_EXIT = 2
# Restarts of a crashed child: 1 s, 2 s, 4 s ... 30 s; from 1 s again once a child had lived
# HEALTHY_AFTER_S (it crashed for a new reason, not the same one again).
RESTART_INITIAL_S = 1.0
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
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
    backoff: Backoff = field(default_factory=lambda: Backoff(
        initial_s=RESTART_INITIAL_S, max_s=RESTART_MAX_S, jitter=Jitter.NONE))
    next_start: float | None = None  # when a crashed child is started again

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
                if child.next_start is None:
                    child.kill_leftovers()
                    if not child.restart or code == CONFIG_ERROR_EXIT:
                        log(f"{child.name} exited with status {code}; stopping the platform")
                        return code or 1
                    if time.monotonic() - child.started_at > HEALTHY_AFTER_S:
                        child.backoff.reset()
                    delay = child.backoff.next_delay()
                    log(f"{child.name} exited with status {code}; restarting in {delay:.0f}s")
                    child.next_start = time.monotonic() + delay
                elif time.monotonic() >= child.next_start:
                    child.next_start = None
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
    """Where Gunicorn listens (gunicorn.conf.py, which owns API_HOST and PORT): API_HOST, by
    default this machine only."""
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


def ensure_redis(platform: Platform, settings: SharedSettings) -> str:
    if "redis_url" in settings.model_fields_set and settings.redis_url:
        log(f"using REDIS_URL {redact(settings.redis_url)}")
        return settings.redis_url
    url = DEFAULT_REDIS_URL
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 6379
    if redis_answers(url):
        log(f"using the Redis already running on {host}:{port}")
        return url
    if port_in_use(host, port):
        raise SystemExit(f"[start_services] port {port} is in use by something that is not "
                         "Redis; stop it or set REDIS_URL")
    RUN_DIR.mkdir(exist_ok=True)
    server = subprocess.run(["which", "redis-server"], capture_output=True, text=True).stdout
    if server.strip():
        argv = [server.strip(), "--port", str(port), "--bind", host, "--save", "",
                "--appendonly", "no", "--dir", str(RUN_DIR)]
        platform.add(Child("redis-server", argv))
    else:
        log("no redis-server installed: starting the embedded Redis (fakeredis; development only)")
        argv = [PYTHON, "scripts/embedded_redis.py", "--port", str(port)]
        platform.add(Child("embedded-redis", argv))
    wait_until(lambda: redis_answers(url), "Redis")
    return url


def ensure_upstream(platform: Platform, relayer: RelayerSettings,
                    sim: SimSettings) -> str | None:
    """Start the simulator unless a real upstream is configured; return its URL if started."""
    if relayer.relayer_upstream is not UpstreamKind.SIM or relayer.relayer_upstream_url:
        log(f"upstream: {relayer.relayer_upstream.value} (configured)")
        return None
    host, port = sim.sim_host, sim.sim_port
    if port_in_use(host, port):
        raise SystemExit(f"[start_services] port {port} is in use; stop what holds it or set "
                         "SIM_PORT (or RELAYER_UPSTREAM_URL to use a simulator already running)")
    platform.add(Child("simulator", [PYTHON, "-m", "relayer.sim"]))
    wait_until(lambda: port_in_use(host, port), "the simulator")
    return f"ws://{host}:{port}/ws"


def redact(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(parts.password, "***") if parts.password else url


def migrate_database(url: str) -> None:
    """`python -m api.migrate` once, before anything uses the database; fails loudly."""
    log(f"migrating the database {redact(url)}")
    result = subprocess.run([PYTHON, "-m", "api.migrate"], cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"[start_services] database migrations FAILED (status "
                         f"{result.returncode}); see the error above (DATABASE_URL is "
                         f"{redact(url)})")


def development_credentials(settings: ApiSettings) -> dict[str, str]:
    """In development, what the API needs to be usable at once, unless configured."""
    if settings.stocking_env is Environment.PRODUCTION:
        return {}
    env: dict[str, str] = {}
    email, password = settings.stocking_admin_email, settings.stocking_admin_password
    if not email and not password:
        env["STOCKING_ADMIN_EMAIL"] = DEV_ADMIN_EMAIL
        env["STOCKING_ADMIN_PASSWORD"] = secrets.token_urlsafe(12)
    elif not (email and password):
        log("WARNING: set both STOCKING_ADMIN_EMAIL and STOCKING_ADMIN_PASSWORD to have an "
            "admin account ensured; no admin account this time")
    # Drawn here, not by gunicorn.conf.py, so that tokens survive our restarts of Gunicorn.
    drawn_key = development_key_for_children(os.environ)
    if drawn_key:
        env["JWT_SECRET_KEY"] = drawn_key
    return env


def describe_calendar(settings: SharedSettings) -> str:
    """Which market calendar every process follows (MARKET_CALENDAR), for the start banner."""
    kind = settings.calendar_kind
    given = not settings.calendar_defaulted
    if kind is CalendarKind.KRX:
        return (f"krx (KRX trading days and hours, sessions {settings.market_sessions}; "
                f"{len(settings.market_special_sessions)} special sessions"
                f"{'' if given else '; the production default'})")
    return (f"always_open (every moment trades; days end at "
            f"{settings.market_close_kst:%H:%M} KST"
            f"{'' if given else '; the development default, MARKET_CALENDAR=krx for the KRX'})")


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


def print_login_hint(url: str, env: dict[str, str], settings: ApiSettings) -> None:
    email = env.get("STOCKING_ADMIN_EMAIL") or settings.stocking_admin_email
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
    try:
        api_settings = ApiSettings()
        relayer_settings = RelayerSettings()
        sim_settings = SimSettings()
    except ValidationError as exc:
        print(f"[start_services] invalid configuration: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    platform = Platform()

    def request_stop(signum: int, _frame: object) -> None:
        log(f"received {signal.Signals(signum).name}; stopping")
        platform.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    log(f"market calendar: {describe_calendar(api_settings)}")
    try:
        check_api_port()
        redis_url = ensure_redis(platform, api_settings)
        migrate_database(api_settings.database_url)
        sim_url = ensure_upstream(platform, relayer_settings, sim_settings)
        relayer_env = {"REDIS_URL": redis_url}
        if sim_url:
            relayer_env["RELAYER_UPSTREAM_URL"] = sim_url
        if "relayer_subscribe" not in relayer_settings.model_fields_set:
            relayer_env["RELAYER_SUBSCRIBE"] = DEVELOPMENT_SUBSCRIBE
        platform.add(Child("relayer", [PYTHON, "-m", "relayer"], env=relayer_env))
        app_env = {"REDIS_URL": redis_url}
        platform.add(Child("fills", [PYTHON, "-m", "api.fills"], env=app_env))
        api_env = {**app_env, **development_credentials(api_settings)}
        api_url = ensure_api(platform, api_env)
        log("platform is up:")
        log(f"  API       {api_url}   (docs: {api_url}/docs; {api_url}/ready; {api_url}/metrics)")
        log(f"  Redis     {redact(redis_url)}")
        upstream = sim_url or relayer_settings.relayer_upstream_url or "(adapter default)"
        log(f"  upstream  {upstream}")
        log(f"  calendar  {describe_calendar(api_settings)}")
        print_login_hint(api_url, api_env, api_settings)
        log(f"  read a quote from Redis: .venv/bin/python -c \"import redis; print("
            f"redis.Redis.from_url('{redact(redis_url)}').get("
            f"'{api_settings.names.quote('A005930')}'))\"")
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
