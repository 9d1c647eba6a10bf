"""Benchmark of the relayer daemon: ingest throughput and tick-to-Redis latency.

What runs (all on this machine, each in its own process group):
- a private `redis-server` on a free port, no persistence (`--save "" --appendonly no`), in a
  temporary folder;
- a feeder: `scripts/bench_feeder.py` in its own process, a minimal STOMP 1.2 over WebSocket
  server (`/ws`, subprotocol `v12.stomp`, no compression) that answers CONNECT (heart-beats
  `0,0`) and SUBSCRIBE (with RECEIPT) like the Toss feed, then streams MESSAGE frames of Toss
  tick JSON when told to over its stdin;
- the real relayer, `python -m relayer`, configured only through its environment, subscribed to
  20 instrument codes plus one probe code.

How it measures:
- Throughput (max rate): the feeder writes as fast as the connection drains. After a warm-up, the
  ticks that reached Redis over the window are the delta of `entries-added` of
  `XINFO STREAM NS:ticks` (every XADD counts, although the stream is capped). CPU seconds of each
  process come from /proc/<pid>/stat (utime + stime), so the table shows which process was the
  bottleneck, and the relayer's CPU time per tick.
- Latency (paced at R ticks/s): the feeder also sends 200 probe ticks/s for `PROBE_CODE`, each
  rendered at the moment of sending with `cumulativeAmount` = `time.time_ns()`. The relayer keeps
  that integer exact in the quote's `cum_amount`, so a subscriber of the probe's tick channel in
  this process computes `time.time_ns() - cum_amount` for every probe: feeder socket write to
  Redis PUBLISH delivery, through the relayer.

The feeder must cost almost nothing per tick, since it shares the cores with the relayer and
Redis: ticks are pre-rendered into a pool (20 codes x 50 prices) of ready WebSocket frames,
serialised by websockets' own `Frame.serialize` (unmasked text frames: the bytes that
`ServerConnection.send(str)` would write), and written straight to the transport in chunks,
honouring the connection's flow control. `--frames-per-message K` packs K STOMP frames into one
WebSocket message (the real feed sends one).

The report also shows each window's relayer resident memory (a relayer that reads faster than
it writes buffers the difference, so its memory grows) and the CPU used by processes outside the
benchmark ("other": a busy machine makes the numbers unclean, and the report says so).

Usage:
    .venv/bin/python scripts/bench_relayer.py [--window 10] [--warmup 2]
        [--rates 1000,5000,20000] [--frames-per-message 1,10] [--quick] [--json PATH]
        [--relayer-env NAME=VALUE ...]   (e.g. RELAYER_FLUSH_MAX_BATCH=2000: measure a setting)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import orjson
import redis

# The feeder is a sibling script (scripts/ is on sys.path when this runs as a script).
from bench_feeder import CODES, PROBE_CODE, PROBES_PER_S

from relayer.bus import (
    BusNames,
    Command,
    CommandResult,
    CommandType,
    DesiredSource,
    RelayerHealth,
    TopicTemplate,
)
from relayer.shared_settings import DEFAULT_TOPIC_TEMPLATE

REPO = Path(__file__).resolve().parent.parent
NOISY_OTHER_PCT = 15.0  # CPU% used outside the benchmark above which a report warns
CLK_TCK = os.sysconf("SC_CLK_TCK")
NAMES = BusNames()
TOPICS = TopicTemplate(DEFAULT_TOPIC_TEMPLATE)


class BenchError(Exception):
    """The benchmark cannot run or a process under test misbehaved."""


# ============================================================================================
# Bench side: processes


@dataclass
class Child:
    """A child process in its own process group, with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_running(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with status {code}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def send_line(self, line: str) -> None:
        """One command on a piped child's stdin."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(f"{line}\n".encode())
        stdin.flush()

    def read_json(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line of a piped child's stdout; BenchError (with its log) if none
        comes within `timeout_s`."""
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        line = stdout.readline() if ready else b""
        if not line:
            self.check_running()
            raise BenchError(f"{self.name} did not answer within {timeout_s:.0f}s:\n"
                             f"{self.log_tail()}")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(grace_s)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def spawn(name: str, command: list[str], folder: Path, env: dict[str, str] | None = None,
          *, piped: bool = False) -> Child:
    log_path = folder / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, start_new_session=True,
            stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
            stdout=subprocess.PIPE if piped else log, stderr=log,
        )
    return Child(name, process, log_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1", **extra}


def start_redis(binary: str, folder: Path) -> tuple[Child, str]:
    port = free_port()
    child = spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(folder)], folder)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_redis(url, child)
    except BaseException:  # including Ctrl-C: the caller does not own the child yet
        child.stop()
        raise
    return child, url


def wait_redis(url: str, child: Child, timeout_s: float = 10.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            child.check_running()
            if time.monotonic() > deadline:
                raise BenchError(f"redis-server at {url} did not start") from None
            time.sleep(0.02)
        finally:
            client.close()


class FeederControl:
    """The feeder child, driven by one-line commands on its stdin (one JSON line back)."""

    def __init__(self, folder: Path) -> None:
        command = [sys.executable, str(Path(__file__).resolve().parent / "bench_feeder.py")]
        self.child = spawn("feeder", command, folder, child_env(), piped=True)
        try:
            self.port = int(self._read()["port"])
        except BaseException:  # including Ctrl-C: the caller does not own the child yet
            self.child.stop()
            raise

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def command(self, line: str) -> dict[str, Any]:
        self.child.send_line(line)
        return self._read()

    def _read(self) -> dict[str, Any]:
        return self.child.read_json(timeout_s=10.0)


def start_relayer(folder: Path, redis_url: str, upstream_url: str,
                  extra_env: dict[str, str]) -> Child:
    env = child_env(
        REDIS_URL=redis_url, RELAYER_UPSTREAM="sim", RELAYER_UPSTREAM_URL=upstream_url,
        RELAYER_SUBSCRIBE=",".join((*CODES, PROBE_CODE)), RELAYER_SUBSCRIBE_BATCH="50",
        LOG_LEVEL="WARNING", **extra_env,
    )
    return spawn("relayer", [sys.executable, "-m", "relayer"], folder, env)


def wait_subscribed(client: redis.Redis, relayer: Child, timeout_s: float = 30.0) -> None:
    expected = len(CODES) + 1
    deadline = time.monotonic() + timeout_s
    while client.hlen(NAMES.active_subscriptions) < expected:
        relayer.check_running()
        if time.monotonic() > deadline:
            raise BenchError(f"relayer did not subscribe {expected} topics within {timeout_s}s:"
                             f"\n{relayer.log_tail()}")
        time.sleep(0.05)


# ============================================================================================
# Bench side: measurements


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # fields from #3 (state) on
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle, summed over every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident memory of a process: a growing relayer is buffering what it cannot write."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def entries_added(client: redis.Redis) -> int:
    try:
        return int(client.xinfo_stream(NAMES.tick_stream)["entries-added"])
    except redis.ResponseError:  # no stream yet
        return 0


@dataclass(frozen=True)
class Snapshot:
    at: float
    entries: int
    cpu: dict[str, float]
    machine_busy: float
    fed: int
    probes: int
    relayer_rss_mb: float


@dataclass(frozen=True)
class Window:
    """What happened between two snapshots."""

    seconds: float
    ticks: int
    fed: int
    probes: int
    cpu_pct: dict[str, float]
    machine_pct: float
    relayer_rss_mb: tuple[float, float]  # at the start and at the end of the window

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.seconds

    @property
    def relayer_us_per_tick(self) -> float:
        return self.cpu_pct["relayer"] / 100 * self.seconds / max(self.ticks, 1) * 1e6

    @property
    def other_pct(self) -> float:
        """CPU used by processes outside the benchmark: high means the window is not clean."""
        return max(0.0, self.machine_pct - sum(self.cpu_pct.values()))


class Probe:
    """Subscribes the probe's tick channel in a thread; latency = now_ns - cum_amount."""

    def __init__(self, redis_url: str) -> None:
        # Kept referenced: a collected client closes the connection its pub/sub is using.
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub(  # type: ignore[no-untyped-call]
            ignore_subscribe_messages=True)
        self._pubsub.subscribe(NAMES.tick_channel(PROBE_CODE))
        self._samples: list[float] = []
        self._recording = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="probe", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None and self._recording:
                now = time.time_ns()
                self._samples.append((now - orjson.loads(message["data"])["cum_amount"]) / 1e6)

    def start(self) -> None:
        self._samples = []
        self._recording = True

    def take(self) -> list[float]:
        self._recording = False
        return sorted(self._samples)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._pubsub.close()
        self._client.close()


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (nan when empty)."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Bench:
    """The running system under test and the probes into it."""

    client: redis.Redis
    feeder: FeederControl
    pids: dict[str, int]
    relayer: Child
    warmup_s: float
    window_s: float

    def snapshot(self) -> Snapshot:
        stats = self.feeder.command("stats")
        return Snapshot(time.monotonic(), entries_added(self.client),
                        {name: cpu_seconds(pid) for name, pid in self.pids.items()},
                        machine_busy_seconds(), int(stats["sent"]), int(stats["probes"]),
                        rss_mb(self.relayer.pid))

    def window(self) -> Window:
        """Measure one window (the caller has warmed up)."""
        self.relayer.check_running()
        before = self.snapshot()
        time.sleep(self.window_s)
        after = self.snapshot()
        self.relayer.check_running()
        seconds = after.at - before.at
        cpu = {n: (after.cpu[n] - before.cpu[n]) / seconds * 100 for n in self.pids}
        return Window(seconds, after.entries - before.entries, after.fed - before.fed,
                      after.probes - before.probes, cpu,
                      (after.machine_busy - before.machine_busy) / seconds * 100,
                      (before.relayer_rss_mb, after.relayer_rss_mb))

    def settle(self, timeout_s: float = 60.0) -> float:
        """Stop feeding and wait until the relayer has written its backlog; seconds taken."""
        self.feeder.command("idle")
        started = last_change = time.monotonic()
        last = entries_added(self.client)
        while time.monotonic() - last_change < 0.5:
            time.sleep(0.1)
            now = entries_added(self.client)
            if now != last:
                last, last_change = now, time.monotonic()
            if time.monotonic() - started > timeout_s:
                raise BenchError(f"the relayer was still writing {timeout_s}s after the feed")
        return last_change - started

    def health(self) -> RelayerHealth:
        return RelayerHealth.from_hash(self.client.hgetall(NAMES.relayer_health))

    def max_rate(self, per_message: int) -> dict[str, Any]:
        self.feeder.command(f"max {per_message}")
        time.sleep(self.warmup_s)
        window = self.window()
        drained_s = self.settle()
        health = self.health()
        if window.ticks == 0:
            raise BenchError(f"no tick reached Redis; relayer health {health}:\n"
                             f"{self.relayer.log_tail()}")
        return {"frames_per_message": per_message, **asdict(window),
                "ticks_per_s": window.ticks_per_s, "other_pct": window.other_pct,
                "relayer_us_per_tick": window.relayer_us_per_tick,
                "drain_s": drained_s, "dropped_total": health.dropped_total or 0,
                "malformed_total": health.malformed_total or 0}

    def command_round_trips(self, count: int) -> dict[str, Any]:
        """Admin-style commands as the API sends them: desired set, nudge, BLPOP the result.

        Each subscribe goes upstream as a SUBSCRIBE with a receipt, so the round trip covers
        Redis pub/sub, the relayer's reconcile, the upstream receipt and the result push.
        """
        timings: dict[CommandType, list[float]] = {CommandType.SUBSCRIBE: [],
                                                   CommandType.UNSUBSCRIBE: []}
        # What the API does at start (no API runs here): the desired set's SQL part is loaded,
        # so the relayer may unsubscribe what the set does not hold (docs/RELAYER.md).
        self.client.hset(NAMES.desired_initialised, DesiredSource.SQL.value, "bench")
        for serial in range(count):
            topic = TOPICS.topic(f"A8{serial:05d}")
            for kind in (CommandType.SUBSCRIBE, CommandType.UNSUBSCRIBE):
                command = Command(kind, topic)
                started = time.perf_counter()
                if kind is CommandType.SUBSCRIBE:
                    self.client.sadd(NAMES.desired_subscriptions, topic)
                else:
                    self.client.srem(NAMES.desired_subscriptions, topic)
                self.client.publish(NAMES.commands, command.to_json())
                answer = self.client.blpop([NAMES.command_result(command.id)], timeout=10)
                elapsed_ms = (time.perf_counter() - started) * 1000
                if answer is None or not CommandResult.from_json(answer[1]).ok:
                    raise BenchError(f"command {kind} {topic} failed: {answer!r}")
                timings[kind].append(elapsed_ms)
        return {kind.value: {"samples": len(values), "p50_ms": percentile(sorted(values), 0.50),
                             "p99_ms": percentile(sorted(values), 0.99), "max_ms": max(values)}
                for kind, values in timings.items()}

    def paced(self, rate: float, probe: Probe) -> dict[str, Any]:
        self.feeder.command(f"paced {rate:g}")
        time.sleep(self.warmup_s)
        probe.start()
        window = self.window()
        latencies = probe.take()
        self.settle()
        if not latencies:
            raise BenchError(f"no probe quote arrived on {NAMES.tick_channel(PROBE_CODE)}")
        return {"rate": rate, "offered_per_s": rate + PROBES_PER_S, **asdict(window),
                "ticks_per_s": window.ticks_per_s, "other_pct": window.other_pct,
                "samples": len(latencies),
                "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
                "max_ms": latencies[-1]}


# ============================================================================================
# Report


def machine_facts(redis_binary: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    version = subprocess.run([redis_binary, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()
    redis_version = next((w[2:] for w in version if w.startswith("v=")), " ".join(version))
    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "cpu_model": model, "python": platform.python_version(),
            "redis_server": redis_version, "websockets": package_version("websockets"),
            "redis_py": package_version("redis"), "kernel": platform.release()}


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def max_rate_table(results: list[dict[str, Any]]) -> str:
    headers = ["K", "ticks/s to Redis", "fed/s", "relayer CPU%", "us CPU/tick",
               "ticks per relayer CPU-s", "feeder CPU%", "redis CPU%", "other CPU%",
               "relayer RSS MB", "dropped"]
    rows = []
    for r in results:
        cpu = r["cpu_pct"]
        rows.append([str(r["frames_per_message"]), f"{r['ticks_per_s']:,.0f}",
                     f"{r['fed'] / r['seconds']:,.0f}", f"{cpu['relayer']:.0f}",
                     f"{r['relayer_us_per_tick']:.1f}", f"{1e6 / r['relayer_us_per_tick']:,.0f}",
                     f"{cpu['feeder']:.0f}", f"{cpu['redis']:.0f}", f"{r['other_pct']:.0f}",
                     "{:.0f} -> {:.0f}".format(*r["relayer_rss_mb"]), str(r["dropped_total"])])
    return table(headers, rows)


def latency_table(results: list[dict[str, Any]]) -> str:
    headers = ["offered ticks/s", "achieved ticks/s", "probes", "p50 ms", "p99 ms", "max ms",
               "relayer CPU%", "redis CPU%", "feeder CPU%", "other CPU%"]
    rows = []
    for r in results:
        cpu = r["cpu_pct"]
        rows.append([f"{r['rate']:,.0f} + {PROBES_PER_S}", f"{r['ticks_per_s']:,.0f}",
                     str(r["samples"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                     f"{r['max_ms']:.2f}", f"{cpu['relayer']:.0f}", f"{cpu['redis']:.0f}",
                     f"{cpu['feeder']:.0f}", f"{r['other_pct']:.0f}"])
    return table(headers, rows)


def print_report(report: dict[str, Any]) -> None:
    facts = report["machine"]
    print(f"\ncommand: {report['command']}")
    print(f"machine: {facts['nproc']} CPUs ({facts['usable_cpus']} usable), {facts['cpu_model']},"
          f" Linux {facts['kernel']}; Python {facts['python']}, redis-server "
          f"{facts['redis_server']}, websockets {facts['websockets']}, redis-py "
          f"{facts['redis_py']}")
    if report["relayer_env"]:
        print("relayer environment: " + " ".join(f"{k}={v}" for k, v in
                                                 report["relayer_env"].items()))
    print(f"window {report['window_s']:g} s after {report['warmup_s']:g} s warm-up; CPU% is "
          "of one core; other = machine busy time not used by the benchmark's processes\n")
    print("Max-rate ingest (K = STOMP frames per WebSocket message):")
    print(max_rate_table(report["max_rate"]))
    print(f"\nTick-to-Redis latency (paced, + {PROBES_PER_S} probe ticks/s; feeder write to "
          "PUBLISH delivery):")
    print(latency_table(report["latency"]))
    print("\nCommand round trip (SADD/SREM + PUBLISH NS:cmd -> receipted upstream -> "
          "BLPOP result):")
    print(table(["command", "samples", "p50 ms", "p99 ms", "max ms"],
                [[kind, str(c["samples"]), f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}",
                  f"{c['max_ms']:.2f}"] for kind, c in report["commands"].items()]))
    noisy = max((r["other_pct"] for r in [*report["max_rate"], *report["latency"]]), default=0)
    if noisy > NOISY_OTHER_PCT:
        print(f"\nWARNING: processes outside the benchmark used up to {noisy:.0f}% CPU during a "
              "window; these numbers are not clean. Re-run on a quiet machine.")


# ============================================================================================
# Entry point


def run(options: argparse.Namespace) -> dict[str, Any]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server not found on PATH (apt-get install redis-server); "
                         "the benchmark needs a real Redis")
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]), "machine": machine_facts(binary),
        "window_s": options.window, "warmup_s": options.warmup,
        "relayer_env": options.relayer_env, "max_rate": [], "latency": [],
    }
    with tempfile.TemporaryDirectory(prefix="stocking-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        folder = Path(tmp)
        redis_child, redis_url = start_redis(binary, folder)
        stack.callback(redis_child.stop)
        feeder = FeederControl(folder)
        stack.callback(feeder.child.stop)
        relayer = start_relayer(folder, redis_url, feeder.url, options.relayer_env)
        stack.callback(relayer.stop)
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        wait_subscribed(client, relayer)
        probe = Probe(redis_url)
        stack.callback(probe.close)
        pids = {"relayer": relayer.pid, "feeder": feeder.child.pid, "redis": redis_child.pid,
                "bench": os.getpid()}
        bench = Bench(client, feeder, pids, relayer, options.warmup, options.window)
        for per_message in options.frames_per_message:
            print(f"max rate, {per_message} frame(s) per message ...", flush=True)
            report["max_rate"].append(bench.max_rate(per_message))
        print(f"{options.commands} subscribe + unsubscribe command round trips ...", flush=True)
        report["commands"] = bench.command_round_trips(options.commands)
        for rate in options.rates:
            print(f"paced at {rate:g} ticks/s ...", flush=True)
            report["latency"].append(bench.paced(rate, probe))
    return report


def int_list(value: str) -> list[int]:
    return [int(item) for item in value.split(",") if item.strip()]


def env_pair(value: str) -> tuple[str, str]:
    name, sep, setting = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    return name, setting


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the relayer (python -m relayer).")
    parser.add_argument("--window", type=float, help="seconds measured per scenario (10)")
    parser.add_argument("--warmup", type=float, help="seconds before each window (2)")
    parser.add_argument("--rates", type=int_list, default=[1000, 5000, 20000],
                        help="paced rates in ticks/s, comma-separated (1000,5000,20000)")
    parser.add_argument("--frames-per-message", type=int_list, default=[1, 10],
                        help="STOMP frames per WebSocket message for max rate (1,10)")
    parser.add_argument("--relayer-env", type=env_pair, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="extra environment for the relayer (repeatable), e.g. "
                             "RELAYER_FLUSH_MAX_BATCH=2000, to measure a setting")
    parser.add_argument("--commands", type=int, help="subscribe/unsubscribe round trips (500)")
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    options = parser.parse_args(argv)
    options.relayer_env = dict(options.relayer_env)
    if options.window is None:
        options.window = 2.0 if options.quick else 10.0
    if options.warmup is None:
        options.warmup = 1.0 if options.quick else 2.0
    if options.commands is None:
        options.commands = 50 if options.quick else 500
    return options


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    try:
        report = run(options)
    except BenchError as exc:
        print(f"bench_relayer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_relayer: interrupted; everything stopped", file=sys.stderr)
        return 130
    print_report(report)
    if options.json:
        options.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"\nJSON written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
