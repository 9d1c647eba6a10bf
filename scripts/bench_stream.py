"""Benchmark the live quote stream (`GET /api/v1/stream`, issue 14): N concurrent WebSocket
clients, each watching the same codes, on real Gunicorn with 2 Uvicorn workers.

What runs (all on this machine, each in its own process group, torn down at the end):
- a private `redis-server` on a free port (no persistence) and a fresh SQLite database, migrated,
  with one user per client (inserted with SQL, as scripts/bench_orders.py does);
- the API exactly as start_services.sh runs it: Gunicorn, `gunicorn.conf.py`, WEB_CONCURRENCY
  Uvicorn workers (2), `api.main:app`;
- the tick source: this script as a publisher process (`--role publisher`), writing ticks for
  the codes with the relayer's own script (`relayer.publisher.WRITE_TICKS`, through
  `bench_orders.TickWriter`): the quote key, the tick stream and the PUBLISH on `NS:ticks:{code}`
  that the stream server listens to. Ticks go round-robin over the codes at `--ticks-per-s`
  in all, by default 20: the simulator's rate (`SIM_TICKS_PER_SEC`, 20 per connection spread over
  its subscriptions, relayer/sim/session.py), i.e. one tick per code per second with 20 codes.
  Each tick is stamped just before its write: `received_at` (ISO 8601 UTC, ms, the field the
  relayer fills when it reads a trade) and, to the nanosecond, `cum_amount` = time.time_ns()
  (the trick of scripts/bench_relayer.py: the integer passes through every layer unchanged).
  The publisher is stopped (SIGSTOP) while the clients connect, unless
  `--ticks-while-connecting`, so that connecting is measured apart from the fan-out;
- the load: `--load-processes` processes of this script (`--role load`), so the clients' CPU is
  not the server's. Each client is an asyncio protocol around websockets' sans-I/O
  `ClientProtocol` (no task per client), on uvloop as the server is. It connects, authenticates
  (first message `{"op": "auth"}` by default, or the `Authorization` header with `--auth
  header`), subscribes to every code, and counts as connected once it has the snapshot of each.
  It answers the server's `ping` and sends `{"op": "ping"}` every 25 s, as a live client must (a
  silent one is closed).

What it reports, per number of clients:
- connected clients (and failures by reason), and how long connecting them took;
- delivery latency of `update` messages, from the tick's stamp (just before its write to Redis)
  to the moment the client read the bytes: p50/p90/p99/max, from `cum_amount` (ns); the same
  from `received_at` (ms resolution) as a check;
- updates delivered per second (all clients), against ticks published x clients (the server may
  coalesce for a slow client: it sends the latest value, so fewer than published is allowed);
- disconnects by the server, by close code (4429: a slow client);
- server CPU: each Gunicorn worker's utime + stime over the window, from /proc (and the load
  processes', Redis', the publisher's, and *other*: busy time of the machine that none of these
  used), and each worker's RSS; memory per 1,000 clients = (workers' RSS with N clients - with
  none) / N x 1,000. "With none" is after a short warm-up (a few clients came and went), so it
  includes what a first stream loads.

File descriptors: each client is one socket in a load process and one in a worker (the kernel
may give one worker most of them), so RLIMIT_NOFILE must be at least the largest N + 512. The
script raises its soft limit to that (children inherit it) and says so if the hard limit is lower.

    .venv/bin/python scripts/bench_stream.py [--clients 1000 5000] [--codes 20] [--seconds 20]
        [--warmup 3] [--ticks-per-s 20] [--load-processes 2] [--auth message|header]
        [--deflate] [--json PATH] [--logs DIR]
    .venv/bin/python scripts/bench_stream.py --smoke     # 20 clients, 5 s: for the test suite
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Sibling scripts (scripts/ is on sys.path when this runs as a script); bench_support also puts
# the repository root on sys.path for the imports of api and relayer below.
import bench_relayer
import httpx
import orjson
import redis
import uvloop
from bench_feeder import CODES as FEEDER_CODES
from bench_orders import TickWriter, add_users
from bench_relayer import Child, child_env, entries_added, spawn
from bench_support import (
    JWT_KEY,
    BenchError,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    percentile,
    process,
    process_group,
    wait_until,
)
from sqlalchemy import create_engine
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from api.auth.tokens import Principal, TokenType, issue
from api.migrate import upgrade
from api.models import Role
from relayer.bus import BusNames, format_utc

STREAM_PATH = "/api/v1/stream"
TARGET_CLIENTS, TARGET_P99_MS = 5_000, 100.0
BUCKET_NS = 100_000  # latency histogram resolution: 0.1 ms
CLIENT_PING_S = 25.0
READY_TIMEOUT_S = 60.0  # one client, from connect to its last snapshot
FDS_SPARE = 512
SLOW_CLIENT_CLOSE = 4429
NAMES = BusNames()


def bench_codes(count: int) -> list[str]:
    """The feeder's 20 real codes, then syntactically valid made-up ones."""
    return [*FEEDER_CODES[:count], *(f"A9{n:05d}" for n in range(max(0, count - 20)))]


# ============================================================================================
# Publisher (its own process): ticks at a fixed rate, stamped just before each write


def run_publisher(redis_url: str, codes: list[str], rate: float) -> None:
    writer = TickWriter(redis.Redis.from_url(redis_url))
    prices = itertools.cycle([70_000 + 100 * step for step in (0, 1, 2, 1, 0, -1, -2, -1)])
    order = itertools.cycle(codes)
    started, sent = time.monotonic(), 0
    while True:
        due = int((time.monotonic() - started) * rate) - sent
        if due > rate:  # over a second behind (stopped with SIGSTOP while clients connect)
            started, sent, due = time.monotonic() - 1 / rate, 0, 1
        if due > 0:
            quotes = [writer.quote(next(order), next(prices), 1) for _ in range(due)]
            now_ns = time.time_ns()
            moment = datetime.fromtimestamp(now_ns // 10**9, UTC).replace(
                microsecond=now_ns // 1000 % 10**6)
            stamp = format_utc(moment, millis=True)
            for quote in quotes:
                quote.cum_amount, quote.received_at = now_ns, stamp
            writer.publish(*quotes)
            sent += due
        time.sleep(max(0.0005, (sent + 1) / rate - (time.monotonic() - started)))


# ============================================================================================
# Load (its own process): clients on one event loop, driven by commands on stdin


@dataclass
class LoadState:
    """Counters shared by a load process's clients; latencies in 0.1 ms buckets."""

    codes: int
    recording: bool = False
    updates: int = 0
    latency: Counter[int] = field(default_factory=Counter)  # from cum_amount (ns)
    latency_received_at: Counter[int] = field(default_factory=Counter)  # from received_at (ms)
    max_ns: int = 0
    unstamped: int = 0  # updates whose cum_amount was no stamp (timed by received_at only)
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)  # server closes once connected
    closes_in_window: Counter[str] = field(default_factory=Counter)
    ready_ms: list[float] = field(default_factory=list)  # connect to last snapshot, per client
    _received_at_ns: dict[str, int] = field(default_factory=dict)

    def received_at_ns(self, text: str) -> int:
        value = self._received_at_ns.get(text)
        if value is None:
            if len(self._received_at_ns) > 10_000:
                self._received_at_ns.clear()
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            value = self._received_at_ns[text] = (
                int(moment.replace(microsecond=0).timestamp()) * 10**9
                + moment.microsecond * 1000)
        return value


UPDATE_PREFIX = b'{"channel":"quotes","type":"update",'  # api.streams.protocol.quote
STAMP_FIELD, RECEIVED_FIELD = b'"cum_amount":', b'"received_at":"'


class StreamClient(asyncio.Protocol):
    """One stream client, driven by asyncio's transport callbacks (no task per client).

    The load generator shares this machine's two cores with the server, so its cost per
    message is kept small: a complete, unfragmented, uncompressed text frame (byte 0 = 0x81:
    what the server writes for every message) is cut out of the bytes here, and an `update`
    is read for its two stamps only, by search, without parsing the JSON. Any other frame
    (ping, close, fragments, compressed) and the handshake go through websockets' sans-I/O
    `ClientProtocol`, whole: frames are handed over at frame boundaries, so its parser stays
    in step."""

    def __init__(self, state: LoadState, url: str, token: str, codes: list[str], *,
                 header_auth: bool, deflate: bool) -> None:
        self.state, self.token, self.codes, self.header_auth = state, token, codes, header_auth
        extensions = [ClientPerMessageDeflateFactory()] if deflate else None
        self.ws = ClientProtocol(parse_uri(url), extensions=extensions, max_size=2**20)
        self.transport: asyncio.Transport | None = None
        # Its result: None once it has every snapshot, or why it failed.
        self.ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.snapshots = 0
        self.updates = 0  # while recording
        self.fragments: list[bytes] = []
        self.closed = False
        self.head: bytes | None = b""  # the handshake response so far; None once read
        self.fast = False  # frames are cut out here (no compression was negotiated)
        self.pending = b""  # bytes of a frame not complete yet

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's: no subclass
        request = self.ws.connect()
        if self.header_auth:
            request.headers["Authorization"] = f"Bearer {self.token}"
        self.ws.send_request(request)
        self.flush()

    def data_received(self, data: bytes) -> None:
        arrived_ns = time.time_ns()
        if self.head is not None:
            # The response goes to websockets alone, up to its last byte: its parser then
            # stands at a frame boundary, where frames can be handed to it whole.
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data, self.head = self.head[end + 4:], self.head[:end + 4]
            head, self.head = self.head, None
            self.through_websockets(head, arrived_ns)
        if not self.fast:
            if data:
                self.through_websockets(data, arrived_ns)
            return
        if self.pending:
            data = self.pending + data
        at, size = 0, len(data)
        while size - at >= 2:
            length, start = data[at + 1] & 0x7F, at + 2
            if length == 126:
                length, start = int.from_bytes(data[at + 2:at + 4]), at + 4
            elif length == 127:
                length, start = int.from_bytes(data[at + 2:at + 10]), at + 10
            end = start + length
            if end > size:
                break
            if data[at] == 0x81:
                self.message(data[start:end], arrived_ns)
            else:
                self.through_websockets(data[at:end], arrived_ns)
            at = end
        self.pending = data[at:]

    def through_websockets(self, data: bytes, arrived_ns: int) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                self.frame(event, arrived_ns)
            elif isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    self.fail(f"handshake: {event.status_code}")
                    continue
                self.fast = not self.ws.extensions
                if not self.header_auth:
                    self.send({"op": "auth", "token": self.token})
                else:
                    self.send({"op": "subscribe", "channel": "quotes", "codes": self.codes})
        self.flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        received = self.ws.close_rcvd
        reason = str(received.code) if received is not None else "no close frame"
        if self.ready.done():
            self.state.closes[reason] += 1
            if self.state.recording:
                self.state.closes_in_window[reason] += 1
        else:
            self.fail(f"closed before ready: {reason}")

    # -- messages -----------------------------------------------------------------------------

    def frame(self, frame: Frame, arrived_ns: int) -> None:
        if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.CONT:
            if not frame.fin:
                self.fragments.append(bytes(frame.data))
                return
            if self.fragments:
                data = b"".join([*self.fragments, frame.data])
                self.fragments.clear()
            else:
                data = bytes(frame.data)
            self.message(data, arrived_ns)

    def message(self, data: bytes, arrived_ns: int) -> None:
        if data.startswith(UPDATE_PREFIX):
            if self.state.recording:
                self.update(data, arrived_ns)
            return
        message = orjson.loads(data)
        kind = message.get("type")
        if kind == "snapshot":
            self.snapshots += 1
            if self.snapshots == len(self.codes) and not self.ready.done():
                self.ready.set_result(None)
        elif kind == "authenticated" and not self.header_auth:  # with the header: subscribed
            self.send({"op": "subscribe", "channel": "quotes", "codes": self.codes})
        elif kind == "ping":
            self.send({"op": "ping"})
        elif kind == "error":
            self.fail(f"error {message.get('code')}")

    def update(self, data: bytes, arrived_ns: int) -> None:
        """An update's latency from its stamps: `received_at` (ms) and `cum_amount` (ns; the
        publisher's)."""
        state = self.state
        self.updates += 1
        state.updates += 1
        at = data.index(RECEIVED_FIELD) + len(RECEIVED_FIELD)
        received_ns = state.received_at_ns(data[at:data.index(b'"', at)].decode())
        state.latency_received_at[max(0, arrived_ns - received_ns) // BUCKET_NS] += 1
        at = data.find(STAMP_FIELD) + len(STAMP_FIELD)
        end = at
        while data[end:end + 1].isdigit():
            end += 1
        stamp = int(data[at:end]) if end > at else -1
        if 0 <= stamp - received_ns < 1_000_000:
            latency = max(0, arrived_ns - stamp)
        else:  # not our stamp (the server rewrote it): ms resolution only
            state.unstamped += 1
            latency = max(0, arrived_ns - received_ns)
        state.latency[latency // BUCKET_NS] += 1
        state.max_ns = max(state.max_ns, latency)

    def send(self, body: dict[str, Any]) -> None:
        if not self.closed:
            self.ws.send_text(orjson.dumps(body))
            self.flush()

    def flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.ws.close_expected():
            self.transport.close()

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.state.errors[reason] += 1
            self.ready.set_result(reason)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.ws.send_close(1000)
            self.flush()
            self.transport.close()


async def open_client(state: LoadState, url: str, token: str, codes: list[str],
                      options: dict[str, Any], gate: asyncio.Semaphore) -> StreamClient | None:
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    client = StreamClient(state, url, token, codes, header_auth=options["auth"] == "header",
                          deflate=options["deflate"])
    async with gate:
        started = time.monotonic()
        try:
            await loop.create_connection(lambda: client, uri.host, uri.port)
            failure = await asyncio.wait_for(asyncio.shield(client.ready), READY_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            client.fail(f"connect: {type(exc).__name__}")
            return None
        state.ready_ms.append((time.monotonic() - started) * 1000)
    return None if failure else client


def say(body: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    sys.stdout.flush()


async def run_load() -> None:
    """stdin: one JSON line (url, tokens, codes, auth, deflate, concurrency), then commands
    `start` (count from now), `stop` (report what was counted) and `close`; one JSON line out
    for the connections and for each `stop`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)  # the first line carries every token
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    options: dict[str, Any] = orjson.loads(await reader.readline())
    codes: list[str] = options["codes"]
    state = LoadState(codes=len(codes))
    gate = asyncio.Semaphore(options["concurrency"])
    started = time.monotonic()
    opened = await asyncio.gather(*(open_client(state, options["url"], token, codes, options, gate)
                                    for token in options["tokens"]))
    clients = [client for client in opened if client is not None]
    say({"connected": len(clients), "seconds": time.monotonic() - started,
         "errors": dict(state.errors), "ready_ms": state.ready_ms})

    async def keep_alive() -> None:  # every client pings every CLIENT_PING_S, spread out
        for serial in itertools.count():
            await asyncio.sleep(1.0)
            for client in clients[serial % int(CLIENT_PING_S)::int(CLIENT_PING_S)]:
                client.send({"op": "ping"})

    pinging = asyncio.create_task(keep_alive())
    while line := (await reader.readline()).decode().strip():
        if line == "start":
            state.recording = True
            for client in clients:
                client.updates = 0
            state.updates, state.max_ns, state.unstamped = 0, 0, 0
            state.latency.clear()
            state.latency_received_at.clear()
            state.closes_in_window.clear()
        elif line == "stop":
            state.recording = False
            per_client = [client.updates for client in clients]
            say({"clients": len(clients), "updates": state.updates,
                 "with_updates": sum(1 for n in per_client if n),
                 "min_updates": min(per_client, default=0),
                 "open": sum(1 for client in clients if not client.closed),
                 "latency": state.latency, "latency_received_at": state.latency_received_at,
                 "max_ns": state.max_ns, "unstamped": state.unstamped,
                 "closes": state.closes, "closes_in_window": state.closes_in_window})
        elif line == "close":
            break
    pinging.cancel()
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)


# ============================================================================================
# Bench side


class LoadProcess:
    """One load process: its clients' tokens go in, JSON lines come out."""

    def __init__(self, folder: Path, serial: int, config: dict[str, Any]) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--role", "load"]
        self.child: Child = spawn(f"load-{serial}", command, folder, child_env(), piped=True)
        self.send(orjson.dumps(config).decode())

    @property
    def pid(self) -> int:
        return self.child.pid

    def send(self, line: str) -> None:
        self.child.send_line(line)

    def read(self, timeout_s: float) -> dict[str, Any]:
        return self.child.read_json(timeout_s)


@contextmanager
def load_processes(folder: Path, count: int, url: str, tokens: list[str], codes: list[str],
                   options: argparse.Namespace) -> Iterator[list[LoadProcess]]:
    shares = [tokens[i::count] for i in range(count)]
    loads: list[LoadProcess] = []
    try:
        for serial, share in enumerate(shares):
            if share:
                loads.append(LoadProcess(folder, serial, {
                    "url": url, "tokens": share, "codes": codes, "auth": options.auth,
                    "deflate": options.deflate,
                    "concurrency": max(1, options.connect_concurrency // count)}))
        yield loads
    finally:
        for load in loads:
            if load.child.process.poll() is None:
                try:
                    load.send("close")
                    load.child.process.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass  # stopped next
            load.child.stop()


def rss_mb(pid: int) -> float:
    """Resident memory of a process; NaN once it is gone (a worker Gunicorn replaced)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def percentile_of(histogram: Counter[int], q: float) -> float:
    """Nearest-rank percentile (ms) of a 0.1 ms histogram: the bucket's upper edge."""
    total = sum(histogram.values())
    rank = max(1, round(q * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return (bucket + 1) * BUCKET_NS / 1e6
    return float("nan")


def merged(reports: list[dict[str, Any]], key: str) -> Counter[int]:
    total: Counter[int] = Counter()
    for report in reports:
        total.update({int(bucket): count for bucket, count in report[key].items()})
    return total


@dataclass
class Scenario:
    clients: int
    connected: int = 0
    connect_s: float = 0.0
    connect_errors: Counter[str] = field(default_factory=Counter)
    ready_ms: dict[str, float] = field(default_factory=dict)  # one client: connect to snapshots
    seconds: float = 0.0
    ticks: int = 0
    updates: int = 0
    with_updates: int = 0
    min_updates: int = 0
    still_open: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_received_at_ms: dict[str, float] = field(default_factory=dict)
    unstamped: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    closes_in_window: Counter[str] = field(default_factory=Counter)
    cpu_s: dict[str, float] = field(default_factory=dict)  # worker pid / part -> CPU seconds
    rss_mb_before: dict[int, float] = field(default_factory=dict)
    rss_mb_after: dict[int, float] = field(default_factory=dict)
    fds_before: dict[int, int] = field(default_factory=dict)
    fds_after: dict[int, int] = field(default_factory=dict)
    workers_restarted: bool = False
    worker_timeouts: int = 0  # Gunicorn's "WORKER TIMEOUT" kills (a loop stalled over 30 s)

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds if self.seconds else 0.0

    @property
    def delivered_share(self) -> float:
        expected = self.ticks * self.connected
        return self.updates / expected if expected else 0.0

    @property
    def worker_cpu_s(self) -> float:
        return sum(v for k, v in self.cpu_s.items() if k.startswith("worker"))

    @property
    def mb_per_1000(self) -> float:
        grown = sum(self.rss_mb_after.values()) - sum(self.rss_mb_before.values())
        return grown / self.connected * 1000 if self.connected else float("nan")

    @property
    def slow_closes(self) -> int:
        return self.closes.get(str(SLOW_CLIENT_CLOSE), 0)


def raise_fd_limit(clients: int) -> int:
    need = clients + FDS_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    if hard != resource.RLIM_INFINITY and hard < need:
        raise BenchError(f"{clients} clients need RLIMIT_NOFILE >= {need} (a socket each in a "
                         f"load process and in a worker); the hard limit is {hard}: raise it "
                         "(ulimit -Hn, limits.conf or the container's nofile)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


def run_scenario(options: argparse.Namespace, clients: int, codes: list[str]) -> Scenario:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError("redis-server not found: apt-get install redis-server")
    python = sys.executable
    result = Scenario(clients)
    with tempfile.TemporaryDirectory(prefix="stocking-bench-stream-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        if options.logs:
            folder = Path(options.logs) / f"clients-{clients}"
            folder.mkdir(parents=True, exist_ok=True)
        redis_port, api_port = free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        database_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
               "JWT_SECRET_KEY": JWT_KEY, "PORT": str(api_port),
               "WEB_CONCURRENCY": str(options.workers), "LOG_LEVEL": "WARNING"}
        for setting in options.api_env:
            name, _, value = setting.partition("=")
            env[name] = value
        redis_child = stack.enter_context(process(
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], env, folder / "redis.log"))
        bus = redis.Redis.from_url(redis_url)
        wait_until(bus.ping, "redis-server")
        upgrade(database_url, configure_logging=False)
        engine = create_engine(database_url)
        users = add_users(engine, clients + 20)  # 20 for the warm-up
        engine.dispose()
        tokens = [issue(Principal(user_id, email, Role.USER), TokenType.ACCESS, JWT_KEY, 7200)
                  for user_id, email in users]
        gunicorn = stack.enter_context(process(
            [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "api.main:app"], env,
            folder / "gunicorn.log"))
        base = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, "gunicorn")

        def workers() -> list[int]:
            return sorted(pid for pid in process_group(gunicorn.pid) if pid != gunicorn.pid)

        wait_until(lambda: len(workers()) == options.workers, "the Gunicorn workers")
        publisher = stack.enter_context(process(
            [python, str(Path(__file__).resolve()), "--role", "publisher", "--redis-url",
             redis_url, "--codes", str(len(codes)), "--ticks-per-s", str(options.ticks_per_s)],
            child_env(), folder / "publisher.log"))
        url = f"ws://127.0.0.1:{api_port}{STREAM_PATH}"
        wait_until(lambda: all(bus.exists(NAMES.quote(c)) for c in codes)
                   or publisher.poll() is not None, "the first ticks")
        if publisher.poll() is not None:
            raise BenchError(f"the publisher exited: {(folder / 'publisher.log').read_text()}")

        def pause_ticks(paused: bool) -> None:
            if not options.ticks_while_connecting:
                os.kill(publisher.pid, signal.SIGSTOP if paused else signal.SIGCONT)

        # Warm-up: a few clients come and go, so "with none" includes what a first stream loads.
        with load_processes(folder, 1, url, tokens[clients:], codes, options) as (warm,):
            answer = warm.read(READY_TIMEOUT_S + 30)
            if answer["connected"] == 0:
                raise BenchError(f"no warm-up client connected: {answer['errors']}; see "
                                 f"{folder / 'gunicorn.log'}:\n"
                                 f"{(folder / 'gunicorn.log').read_text()[-3000:]}")
            time.sleep(1.0)
        time.sleep(1.0)
        pids = workers()
        result.rss_mb_before = {pid: rss_mb(pid) for pid in pids}
        result.fds_before = {pid: open_fds(pid) for pid in pids}

        print(f"{clients} clients: connecting ...", flush=True)
        pause_ticks(True)
        started, ready_ms = time.monotonic(), []
        with load_processes(folder, min(options.load_processes, clients), url,
                            tokens[:clients], codes, options) as loads:
            for load in loads:
                per_process = clients / len(loads)
                waves = per_process / max(1, options.connect_concurrency // len(loads)) + 1
                answer = load.read(waves * READY_TIMEOUT_S + 60)
                result.connected += answer["connected"]
                result.connect_errors.update(answer["errors"])
                ready_ms.extend(answer["ready_ms"])
            result.connect_s = time.monotonic() - started
            if ready_ms:
                result.ready_ms = {"p50": percentile(ready_ms, 0.5),
                                   "p99": percentile(ready_ms, 0.99), "max": max(ready_ms)}
            print(f"  {result.connected} connected in {result.connect_s:.1f} s; "
                  f"warm-up {options.warmup:.0f} s, then {options.seconds:.0f} s measured",
                  flush=True)
            pause_ticks(False)
            time.sleep(options.warmup)

            parts: dict[str, Callable[[], list[int]]] = {
                "load": lambda: [load.pid for load in loads],
                "redis": lambda: [redis_child.pid], "publisher": lambda: [publisher.pid]}

            def cpu() -> dict[str, float]:
                sample = {f"worker {pid}": cpu_seconds(pid) for pid in pids}
                sample.update({name: sum(cpu_seconds(pid) for pid in get())
                               for name, get in parts.items()})
                sample["machine"] = machine_busy_seconds()
                return sample

            before, ticks_before, at = cpu(), entries_added(bus), time.monotonic()
            for load in loads:
                load.send("start")
            time.sleep(options.seconds)
            for load in loads:
                load.send("stop")
            after, ticks_after = cpu(), entries_added(bus)
            result.seconds = time.monotonic() - at
            result.ticks = ticks_after - ticks_before
            result.rss_mb_after = {pid: rss_mb(pid) for pid in pids}
            result.fds_after = {pid: open_fds(pid) for pid in pids}
            result.workers_restarted = workers() != pids
            reports = [load.read(60) for load in loads]
        # A worker Gunicorn replaced mid-window reads 0 at the end: its share is unknown.
        result.cpu_s = {name: max(0.0, after[name] - before[name]) for name in before}
        used = sum(v for k, v in result.cpu_s.items() if k != "machine")
        result.cpu_s["other"] = max(0.0, result.cpu_s.pop("machine") - used)
        for report in reports:
            result.updates += report["updates"]
            result.with_updates += report["with_updates"]
            result.still_open += report["open"]
            result.unstamped += report["unstamped"]
            result.closes.update(report["closes"])
            result.closes_in_window.update(report["closes_in_window"])
        result.min_updates = min((r["min_updates"] for r in reports if r["clients"]), default=0)
        for key, target in (("latency", result.latency_ms),
                            ("latency_received_at", result.latency_received_at_ms)):
            histogram = merged(reports, key)
            if histogram:
                target.update({name: percentile_of(histogram, q) for name, q in
                               (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))})
        if result.latency_ms:
            result.latency_ms["max"] = max(r["max_ns"] for r in reports) / 1e6
        log = (folder / "gunicorn.log").read_text(errors="replace")
        result.worker_timeouts = log.count("WORKER TIMEOUT")
        errors = log.count("Traceback")
        if errors:
            print(f"  warning: {errors} tracebacks in the API's log", flush=True)
    return result


def print_scenario(options: argparse.Namespace, r: Scenario) -> None:
    print(f"\n{r.clients} clients, {r.seconds:.1f} s window: {r.ticks} ticks published, "
          f"{r.updates} updates delivered ({r.updates_per_s:,.0f}/s); clients with updates "
          f"{r.with_updates}/{r.connected}, fewest updates for one client {r.min_updates}")
    print(f"  connecting: {r.connect_s:.1f} s for all, {options.connect_concurrency} at a "
          "time; one client from connect to its last snapshot: " + ", ".join(
              f"{k} {v:.0f} ms" for k, v in r.ready_ms.items()))
    if r.connect_errors:
        print(f"  connect failures: {dict(r.connect_errors)}")
    if r.closes:
        print(f"  closed by the server once connected, by code: {dict(r.closes)} "
              f"(in the window: {dict(r.closes_in_window)}; {SLOW_CLIENT_CLOSE} = slow)")
    print("  latency from the ns stamp: " + ", ".join(
        f"{k} {v:.1f} ms" for k, v in r.latency_ms.items()))
    print("  latency from received_at (ms stamps): " + ", ".join(
        f"{k} {v:.1f} ms" for k, v in r.latency_received_at_ms.items())
        + (f"; {r.unstamped} updates without the ns stamp" if r.unstamped else ""))
    for pid in r.rss_mb_before:
        name = f"worker {pid}"
        print(f"  {name}: CPU {r.cpu_s.get(name, 0):.2f} s "
              f"({r.cpu_s.get(name, 0) / r.seconds:.0%}), RSS {r.rss_mb_before[pid]:.1f}"
              f" -> {r.rss_mb_after.get(pid, float('nan')):.1f} MB, open files "
              f"{r.fds_before[pid]} -> {r.fds_after.get(pid, 0)}")
    per_message = r.worker_cpu_s / r.updates * 1e6 if r.updates else float("nan")
    print(f"  workers: {r.worker_cpu_s:.2f} CPU s ({per_message:.1f} µs per update "
          f"delivered); load processes {r.cpu_s['load'] / r.seconds:.0%}, redis "
          f"{r.cpu_s['redis'] / r.seconds:.0%}, publisher "
          f"{r.cpu_s['publisher'] / r.seconds:.0%}, other {r.cpu_s['other'] / r.seconds:.0%}"
          " (of one core)")
    if r.workers_restarted or r.worker_timeouts:
        print(f"  warning: workers replaced during the run; Gunicorn killed "
              f"{r.worker_timeouts} for a stalled loop (WORKER TIMEOUT): its clients were "
              "cut off, and the memory figures mean little")
    if r.cpu_s["other"] / r.seconds > 0.15:
        print("  warning: other work used the machine during the window")


def print_report(options: argparse.Namespace, results: list[Scenario], fd_limit: int) -> None:
    load_avg = os.getloadavg()
    print()
    print(f"machine: {os.cpu_count()} CPUs (shared), load average {load_avg[0]:.1f}; Gunicorn "
          f"{options.workers} Uvicorn workers; {options.codes} codes, {options.ticks_per_s:g} "
          f"ticks/s in all; {options.load_processes} load processes; auth by "
          f"{options.auth}{', permessage-deflate offered' if options.deflate else ''}; "
          f"RLIMIT_NOFILE {fd_limit}")
    print(f"{'clients':>7} {'connected':>9} {'connect s':>9} {'p50 ms':>7} {'p90 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'updates/s':>10} {'delivered':>9} {'slow':>5} "
          f"{'worker CPU':>10} {'RSS MB/1k':>9}")
    for r in results:
        lat = r.latency_ms
        print(f"{r.clients:>7} {r.connected:>9} {r.connect_s:>9.1f} "
              f"{lat.get('p50', float('nan')):>7.1f} {lat.get('p90', float('nan')):>7.1f} "
              f"{lat.get('p99', float('nan')):>7.1f} {lat.get('max', float('nan')):>7.1f} "
              f"{r.updates_per_s:>10,.0f} {r.delivered_share:>9.1%} {r.slow_closes:>5} "
              f"{r.worker_cpu_s / r.seconds:>10.0%} {r.mb_per_1000:>9.1f}")
    biggest = max(results, key=lambda r: r.clients)
    p99 = biggest.latency_ms.get("p99", float("inf"))
    met = (biggest.clients >= TARGET_CLIENTS and biggest.connected == biggest.clients
           and p99 < TARGET_P99_MS and biggest.slow_closes == 0)
    if biggest.clients < TARGET_CLIENTS:
        print(f"\ntarget {TARGET_CLIENTS:,} clients with p99 < {TARGET_P99_MS:.0f} ms: not "
              f"measured (largest run {biggest.clients:,} clients)")
    else:
        print(f"\ntarget {TARGET_CLIENTS:,} clients with p99 < {TARGET_P99_MS:.0f} ms: "
              f"{'met' if met else 'NOT met'} ({biggest.connected:,} connected, "
              f"p99 {p99:.1f} ms, {biggest.slow_closes} slow-client closes)")


def as_json(options: argparse.Namespace, results: list[Scenario]) -> dict[str, Any]:
    return {
        "options": {k: v for k, v in vars(options).items() if k != "role"},
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "scenarios": [{
            "clients": r.clients, "connected": r.connected, "connect_s": r.connect_s,
            "connect_errors": r.connect_errors, "ready_ms": r.ready_ms, "seconds": r.seconds,
            "ticks": r.ticks,
            "updates": r.updates, "updates_per_s": r.updates_per_s,
            "delivered_share": r.delivered_share, "with_updates": r.with_updates,
            "min_updates": r.min_updates, "still_open": r.still_open,
            "latency_ms": r.latency_ms, "latency_received_at_ms": r.latency_received_at_ms,
            "unstamped": r.unstamped, "closes": r.closes, "closes_in_window": r.closes_in_window,
            "slow_closes": r.slow_closes, "cpu_s": r.cpu_s, "worker_cpu_s": r.worker_cpu_s,
            "rss_mb_before": r.rss_mb_before, "rss_mb_after": r.rss_mb_after,
            "mb_per_1000_clients": r.mb_per_1000, "workers_restarted": r.workers_restarted,
            "worker_timeouts": r.worker_timeouts,
        } for r in results],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000],
                        help="numbers of concurrent clients, one run each (1000 5000)")
    parser.add_argument("--codes", type=int, default=20, help="codes each client watches (20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (20)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds between all connected and the window (3)")
    parser.add_argument("--ticks-per-s", type=float, default=20.0,
                        help="ticks published per second over all codes (20: the simulator's "
                             "SIM_TICKS_PER_SEC default)")
    parser.add_argument("--load-processes", type=int, default=2,
                        help="processes the clients are spread over (2)")
    parser.add_argument("--connect-concurrency", type=int, default=200,
                        help="connections being opened at once, over all load processes (200)")
    parser.add_argument("--auth", choices=("message", "header"), default="message",
                        help="first message {op: auth} (browsers) or Authorization header")
    parser.add_argument("--deflate", action="store_true",
                        help="offer permessage-deflate, as browsers do (off: as most mobile "
                             "WebSocket libraries)")
    parser.add_argument("--ticks-while-connecting", action="store_true",
                        help="keep publishing while the clients connect (default: the publisher "
                             "is stopped then, so connecting is measured apart from fan-out)")
    parser.add_argument("--workers", type=int, default=2, help="Gunicorn workers (2)")
    parser.add_argument("--api-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the API (repeatable)")
    parser.add_argument("--smoke", action="store_true",
                        help="20 clients, 5 s window, 1 s warm-up, 1 load process")
    parser.add_argument("--json", help="also write every figure as JSON to this file")
    parser.add_argument("--logs", help="keep the processes' logs in this folder")
    # Internal: this script as one of its own child processes.
    parser.add_argument("--role", choices=("bench", "load", "publisher"), default="bench",
                        help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.smoke:
        options.clients, options.seconds, options.warmup = [20], 5.0, 1.0
        options.load_processes = 1
    if not 1 <= options.codes:
        parser.error("--codes must be at least 1")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.role == "load":
        uvloop.run(run_load())  # the loop Uvicorn uses too: a client costs less CPU
        return 0
    if options.role == "publisher":
        run_publisher(options.redis_url, bench_codes(options.codes), options.ticks_per_s)
        return 0
    codes = bench_codes(options.codes)
    # SIGTERM (timeout(1), a supervisor) unwinds like Ctrl-C: every child is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        fd_limit = raise_fd_limit(max(options.clients))
        results = []
        for clients in options.clients:
            results.append(run_scenario(options, clients, codes))
            print_scenario(options, results[-1])
    except (BenchError, bench_relayer.BenchError) as exc:
        print(f"bench_stream: {exc}", file=sys.stderr)
        return 2
    print_report(options, results, fd_limit)
    if options.json:
        Path(options.json).write_bytes(orjson.dumps(as_json(options, results),
                                                    option=orjson.OPT_NON_STR_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
