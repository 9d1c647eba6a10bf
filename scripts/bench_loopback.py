"""The floor under scripts/bench_stream.py: what one small TCP write per message per client
costs this machine's kernel, with no server logic at all.

A writer process holds N loopback TCP connections and, `--rate` times a second, writes one
`--size`-byte message (a stream `update` is ~600 bytes) to every one of them, stamped with the
time of the write; a reader process (uvloop, one protocol per connection, as the stream
benchmark's load clients) reads them and records the latency. Both are plain asyncio
protocols on uvloop: the CPU they use per message is the kernel's send and receive paths over
loopback plus the event loop's callbacks, i.e. the least any stream server on this machine
pays per delivered message when each is its own write.

    .venv/bin/python scripts/bench_loopback.py [--clients 1000 5000] [--rate 20] [--size 600]
        [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import uvloop
from bench_support import cpu_seconds, free_port, machine_busy_seconds, percentile

BUCKET_NS = 100_000  # 0.1 ms


async def write_role(port: int, clients: int, rate: float, size: int) -> None:
    """Connect `clients` sockets to the reader, then write to all of them `rate` times a
    second until stdin closes."""
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(clients):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transports.append(transport)
    print("connected", flush=True)
    padding = b"x" * (size - 21)
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    while not stdin_closed.done() and not transports[0].is_closing():
        started = time.monotonic()
        message = b"%020d" % time.time_ns() + padding + b"\n"
        for transport in transports:
            transport.write(message)
        await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))


class Reader(asyncio.Protocol):
    def __init__(self, latency: Counter[int], counts: list[int], size: int) -> None:
        self.latency, self.counts, self.size, self.pending = latency, counts, size, b""

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        data = self.pending + data
        whole = len(data) // self.size * self.size
        for at in range(0, whole, self.size):
            self.latency[(now - int(data[at:at + 20])) // BUCKET_NS] += 1
            self.counts[0] += 1
        self.pending = data[whole:]


async def read_role(port: int, size: int) -> None:
    """Accept connections on `port`; on stdin "start"/"stop", record; then print the
    histogram as JSON."""
    loop = asyncio.get_running_loop()
    latency: Counter[int] = Counter()
    counts = [0]
    server = await loop.create_server(lambda: Reader(latency, counts, size), "127.0.0.1", port,
                                      backlog=8192)
    print("listening", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "start"
    latency.clear()
    counts[0] = 0
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    print(orjson.dumps({"count": counts[0], "latency": dict(latency)},
                       option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
    server.close()


def run(clients: int, rate: float, size: int, seconds: float) -> None:
    port = free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    reader = subprocess.Popen([*me, "--role", "read", "--port", str(port), "--size", str(size)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdin is not None
    assert reader.stdout.readline().strip() == "listening"
    writer = subprocess.Popen([*me, "--role", "write", "--port", str(port), "--clients",
                               str(clients), "--rate", str(rate), "--size", str(size)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline().strip() == "connected"
    time.sleep(2)  # warm-up
    before = {"writer": cpu_seconds(writer.pid), "reader": cpu_seconds(reader.pid),
              "machine": machine_busy_seconds()}
    reader.stdin.write("start\n")
    reader.stdin.flush()
    time.sleep(seconds)
    reader.stdin.write("stop\n")
    reader.stdin.flush()
    after = {"writer": cpu_seconds(writer.pid), "reader": cpu_seconds(reader.pid),
             "machine": machine_busy_seconds()}
    report = orjson.loads(reader.stdout.readline())
    writer.stdin.close()
    writer.wait(timeout=10)
    reader.wait(timeout=10)
    count = report["count"]
    histogram = Counter({int(k): v for k, v in report["latency"].items()})
    used = {name: after[name] - before[name] for name in after}
    other = max(0.0, used["machine"] - used["writer"] - used["reader"])
    values = sorted(histogram.elements())
    print(f"{clients} connections x {rate:g} messages/s of {size} B: {count / seconds:,.0f} "
          f"messages/s read ({count / (clients * rate * seconds):.0%} of those written)")
    if values:
        print(f"  latency p50 {percentile(values, 0.5) / 10:.1f} ms, "
              f"p99 {percentile(values, 0.99) / 10:.1f} ms, max {values[-1] / 10:.1f} ms")
    per = 1e6 / max(count, 1)
    print(f"  writer {used['writer'] / seconds:.0%} of a core ({used['writer'] * per:.1f} µs "
          f"per message), reader {used['reader'] / seconds:.0%} ({used['reader'] * per:.1f} µs"
          f"), other {other / seconds:.0%}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("write", "read"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    if options.role == "write":
        uvloop.run(write_role(options.port, options.clients[0], options.rate, options.size))
    elif options.role == "read":
        uvloop.run(read_role(options.port, options.size))
    else:
        # Each connection is a socket in both processes (they inherit the limit).
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        needed = max(options.clients) + 256
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        print(f"machine: {os.cpu_count()} CPUs; {socket.gethostname()}")
        for clients in options.clients:
            run(clients, options.rate, options.size, options.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
