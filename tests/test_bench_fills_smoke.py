"""`scripts/bench_fills.py`, run tiny (one tick crossing 5 resting orders of 2 users, bought
then sold, one round, on SQLite: about 4 s), runs end to end and its own checks pass: every
order filled once, cash equal to the ledger, nothing held, two user events per fill.

Only that the benchmark works: no timing is asserted (the numbers are in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.env import REPO, scaled

pytestmark = pytest.mark.slow


def test_a_tiny_run_fills_every_order_once_and_its_checks_pass() -> None:
    run = subprocess.run(
        [sys.executable, "scripts/bench_fills.py", "--sqlite", "--shapes", "5x2", "--rounds",
         "1"], cwd=REPO, capture_output=True, text=True, timeout=scaled(120))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("5x2 ")]
    assert [row[1] for row in rows] == ["BUY", "SELL"], run.stdout
    assert all(float(row[2].replace(",", "")) > 0 for row in rows), run.stdout
    assert "checks passed" in run.stdout, run.stdout
