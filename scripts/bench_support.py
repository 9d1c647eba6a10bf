"""Helpers shared by the API benchmarks (scripts/bench_api.py, scripts/bench_orders.py): child
processes torn down as a group, free ports, readiness polling, percentiles, and running `wrk`
(Debian package `wrk`) and reading its report, and the CPU each part of a run used.

Importing this module puts the repository root on sys.path, so a benchmark run as a script
(`.venv/bin/python scripts/bench_api.py`, which puts scripts/ on sys.path) can import `api` and
`relayer` after it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from redis.asyncio import Redis as AsyncRedis

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

JWT_KEY = "bench-signing-key-" + "k" * 40


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A private `redis-server` (no persistence) on `port`, for measuring Redis faults: killed
    abruptly and started again empty."""

    def __init__(self, folder: str, port: int) -> None:
        self.folder, self.port = folder, port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.folder, "--logfile", f"{self.folder}/log"])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def answering(self) -> None:
        """Returns as soon as the server answers PING."""
        while True:
            client = AsyncRedis(port=self.port, socket_connect_timeout=0.2)
            try:
                await client.ping()
                return
            except (OSError, redis.RedisError):  # not up yet
                await asyncio.sleep(0.005)
            finally:
                await client.aclose()


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session (so its children go with it), output to `log`; SIGTERM to
    the group on exit, SIGKILL after 15 s."""
    with log.open("wb") as out:
        child = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def wait_until(check: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (OSError, httpx.HTTPError, redis.RedisError):
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready within {timeout_s:.0f}s")
        time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    p90_ms: float = 0.0
    requests: int = 0
    socket_errors: int = 0  # connect + read + write + timeout
    output: str = ""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, *, duration_s: int, connections: int, token: str | None = None,
            rate: float | None = None, lua: str | None = None, threads: int = 2) -> WrkResult:
    """wrk closed loop against `url`. `token`: a bearer token on every request. `rate`: every
    connection waits connections/rate between requests (closed loop, so slow answers lower the
    rate; the achieved rate is reported). `lua`: a wrk script (its source), e.g. a `request()`
    that builds each request."""
    if rate and lua:
        raise ValueError("give a rate or a script, not both")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    if rate:
        # Throttled: every connection waits connections/rate between requests.
        lua = f"function delay() return {connections / rate * 1000:.3f} end\n"
    script = None
    if lua:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(lua)
        script.close()
        command += ["-s", script.name]
    try:
        output = subprocess.run([*command, url], capture_output=True, text=True,
                                check=True).stdout
    finally:
        if script:
            os.unlink(script.name)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise BenchError(f"unreadable wrk output:\n{output}")
    percentiles = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)]
                   for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    total = re.search(r"(\d+) requests in", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    return WrkResult(float(rps.group(1)), percentiles["50"], percentiles["99"],
                     int(non_2xx.group(1)) if non_2xx else 0, p90_ms=percentiles["90"],
                     requests=int(total.group(1)) if total else 0,
                     socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
                     output=output)


# --- CPU accounting (Linux /proc) ---------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # fields from #3 (state) on
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle, summed over every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def process_group(pgid: int) -> list[int]:
    """The pids of a process group (a child started by `process` and everything it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def pids_named(name: str) -> list[int]:
    """The pids whose command name (/proc/<pid>/comm) is `name`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


# --- CPU per part of a run ---------------------------------------------------------------------


@dataclass
class CpuSample:
    at: float
    machine: float
    by_pid: dict[str, dict[int, float]]
    wrk: float  # CPU of waited-for children of this process (wrk)
    bench: float  # this process (the quote thread; idle while wrk runs)


class CpuMeter:
    """CPU used by each part during a window, in % of one core; `other` is the machine's busy
    time that none of them used (other work on the machine: the window is not clean)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups

    def sample(self) -> CpuSample:
        times = os.times()
        return CpuSample(time.monotonic(), machine_busy_seconds(),
                         {name: {pid: cpu_seconds(pid) for pid in pids()}
                          for name, pids in self.groups.items()},
                         times.children_user + times.children_system,
                         times.user + times.system)

    @staticmethod
    def window(a: CpuSample, b: CpuSample) -> dict[str, float]:
        seconds = b.at - a.at
        pct = {name: sum(cpu - a.by_pid[name].get(pid, 0.0) for pid, cpu in pids.items())
               / seconds * 100 for name, pids in b.by_pid.items()}
        pct["wrk"] = (b.wrk - a.wrk) / seconds * 100
        pct["bench"] = (b.bench - a.bench) / seconds * 100
        pct["other"] = max(0.0, (b.machine - a.machine) / seconds * 100 - sum(pct.values()))
        return pct
