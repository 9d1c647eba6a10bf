"""The deployment files, checked without Docker: docker-compose.yml (parsed), the Dockerfile (its
instructions), gunicorn.conf.py (executed in a controlled environment, then loaded into
Gunicorn's own configuration object, which validates every value)."""

from __future__ import annotations

import importlib
import os
import re
import runpy
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from gunicorn.config import Config
from gunicorn.workers.base import Worker

from api.settings import ApiSettings
from relayer.settings import DEVELOPMENT_SUBSCRIBE
from relayer.sim.__main__ import SimSettings
from tests.support.env import REPO

SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSCODE|TOKEN|KEY")
PLACEHOLDER = "change-me"


def documented_settings() -> set[str]:
    """Every variable named in the first column of README's settings table."""
    text = (REPO / "README.md").read_text()
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            first_column = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_column))
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environment as a mapping, so it can be checked"
    return {str(name): str(value) for name, value in environment.items()}


def ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the StocKing image."""
    return {name: service for name, service in services.items() if "build" in service}


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_has_the_platform_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", "mysql", "migrations", "simulator", "relayer", "api",
                             "fills"}
    assert set(ours(services)) == {"migrations", "simulator", "relayer", "api", "fills"}
    assert services["mysql"]["image"].startswith("mariadb:")
    assert services["redis"]["image"].startswith("redis:")


def test_compose_datastores_have_healthchecks_and_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, mount in (("redis", "/data"), ("mysql", "/var/lib/mysql")):
        service = services[name]
        assert service["healthcheck"]["test"][0] == "CMD"
        volume, _, target = service["volumes"][0].partition(":")
        assert target == mount
        assert volume in compose["volumes"]  # a named volume: the data outlives containers


def test_compose_runs_migrations_once_after_mysql_is_healthy(
    services: dict[str, dict[str, Any]]
) -> None:
    migrations = services["migrations"]
    assert migrations["command"] == ["python", "-m", "api.migrate"]
    assert migrations["depends_on"] == {"mysql": {"condition": "service_healthy"}}
    assert migrations["restart"] == "no"


def test_compose_api_is_gunicorn_after_migrations_with_a_healthcheck(
    services: dict[str, dict[str, Any]]
) -> None:
    api = services["api"]
    assert api["command"] == ["gunicorn", "-c", "gunicorn.conf.py", "api.main:app"]
    assert api["depends_on"]["migrations"] == {"condition": "service_completed_successfully"}
    assert api["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "http://127.0.0.1:8000/health" in " ".join(api["healthcheck"]["test"])
    assert env(api)["PORT"] == "8000"


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${NAME:-default}` and `${NAME}`, for the variables given (none: defaults)."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}",
                  lambda match: variables.get(match[1]) or match[2] or "", value)


def test_compose_publishes_only_the_api_and_on_the_loopback_unless_told(
    services: dict[str, dict[str, Any]]
) -> None:
    api = services["api"]
    # Inside its container the API listens on every interface, or the published port would
    # reach nothing; which host interface it is published on is the host's choice.
    assert env(api)["API_HOST"] == "0.0.0.0"
    assert [interpolate(port, {}) for port in api["ports"]] == ["127.0.0.1:8000:8000"]
    assert [interpolate(port, {"STOCKING_PUBLISH_ADDRESS": "0.0.0.0"})
            for port in api["ports"]] == ["0.0.0.0:8000:8000"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"api"}, "Redis, MariaDB and the simulator stay inside the network"
    assert all("network_mode" not in service for service in services.values())


def test_compose_relayer_reads_from_the_simulator(services: dict[str, dict[str, Any]]) -> None:
    simulator, relayer = services["simulator"], services["relayer"]
    assert simulator["command"] == ["python", "-m", "relayer.sim"]
    assert env(simulator)["SIM_HOST"] == "0.0.0.0"  # reachable from the relayer's container
    assert relayer["command"] == ["python", "-m", "relayer"]
    upstream = urlsplit(env(relayer)["RELAYER_UPSTREAM_URL"])
    assert (upstream.hostname, upstream.port) == ("simulator", int(env(simulator)["SIM_PORT"]))
    assert "simulator" in relayer["depends_on"]
    assert relayer["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert env(relayer)["RELAYER_SUBSCRIBE"] == DEVELOPMENT_SUBSCRIBE


def test_compose_runs_the_fills_worker_after_the_migrations(
    services: dict[str, dict[str, Any]]
) -> None:
    fills = services["fills"]
    assert fills["command"] == ["python", "-m", "api.fills"]
    assert (REPO / "api" / "fills" / "__main__.py").exists()
    assert "profiles" not in fills, "the fills worker starts by default"
    assert fills["depends_on"]["migrations"] == {
        "condition": "service_completed_successfully"}
    assert "deploy" not in fills or fills["deploy"].get("replicas", 1) == 1


def test_compose_environment_names_only_documented_settings(
    services: dict[str, dict[str, Any]]
) -> None:
    documented = documented_settings()
    assert {"DATABASE_URL", "PORT", "WEB_CONCURRENCY", "JWT_SECRET_KEY"} <= documented
    for name, service in ours(services).items():
        undocumented = set(env(service)) - documented
        assert not undocumented, f"{name}: {sorted(undocumented)} not in README's settings table"
    # The database image is configured with its own variables.
    assert all(name.startswith("MARIADB_") for name in env(services["mysql"]))


def test_compose_holds_placeholders_not_secrets(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for variable, value in env(service).items():
            if SECRET_NAME.search(variable):
                assert PLACEHOLDER in value, f"{name}.{variable} looks like a real secret"
            password = urlsplit(value).password if "://" in value else None
            if password:
                assert PLACEHOLDER in password, f"{name}.{variable} carries a real password"
        # Placeholders must never run as production.
        assert env(service).get("STOCKING_ENV", "development") == "development"


def test_compose_api_environment_is_valid_api_settings(
    services: dict[str, dict[str, Any]]
) -> None:
    settings = ApiSettings(**{k.lower(): v for k, v in env(services["api"]).items()})
    assert settings.database_url.startswith("mysql+pymysql://")
    assert settings.redis_url == "redis://redis:6379/0"


# --- Dockerfile -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), " ".join(rest.split())))
    return instructions


def test_dockerfile_base_and_user(dockerfile: list[tuple[str, str]]) -> None:
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    users = [args for keyword, args in dockerfile if keyword == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    # The process runs as that user: nothing after USER switches back.
    last_user = max(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "USER")
    assert all(keyword != "RUN" for keyword, _ in dockerfile[last_user:])


def test_dockerfile_installs_the_lock_with_hashes(dockerfile: list[tuple[str, str]]) -> None:
    installs = [args for keyword, args in dockerfile if keyword == "RUN" and "pip install" in args]
    assert len(installs) == 1
    words = shlex.split(installs[0])
    assert "--require-hashes" in words
    assert words[words.index("-r") + 1] == "requirements.lock"
    copies = [args for keyword, args in dockerfile if keyword == "COPY"]
    assert copies[0].startswith("requirements.lock")  # before the code: a cached layer


def test_dockerfile_copies_the_app_and_no_secrets(dockerfile: list[tuple[str, str]]) -> None:
    sources = [shlex.split(args)[0] for keyword, args in dockerfile if keyword == "COPY"]
    assert {"relayer", "api", "migrations", "gunicorn.conf.py"} <= set(sources)
    assert all((REPO / source).exists() for source in sources)
    for keyword, args in dockerfile:
        if keyword in ("ENV", "ARG"):
            assert not SECRET_NAME.search(args), f"{keyword} {args}: no secrets in the image"


def test_dockerfile_default_command_is_gunicorn(dockerfile: list[tuple[str, str]]) -> None:
    commands = [args for keyword, args in dockerfile if keyword == "CMD"]
    assert commands == ['["gunicorn", "-c", "gunicorn.conf.py", "api.main:app"]']


def test_dockerfile_makes_the_api_listen_on_the_containers_interfaces(
    dockerfile: list[tuple[str, str]]
) -> None:
    variables = dict(word.split("=", 1) for keyword, args in dockerfile if keyword == "ENV"
                     for word in shlex.split(args))
    assert variables["API_HOST"] == "0.0.0.0"  # gunicorn.conf.py's default is the loopback
    assert variables["PORT"] == "8000"
    assert ("EXPOSE", variables["PORT"]) in dockerfile


# --- gunicorn.conf.py -----------------------------------------------------------------------

GunicornConfig = Callable[..., dict[str, Any]]


@pytest.fixture
def gunicorn_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[GunicornConfig]:
    """Execute gunicorn.conf.py with exactly the given variables among those it reads."""
    created: list[Path] = []

    def load(**variables: str) -> dict[str, Any]:
        for name in ("API_HOST", "PORT", "WEB_CONCURRENCY", "LOG_LEVEL", "STOCKING_ENV",
                     "JWT_SECRET_KEY", "PROMETHEUS_MULTIPROC_DIR"):
            monkeypatch.delenv(name, raising=False)  # also undone after the test
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        namespace = runpy.run_path(str(REPO / "gunicorn.conf.py"))
        created.append(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
        return namespace

    yield load
    for folder in created:
        if folder.name.startswith("stocking-metrics-"):
            shutil.rmtree(folder, ignore_errors=True)


def gunicorn_settings(namespace: dict[str, Any]) -> Config:
    """Load the namespace the way Gunicorn does (validating each setting)."""
    config = Config()
    for name, value in namespace.items():
        if name in config.settings:
            config.set(name, value)
    return config


def test_gunicorn_uses_the_maintained_uvicorn_worker(gunicorn_config: GunicornConfig) -> None:
    namespace = gunicorn_config()
    # Uvicorn-worker's UvicornWorker with the request head limit (api/server.py).
    assert namespace["worker_class"] == "api.server.Worker"
    config = gunicorn_settings(namespace)
    assert config.worker_class is importlib.import_module("api.server").Worker
    assert issubclass(config.worker_class, importlib.import_module("uvicorn_worker").UvicornWorker)
    assert issubclass(config.worker_class, Worker)
    assert config.wsgi_app == "api.main:app"
    assert config.bind == ["127.0.0.1:8000"]  # this machine only, unless API_HOST says
    assert config.workers == 2
    assert 0 < config.graceful_timeout < 15  # start_services.sh waits 15 s before it kills
    assert config.timeout >= config.graceful_timeout
    assert config.keepalive > 0
    assert config.preload_app is False
    assert config.logconfig_dict["root"]["level"] == "INFO"


def test_gunicorn_reads_port_concurrency_and_log_level(gunicorn_config: GunicornConfig) -> None:
    config = gunicorn_settings(gunicorn_config(PORT="9123", WEB_CONCURRENCY="5",
                                               LOG_LEVEL="debug"))
    assert config.bind == ["127.0.0.1:9123"]
    assert config.workers == 5
    assert config.loglevel == "debug"
    assert config.logconfig_dict["root"]["level"] == "DEBUG"


def test_gunicorn_draws_one_jwt_key_in_development_only(gunicorn_config: GunicornConfig) -> None:
    gunicorn_config()
    drawn = os.environ["JWT_SECRET_KEY"]
    assert len(drawn.encode()) >= 32
    ApiSettings(jwt_secret_key=drawn)  # accepted by the app
    gunicorn_config(JWT_SECRET_KEY="k" * 40)
    assert os.environ["JWT_SECRET_KEY"] == "k" * 40  # a configured key is kept
    gunicorn_config(STOCKING_ENV="production")
    assert "JWT_SECRET_KEY" not in os.environ  # production must be given one


def test_gunicorn_metrics_folder_lifecycle(gunicorn_config: GunicornConfig,
                                           tmp_path: Path) -> None:
    namespace = gunicorn_config()
    own = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert own.is_dir() and not any(own.iterdir())
    assert own.parent == Path(tempfile.gettempdir())
    namespace["on_starting"](None)
    (own / "counter_111.db").write_bytes(b"")
    (own / "gauge_livesum_111.db").write_bytes(b"")
    namespace["child_exit"](None, type("DeadWorker", (), {"pid": 111})())
    assert not (own / "gauge_livesum_111.db").exists()  # live gauges of a dead worker go
    assert (own / "counter_111.db").exists()  # its counts stay in the totals
    namespace["on_exit"](None)
    assert not own.exists()

    given = tmp_path / "operator-metrics"
    given.mkdir()
    (given / "counter_222.db").write_bytes(b"")  # left over from a previous run
    namespace = gunicorn_config(PROMETHEUS_MULTIPROC_DIR=str(given))
    namespace["on_starting"](None)
    assert not any(given.iterdir())  # emptied at start
    namespace["on_exit"](None)
    assert given.is_dir()  # but not ours to delete


def test_gunicorn_listens_where_api_host_says(gunicorn_config: GunicornConfig) -> None:
    assert gunicorn_settings(gunicorn_config(API_HOST="0.0.0.0")).bind == ["0.0.0.0:8000"]
    assert gunicorn_settings(gunicorn_config(API_HOST="::", PORT="9000")).bind == ["[::]:9000"]
    assert gunicorn_settings(gunicorn_config(API_HOST="")).bind == ["127.0.0.1:8000"]


# --- start_services.sh (scripts/supervise.py) ----------------------------------------------


def test_start_services_listens_on_this_machine_only_by_default(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        supervise = importlib.import_module("supervise")
    finally:
        sys.path.remove(str(REPO / "scripts"))
    monkeypatch.delenv("API_HOST", raising=False)
    monkeypatch.delenv("SIM_HOST", raising=False)
    assert supervise.api_host() == "127.0.0.1"  # what it checks and waits for: Gunicorn's
    assert supervise.local_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert supervise.local_url("::", 8000) == "http://[::1]:8000"
    assert supervise.local_url("10.1.2.3", 8000) == "http://10.1.2.3:8000"
    assert SimSettings().sim_host == "127.0.0.1"  # the simulator it starts
