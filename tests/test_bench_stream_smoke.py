"""`scripts/bench_stream.py --smoke` runs end to end (a private Redis, Gunicorn with 2 workers,
the tick publisher, 20 WebSocket clients for 5 s) and every client gets live updates.

Only that the benchmark works: no timing is asserted (the numbers are in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import REPO, scaled

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench_stream")]

# Settings the benchmark chooses itself; whatever the developer's shell has is removed.
CONTROLLED = ("REDIS_URL", "DATABASE_URL", "PORT", "WEB_CONCURRENCY", "STOCKING_ENV",
              "STOCKING_NS", "JWT_SECRET_KEY", "GUNICORN_CMD_ARGS", "API_HOST",
              "PROMETHEUS_MULTIPROC_DIR")


def test_smoke_run_delivers_updates_to_every_client(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    run = subprocess.run(
        [sys.executable, "scripts/bench_stream.py", "--smoke", "--json", str(report),
         "--logs", str(tmp_path / "logs")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=scaled(180))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert "updates/s" in run.stdout and "RSS MB/1k" in run.stdout, run.stdout

    (scenario,) = json.loads(report.read_text())["scenarios"]
    assert scenario["clients"] == 20
    assert scenario["connected"] == 20, scenario["connect_errors"]
    assert scenario["ticks"] > 0
    assert scenario["with_updates"] == 20
    assert scenario["min_updates"] > 0
    assert scenario["still_open"] == 20
    assert scenario["slow_closes"] == 0
    assert scenario["unstamped"] == 0  # the ns stamp reached the clients intact
    latency = scenario["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert scenario["worker_cpu_s"] > 0
    assert len(scenario["rss_mb_after"]) == 2  # both Gunicorn workers measured


def test_the_loopback_floor_runs_and_reads_every_message() -> None:
    run = subprocess.run(
        [sys.executable, "scripts/bench_loopback.py", "--clients", "20", "--seconds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=scaled(60))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    # 20 connections x 20 messages/s for 1 s, all read: about 400 (the window is not aligned
    # with the writes; a reader that lost bytes would misparse the stamps and fail).
    assert "20 connections x 20 messages/s of 600 B" in run.stdout, run.stdout
    share = re.search(r"\((\d+)% of those written\)", run.stdout)
    assert share is not None and 80 <= int(share.group(1)) <= 120, run.stdout
    assert "µs per message" in run.stdout, run.stdout
