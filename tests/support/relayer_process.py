"""Runs the real relayer daemon (`python -m relayer`) as a child process for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.env import REPO, scaled

# Fast-moving defaults so that tests see reconnects and reconciles in well under a second.
TEST_ENV = {
    "RELAYER_BACKOFF_INITIAL_S": "0.2",
    "RELAYER_BACKOFF_MAX_S": "1",
    "RELAYER_HEALTHY_AFTER_S": "2",
    "RELAYER_RECEIPT_TIMEOUT_S": "3",
    "RELAYER_LEASE_TTL_MS": "1500",
    "RELAYER_HEALTH_INTERVAL_S": "0.2",
    "RELAYER_SUBSCRIBE_BATCH_INTERVAL_S": "0.05",
    "RELAYER_REDIS_TIMEOUT_S": "1",
    "LOG_LEVEL": "INFO",
}


class RelayerProcess:
    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.env = {**os.environ, **TEST_ENV, **env, "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RelayerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relayer"], cwd=REPO, env=self.env,
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        deadline = time.monotonic() + scaled(timeout)
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"relayer still running after {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.02)
        return self.process.returncode

    async def wait_for_log(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while text not in self.log():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged within {timeout}s:\n{self.log()}")
            self.assert_running()
            await asyncio.sleep(0.02)

    def assert_running(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise AssertionError(f"relayer exited with {code}:\n{self.log()}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
