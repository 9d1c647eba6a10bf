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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
