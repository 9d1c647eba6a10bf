"""The platform as operators run it: real Gunicorn with two Uvicorn workers (gunicorn.conf.py),
and `./start_services.sh` with everything it starts, over real sockets.

Each test gets a private Redis, a fresh database and free ports, and checks that everything it
started is gone, and its ports free, after the stop signal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.db import Database, make_engine
from api.market.rules import PriceBand
from tests.conftest import RedisServer
from tests.support.concurrency import concurrently
from tests.support.env import API_REDIS_TIMEOUT_S, REPO, free_port, scaled
from tests.support.fake_portone import FakePortOne, signed_webhook, webhook_body, webhook_secret
from tests.support.invariants import assert_invariants
from tests.support.platform import (
    alive,
    counter_per_worker,
    environment,
    get,
    http,
    port_free,
    start_gunicorn,
    stop,
    wait_for,
    wait_for_workers,
)

pytestmark = pytest.mark.slow


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on this port (Linux: /proc/net)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # The kernel writes each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, width // 2, 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


def requests_by_route(metrics_text: str) -> dict[tuple[str, str], float]:
    """(route, status) -> count of GET requests, from a scrape."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "stocking_http_requests_total" and sample.labels["method"] == "GET":
                counts[sample.labels["route"], sample.labels["status"]] = sample.value
    return counts


def health_requests_per_worker(metrics_dir: Path) -> dict[str, float]:
    """pid -> GET /health requests it answered, from each worker's own file."""
    return counter_per_worker(metrics_dir, "stocking_http_requests_total", route="/health")


def test_gunicorn_two_workers_metrics_add_up_and_sigterm_frees_the_port(
    tmp_path: Path, redis_server: RedisServer, database_url: str
) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    log = tmp_path / "gunicorn.log"
    # The readiness and Redis deadlines of the in-process tests (tests/support/api.py): with
    # four test workers beside it on two cores, a check of /ready's burst could pass the
    # production 1 s and answer 503 (seen in CI), which says nothing about the metrics here.
    env = environment(REDIS_URL=redis_server.url, DATABASE_URL=database_url, PORT=str(port),
                      WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                      READY_TIMEOUT_S=str(scaled(5)), API_REDIS_TIMEOUT_S=str(API_REDIS_TIMEOUT_S))
    gunicorn = start_gunicorn(env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        # Started, without a request: a probe that timed out on a loaded machine would still
        # have been counted by the server, and the counts below must be exact.
        worker_pids = wait_for_workers(gunicorn, log, 2)
        assert len(worker_pids) == 2

        # New connections from many threads, until both workers have answered some.
        sent = {"/health": 0, "/ready": 0}

        def burst(path: str, count: int) -> None:
            with ThreadPoolExecutor(max_workers=16) as pool:
                statuses = list(pool.map(lambda _: get(f"{base}{path}")[0], range(count)))
            assert statuses == [200] * count
            sent[path] += count

        for _ in range(20):
            burst("/health", 100)
            if len(health_requests_per_worker(metrics_dir)) == 2:
                break
        per_worker = health_requests_per_worker(metrics_dir)
        assert len(per_worker) == 2, f"one worker answered everything: {per_worker}"
        burst("/ready", 40)

        status, body = get(f"{base}/metrics")
        assert status == 200
        counts = requests_by_route(body.decode())
        # Both workers' requests, whichever worker answered the scrape.
        assert counts["/health", "200"] == sent["/health"]
        assert counts["/ready", "200"] == sent["/ready"]
        # Read again: a worker counts a request just after answering it, so the last ones of
        # the burst may have been missing from the files read above.
        per_worker = health_requests_per_worker(metrics_dir)
        assert sum(per_worker.values()) == sent["/health"]
        assert all(count > 0 for count in per_worker.values())
        assert "stocking_relayer_up 0.0" in body.decode()

        took = stop(gunicorn, signal.SIGTERM, timeout=15)
        assert gunicorn.returncode == 0, log.read_text()
        assert took < scaled(5), f"SIGTERM took {took:.1f}s"
        assert port_free(port)
        assert not [pid for pid in worker_pids if alive(pid)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(gunicorn.pid, signal.SIGKILL)  # the master and any worker left behind
        gunicorn.wait()


def test_a_payment_is_credited_once_whichever_gunicorn_worker_answers(
    tmp_path: Path, redis_server: RedisServer, database_url: str
) -> None:
    """The whole PortOne flow over real HTTP, against the fake PortOne, with the browser's
    completes and PortOne's duplicate webhooks racing across two worker processes."""
    port, secret = free_port(), webhook_secret()
    log = tmp_path / "gunicorn.log"
    with FakePortOne(secret="platform-test-portone-secret") as portone:
        env = environment(REDIS_URL=redis_server.url, DATABASE_URL=database_url,
                          PORT=str(port), WEB_CONCURRENCY="2",
                          PORTONE_STORE_ID=portone.store_id,
                          PORTONE_CHANNEL_KEY=portone.channel_key,
                          PORTONE_V2_API_SECRET=portone.secret, PORTONE_WEBHOOK_SECRET=secret,
                          PORTONE_API_BASE_URL=portone.base_url)
        gunicorn = start_gunicorn(env, log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_workers(gunicorn, log, 2)
            account = {"email": "payer@example.com", "password": "payer-password-0001"}
            assert http("POST", f"{base}/api/v1/auth/register", account)[0] == 201
            status, body = http("POST", f"{base}/api/v1/auth/login", account)
            assert status == 200, body
            user = {"authorization": f"Bearer {json.loads(body)['access_token']}"}
            status, body = http("POST", f"{base}/api/v1/payments/portone/prepare",
                                {"product_id": "cash-10m"}, user)
            assert status == 201, body
            prepared = json.loads(body)["data"]
            assert (prepared["store_id"], prepared["amount"]) == (portone.store_id, 1_000)
            payment_id = prepared["payment_id"]
            # The buyer pays in the browser: PortOne now reports the payment paid.
            portone.set_payment(payment_id, status="PAID", amount=prepared["amount"],
                                order_name=prepared["order_name"])
            webhook = webhook_body("Transaction.Paid", payment_id, portone.store_id)
            signed = signed_webhook(secret, webhook, msg_id="msg_platform",
                                    timestamp=datetime.now(UTC))

            def arrive(index: int) -> int:
                if index % 2:
                    return http("POST", f"{base}/api/v1/payments/portone/complete",
                                {"payment_id": payment_id}, user)[0]
                request = urllib.request.Request(
                    f"{base}/api/v1/payments/portone/webhook", data=webhook, method="POST",
                    headers={**signed, "content-type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return int(answer.status)

            assert concurrently(20, arrive) == [200] * 20
            status, body = get(f"{base}/api/v1/transactions?type=PAYMENT", user)
            assert [(row["amount"], row["reference"]) for row in json.loads(body)["items"]] == [
                (10_000_000, payment_id)]
            status, body = get(f"{base}/api/v1/payments/{payment_id}", user)
            assert json.loads(body)["data"]["status"] == "PAID"
            assert len(portone.requests_for(payment_id)) >= 2
            db = Database(make_engine(database_url))
            try:
                assert_invariants(db)
            finally:
                db.dispose()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gunicorn.pid, signal.SIGKILL)
            gunicorn.wait()


def test_start_services_runs_the_platform_and_ctrl_c_stops_all_of_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    port, sim_port = free_port(), free_port()
    log = tmp_path / "start_services.log"
    env = environment(REDIS_URL=redis_server.url, PORT=str(port), SIM_PORT=str(sim_port),
                      DATABASE_URL=f"sqlite:///{tmp_path / 'stocking.db'}")
    with log.open("wb") as output:
        platform = subprocess.Popen(["./start_services.sh"], cwd=REPO, env=env, stdout=output,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: "platform is up" in log.read_text(), "'platform is up'", 90,
                 platform, log)
        text = log.read_text()
        assert "database migrations" not in text  # no failure message
        assert f"{base}/docs" in text
        admin = re.search(r"admin\s+(\S+@\S+) / (\S+)", text)
        assert admin, text
        email, password = admin.groups()
        assert email == "admin@stocking.local"
        assert f"{base}/api/v1/auth/login" in text
        assert "A005930" in text

        assert get(f"{base}/health") == (200, b'{"status":"ok"}')
        # This machine only (API_HOST unset), as a development API should be.
        assert listening_addresses(port) == {"127.0.0.1"}
        # Anyone learns whether it is ready; the admin also sees the checks.
        assert get(f"{base}/ready") == (200, b'{"status":"ready"}')
        status, body = http("POST", f"{base}/api/v1/auth/login",
                            {"email": email, "password": password})
        assert status == 200, body
        admin_auth = {"authorization": f"Bearer {json.loads(body)['access_token']}"}
        wait_for(lambda: json.loads(get(f"{base}/ready", admin_auth)[1])["relayer"]["alive"]
                 is True, "live relayer in /ready", 30, platform, log)

        paths = json.loads(get(f"{base}/openapi.json")[1])["paths"]
        if "/api/v1/auth/login" in paths:
            # The printed admin logs in, and the token works on every worker (one key for all).
            status, body = http("POST", f"{base}/api/v1/auth/login",
                                {"email": email, "password": password})
            assert status == 200, body
            token = json.loads(body)["access_token"]
            quote_path = "/api/v1/trading/realtime/stock/A005930"
            if quote_path in paths:
                auth = {"authorization": f"Bearer {token}"}
                wait_for(lambda: get(f"{base}{quote_path}", auth)[0] == 200,
                         "a quote of A005930 through the API", 30, platform, log)
                with ThreadPoolExecutor(max_workers=8) as pool:
                    statuses = set(pool.map(lambda _: get(f"{base}{quote_path}", auth)[0],
                                            range(40)))
                assert statuses == {200}
                # A resting buy at today's upper limit is marketable against any trade: the
                # fills worker fills it from the next tick (simulator -> relayer -> stream ->
                # api.fills -> SQL).
                quote = json.loads(get(f"{base}{quote_path}", auth)[1])
                upper = PriceBand.around(quote["base"]).upper
                status, body = http("POST", f"{base}/api/v1/orders",
                                    {"code": "A005930", "side": "BUY", "type": "LIMIT",
                                     "quantity": 1, "price": upper, "time_in_force": "GTC"},
                                    auth)
                assert status == 201, body
                order_url = f"{base}/api/v1/orders/{json.loads(body)['id']}"
                wait_for(lambda: json.loads(get(order_url, auth)[1])["status"] == "FILLED",
                         "the resting order filled by the fills worker", 30, platform, log)

        took = stop(platform, signal.SIGINT, timeout=30)
        output_text = log.read_text()
        assert platform.returncode == 0, output_text
        assert "all services stopped" in output_text
        pids = [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", output_text)]
        pids += [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", output_text)]
        assert len(pids) >= 6  # simulator, relayer, fills worker, Gunicorn, its two workers
        assert not [pid for pid in pids if alive(pid)], output_text
        assert port_free(port) and port_free(sim_port)
        assert took < scaled(15), output_text
    finally:
        if platform.poll() is None:  # a failed test: let the supervisor stop its children
            platform.send_signal(signal.SIGTERM)
            try:
                platform.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                for pid in re.findall(r"started \(pid (\d+)\)", log.read_text()):
                    try:
                        os.killpg(int(pid), signal.SIGKILL)  # each child leads its own group
                    except ProcessLookupError:
                        pass
                platform.kill()
                platform.wait()
