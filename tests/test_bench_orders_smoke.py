"""`scripts/bench_orders.py --floor-only`, run tiny (8 users, 2 connections, 1 s per variant, on
the tests' MariaDB server: about 15 s, most of it migrating the benchmark's database and
starting the client processes), runs end to end: both floors (the API's statements, and the
lean transaction of issue 16) place market buys from their PyMySQL clients without an error,
and what they wrote passes the benchmark's own SQL checks (every order FILLED, cash = ledger,
positions = fills).

Only that the benchmark works: no timing is asserted (the numbers are in docs/BENCHMARKS.md).
The API part of the benchmark needs wrk, which the test environment does not install.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.databases import MYSQL_SERVER_URL, mysql_unreachable_reason
from tests.support.env import REPO, scaled

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench_orders")]

# A floor row: variant, connections, orders/s, p50, p90, p99, errors, statements per order.
FLOOR_ROW = re.compile(r"^(same|lean)\s+(\d+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
                       r"(\d+)\s+([\d.]+)\s", re.M)


def test_a_tiny_floor_places_orders_that_add_up() -> None:
    reason = mysql_unreachable_reason()
    if reason is not None:
        pytest.skip(f"SKIPPED MySQL-only check: {reason}")
    run = subprocess.run(
        [sys.executable, "scripts/bench_orders.py", "--floor-only", "--mysql-url",
         MYSQL_SERVER_URL, "--users", "8", "--connections", "2", "--duration", "1",
         "--floor-warmup", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=scaled(120))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert run.stdout.splitlines()[-1] == "OK", run.stdout
    assert "CHECK FAILED" not in run.stdout

    rows = {match[1]: match for match in FLOOR_ROW.finditer(run.stdout)}
    assert sorted(rows) == ["lean", "same"], run.stdout
    for row in rows.values():
        assert row[2] == "2", row[0]  # connections
        assert float(row[3].replace(",", "")) > 0, row[0]  # orders/s
        assert 0 < float(row[4]) <= float(row[6]), row[0]  # p50 <= p99
        assert row[7] == "0", row[0]  # no errors
