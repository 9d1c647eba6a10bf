"""Facts about the test environment: where the repo is, how patient to be, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_FACTOR = float(os.environ.get("STOCKING_TEST_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """A test deadline, scaled for slow machines by STOCKING_TEST_TIMEOUT_FACTOR."""
    return seconds * TIMEOUT_FACTOR


# The API's Redis socket timeout in tests whose app is not about Redis faults (production: 0.5 s).
# A burst of 50 concurrent orders runs up to 40 threads of ORM work that take the GIL from the
# event loop; on two cores shared by four test workers, one Redis read then waited past 3 s
# (25 of 50 orders answered 503 in CI), which says nothing about Redis. A Redis that is down
# still answers 503 at once: the connection is refused, no timeout is waited for.
API_REDIS_TIMEOUT_S = scaled(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
# Likewise the SQL deadline (production: 5 s) and the read timeout that must outlast it: eight
# concurrent writes queue on SQLite's one writer, and under a load of 14 on two cores (the suite
# beside benchmarks) some waited past 5 s. Tests of database faults set their own, short.
DATABASE_DEADLINE_S = scaled(15)
DATABASE_READ_TIMEOUT_S = scaled(20)
