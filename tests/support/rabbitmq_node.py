"""A private RabbitMQ node with Web-STOMP, for tests that need a standard STOMP broker.

The node has its own name (`stocking-test-<random>@localhost`), its own AMQP, distribution,
STOMP and Web-STOMP ports (free ones, on 127.0.0.1), and its own configuration, enabled-plugins
file, database, logs and Erlang cookie in a temporary folder. The machine's RabbitMQ (its node,
`/etc/rabbitmq`, `/var/lib/rabbitmq`) is never read, stopped or changed; the only thing shared
is epmd, the machine's Erlang port mapper, where the node registers under its own name.

The node creates its own virtual host and user at first boot (`default_vhost`, `default_user`
in its `rabbitmq.conf`), so no `rabbitmqctl` round trip is needed before a test can connect.
Starting one takes about five seconds; stopping about one.

    with private_rabbitmq() as node:          # or a module-scoped fixture around it
        node.web_stomp_url                    # ws://127.0.0.1:<port>/ws
        node.stomp_port, node.vhost, node.user, node.passcode
        node.ctl("list_users")                # rabbitmqctl -n <node> ...

`rabbitmq_unavailable_reason()` says why a private node cannot be started here (no RabbitMQ
server scripts), for a loud skip. Root may run the node: the scripts under
/usr/lib/rabbitmq/bin are used directly, not Debian's /usr/sbin wrappers, which would switch to
the `rabbitmq` user (and its home, hence the machine's cookie).
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.env import free_port, scaled

# Debian's wrappers in /usr/sbin switch to the `rabbitmq` user; the real scripts live here.
_DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


@functools.cache
def _scripts() -> Path | None:
    """The folder holding rabbitmq-server and rabbitmqctl, or None."""
    if (_DEBIAN_SCRIPTS / "rabbitmq-server").exists():
        return _DEBIAN_SCRIPTS
    found = shutil.which("rabbitmq-server", path=_SEARCH_PATH)
    if found is None:
        return None
    folder = Path(found).resolve().parent
    return folder if (folder / "rabbitmqctl").exists() else None


def rabbitmq_unavailable_reason() -> str | None:
    """None when a private RabbitMQ node can be started here, else why not."""
    if _scripts() is None:
        return ("RabbitMQ is not installed (no rabbitmq-server/rabbitmqctl; apt-get install "
                "rabbitmq-server); a private RabbitMQ node cannot be started")
    return None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class RabbitMqNode:
    folder: Path
    name: str = field(default_factory=lambda: f"stocking-test-{secrets.token_hex(4)}@localhost")
    vhost: str = "stocking-test"
    user: str = "stocking_test"
    # Distinctive, so a test can grep logs for it.
    passcode: str = field(default_factory=lambda: f"pw-{secrets.token_hex(12)}")
    ports: list[int] = field(default_factory=lambda: _distinct_free_ports(4))
    process: subprocess.Popen[bytes] | None = None

    @property
    def amqp_port(self) -> int:
        return self.ports[0]

    @property
    def dist_port(self) -> int:
        return self.ports[1]

    @property
    def stomp_port(self) -> int:
        return self.ports[2]

    @property
    def web_stomp_port(self) -> int:
        return self.ports[3]

    @property
    def web_stomp_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_stomp_port}/ws"

    @property
    def output(self) -> Path:
        """The node's standard output and error (its log is copied there too)."""
        return self.folder / "node.out"

    def environment(self) -> dict[str, str]:
        """The environment of the node and of every CLI call aimed at it."""
        base = {key: value for key, value in os.environ.items()
                if not key.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **base,
            # The Erlang cookie is read from (and, the first time, written to) $HOME.
            "HOME": str(self.folder),
            # Not /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node.
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "node.pid"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            # Only if no epmd runs yet: the one this node would start listens on loopback only.
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def configure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cookie = self.folder / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self.folder / "rabbitmq-env.conf").write_text("")
        # Enabled offline: the file is read at boot, no running node is asked.
        (self.folder / "enabled_plugins").write_text("[rabbitmq_web_stomp].\n")
        (self.folder / "rabbitmq.conf").write_text("\n".join([
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
            f"stomp.listeners.tcp.1 = 127.0.0.1:{self.stomp_port}",
            "web_stomp.tcp.ip = 127.0.0.1",
            f"web_stomp.tcp.port = {self.web_stomp_port}",
            f"default_vhost = {self.vhost}",
            f"default_user = {self.user}",
            f"default_pass = {self.passcode}",
            "default_permissions.configure = .*",
            "default_permissions.read = .*",
            "default_permissions.write = .*",
            "",
        ]))

    def start(self) -> None:
        scripts = _scripts()
        assert scripts is not None, rabbitmq_unavailable_reason()
        with self.output.open("ab") as output:
            # A process group of its own: the shell, beam.smp and its helpers stop together.
            self.process = subprocess.Popen(
                [str(scripts / "rabbitmq-server")], env=self.environment(), cwd=self.folder,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Until Web-STOMP and STOMP accept connections (the plugins start last)."""
        deadline = time.monotonic() + scaled(60)
        while not (_listening(self.web_stomp_port) and _listening(self.stomp_port)):
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.name} exited with "
                                   f"{self.process.returncode}:\n{self._output_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {self.name} did not open Web-STOMP port "
                                   f"{self.web_stomp_port}:\n{self._output_tail()}")
            time.sleep(0.1)

    def ctl(self, *arguments: str) -> str:
        """`rabbitmqctl -n <this node> ...`, with this node's cookie; its output."""
        scripts = _scripts()
        assert scripts is not None, rabbitmq_unavailable_reason()
        return subprocess.run(
            [str(scripts / "rabbitmqctl"), "-n", self.name, *arguments],
            env=self.environment(), cwd=self.folder, check=True, capture_output=True,
            text=True, timeout=scaled(60)).stdout

    def stop(self) -> None:
        """`rabbitmqctl stop` (a clean shutdown), then the process group is killed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.ctl("stop")
                self.process.wait(timeout=scaled(30))
            except (subprocess.SubprocessError, OSError):
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=scaled(10))

    def _output_tail(self, lines: int = 60) -> str:
        try:
            text = self.output.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def private_rabbitmq() -> Iterator[RabbitMqNode]:
    """A private RabbitMQ node with Web-STOMP, started in a temporary folder; stopped and
    deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="stocking-rabbitmq-") as folder:
        node = RabbitMqNode(Path(folder))
        node.configure()
        try:
            node.start()
            yield node
        finally:
            node.stop()
