"""A private MariaDB server for tests that kill, freeze or restart the database.

`mariadb-install-db` creates a data folder in a temporary directory, and `mariadbd` serves it on
a free port with its own socket and pid file: the machine's MariaDB (port 3306) is never touched.
Root connects over TCP from 127.0.0.1 without a password. Starting one takes about two seconds.

    with private_mariadb() as server:        # or the `private_mariadb` fixture
        url = server.new_database()          # a migrated database on it
        server.kill()                         # SIGKILL: an outage
        server.start()                        # the same data folder again
        server.freeze(); server.thaw()        # SIGSTOP / SIGCONT: a hung server

`mariadb_unavailable_reason()` says why a private server cannot be started here (no binaries),
for a loud skip.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from api.migrate import upgrade
from tests.support.env import free_port, scaled

# Debian puts the server in /usr/sbin, which is not on an ordinary user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name, path=_SEARCH_PATH)
        if found:
            return found
    return None


@functools.cache
def _binaries() -> tuple[str, str] | None:
    server = _which("mariadbd", "mysqld")
    install = _which("mariadb-install-db", "mysql_install_db")
    return None if server is None or install is None else (server, install)


def mariadb_unavailable_reason() -> str | None:
    """None when a private mariadbd can be started here, else why not."""
    if _binaries() is None:
        return ("no mariadbd/mariadb-install-db on this machine (apt-get install "
                "mariadb-server); a private MariaDB cannot be started")
    return None


def _run_as() -> list[str]:
    # mariadbd refuses to run as root unless told to.
    return ["--user=root"] if os.geteuid() == 0 else []


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is stopped (state T in /proc/PID/task/TID/stat)."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            # The state follows the command name in parentheses, which may hold spaces.
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        if state not in ("T", "t"):
            return False
    return True


@dataclass
class MariaDbServer:
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def server_url(self) -> str:
        """A SQLAlchemy URL of the server, without a database."""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "mariadb.err"

    def install(self) -> None:
        binaries = _binaries()
        assert binaries is not None, mariadb_unavailable_reason()
        done = subprocess.run(
            [binaries[1], "--no-defaults", f"--datadir={self.folder / 'data'}",
             "--auth-root-authentication-method=normal", "--skip-test-db",
             "--skip-name-resolve", *_run_as()],
            capture_output=True, timeout=scaled(60))
        if done.returncode != 0:
            raise RuntimeError(f"{binaries[1]} failed ({done.returncode}):\n"
                               f"{done.stdout.decode(errors='replace')[-2000:]}\n"
                               f"{done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        binaries = _binaries()
        assert binaries is not None, mariadb_unavailable_reason()
        command = [
            binaries[0], "--no-defaults", f"--datadir={self.folder / 'data'}",
            f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--socket={self.folder / 'mariadb.sock'}",
            f"--pid-file={self.folder / 'mariadb.pid'}", f"--log-error={self.log}",
            "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
            # Durability is not what these tests are about; a fast start and commit are.
            "--innodb-flush-log-at-trx-commit=2", *_run_as(),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + scaled(30)
        while True:
            try:
                self._execute("SELECT 1")
                return
            except OperationalError:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"mariadbd exited with {self.process.returncode}:\n"
                                       f"{self.log.read_text(errors='replace')}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd on port {self.port} did not start:\n"
                                       f"{self.log.read_text(errors='replace')}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the database is gone at once (an outage, not a shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.thaw()  # a stopped process dies on SIGKILL too, but say so plainly
            self.process.kill()
            self.process.wait(timeout=scaled(10))

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections and port but answers nothing. Returns once
        every thread of the server has stopped: a thread in uninterruptible sleep (an fsync
        of the commit just before) stops only when it leaves it, and a request sent before
        that could still be answered (seen once in CI, on a loaded machine)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not _all_threads_stopped(self.process.pid):
            assert time.monotonic() < deadline, "the frozen server's threads never all stopped"
            time.sleep(0.005)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), killed if it takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _execute(self, statement: str) -> None:
        engine = create_engine(self.server_url, poolclass=NullPool,
                               connect_args={"connect_timeout": 1})
        try:
            with engine.begin() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def new_database(self) -> str:
        """A new database on this server, migrated to the newest schema; its URL."""
        name = f"stocking_{uuid.uuid4().hex[:12]}"
        self._execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url = f"{self.server_url}/{name}?charset=utf8mb4"
        upgrade(url, configure_logging=False)
        return url


@contextmanager
def private_mariadb() -> Iterator[MariaDbServer]:
    """A private MariaDB, installed and started in a temporary folder; stopped and deleted
    afterwards."""
    with tempfile.TemporaryDirectory(prefix="stocking-mariadb-") as folder:
        server = MariaDbServer(Path(folder))
        server.install()
        server.start()
        try:
            yield server
        finally:
            server.kill()
