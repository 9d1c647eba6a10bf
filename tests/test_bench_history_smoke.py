"""`scripts/bench_history.py`, run tiny (3 users x 10 days of snapshots and 200 fills each, 1 s
per endpoint, on SQLite with the always-open calendar, one Gunicorn worker: about 12 s), runs
end to end: it seeds the data, Gunicorn answers the history and the statistics for every user
with 200, the answers agree with what was seeded, and the in-process breakdown times each
piece.

Only that the benchmark works: no timing is asserted (the numbers are in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import REPO, scaled

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench_history")]

# Settings the benchmark chooses itself; whatever the developer's shell has is removed.
CONTROLLED = ("REDIS_URL", "DATABASE_URL", "PORT", "WEB_CONCURRENCY", "STOCKING_ENV",
              "STOCKING_NS", "JWT_SECRET_KEY", "GUNICORN_CMD_ARGS", "API_HOST",
              "PROMETHEUS_MULTIPROC_DIR", "MARKET_CALENDAR")


def test_a_tiny_run_seeds_serves_and_breaks_down_every_endpoint(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    run = subprocess.run(
        [sys.executable, "scripts/bench_history.py", "--database", "sqlite", "--calendar",
         "always_open", "--users", "3", "--days", "10", "--duration", "1", "--warmup", "0",
         "--breakdown", "3", "--connections", "4", "--workers", "1", "--json", str(report),
         "--logs", str(tmp_path / "logs")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=scaled(120))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert "p99 ms" in run.stdout and "OK" in run.stdout.splitlines()[-1], run.stdout

    figures = json.loads(report.read_text())
    assert figures["failed"] is False
    assert figures["problems"] == [] and figures["log_errors"] == {}
    rows = figures["seeded_rows"]
    assert rows["users"] == rows["accounts"] == 3
    assert rows["account_snapshots"] == 3 * 10
    assert 0 < rows["fills"] <= 3 * 200 and rows["orders"] == rows["fills"]
    assert rows["ledger_entries"] > rows["fills"]  # the openings, and a fee for every fill
    assert [r["endpoint"] for r in figures["runs"]] == ["history 1Y", "history all",
                                                         "stats 1Y"]
    for endpoint in figures["runs"]:
        assert endpoint["answers"] > 0, endpoint
        assert endpoint["statuses"] == {"200": endpoint["answers"]}, endpoint
        assert endpoint["errors"] == {}, endpoint
        latency = endpoint["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
        assert endpoint["cpu_pct"]["api"] > 0  # the workers were measured
    pieces = figures["breakdown"]
    assert len(pieces) == 7
    assert all(piece["mean"] > 0 for piece in pieces.values()), pieces
