"""The instruments master through the API: search (ranking, initials, filters, pages), one
instrument's details (limits and ticks by market and type, live state), the importer, and the
per-process catalog through a database outage."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.db import Database, DatabaseUnavailable, make_engine
from api.instruments.__main__ import main as instruments_command
from api.instruments.catalog import CatalogUnavailable, InstrumentCatalog, InstrumentInfo
from api.instruments.importer import apply_master, import_files, read_files
from api.models import Instrument
from api.settings import ApiSettings
from relayer.bus import ActiveSubscription, TopicTemplate
from relayer.krx import Market, SecurityKind
from relayer.master import ListingStatus, read_master, shipped_paths
from tests.support.api import assert_problem
from tests.support.databases import fresh_sqlite_database
from tests.support.quotes import NAMES, make_quote, put
from tests.support.tokens import bearer

URL = "/api/v1/instruments"
TOPICS = TopicTemplate("/topic/v1/kr/stock/trade/{code}")


@pytest.fixture
def auth(api_settings: ApiSettings) -> dict[str, str]:
    return bearer(api_settings)


def codes(client: TestClient, auth: dict[str, str], **params: Any) -> list[str]:
    answer = client.get(URL, params=params, headers=auth)
    assert answer.status_code == 200, answer.text
    return [item["code"] for item in answer.json()["items"]]


# Search ------------------------------------------------------------------------------------

def test_initials_find_samsung_electronics_first(client: TestClient,
                                                 auth: dict[str, str]) -> None:
    found = codes(client, auth, query="ㅅㅅㅈㅈ")
    assert found[:2] == ["A005930", "A005935"]  # 삼성전자, then 삼성전자우 (ㅅㅅㅈㅈㅇ)
    # A syllable and initials mixed: 삼 must be 삼, ㅅ any syllable starting with ㅅ.
    assert codes(client, auth, query="삼ㅅ")[0] == "A005930"
    assert "A055550" not in codes(client, auth, query="삼ㅅ")  # 신한지주: ㅅ, but not 삼


def test_ranking_exact_code_then_names_then_initials(client: TestClient,
                                                     auth: dict[str, str]) -> None:
    assert codes(client, auth, query="005930")[0] == "A005930"
    assert codes(client, auth, query="a005935")[0] == "A005935"
    # Exact name first, then names that start with it, larger market cap first.
    assert codes(client, auth, query="삼성전자")[:2] == ["A005930", "A005935"]
    found = codes(client, auth, query="삼성", limit=200)
    assert found[0] == "A005930"
    assert found.index("A005935") < found.index("A006405")  # 371,268 억 before 1,598 억
    # Without case or spaces; a name containing the query comes after those starting with it.
    assert codes(client, auth, query="kodex200")[0] == "A069500"
    # Codes that start with it (KONEX 200580 among them) before names that contain it.
    found = codes(client, auth, query="200", limit=200)
    first_name = found.index("A069500")
    assert "A200580" in found[:first_name]
    assert all(code.startswith("A200") for code in found[:first_name])
    assert first_name < found.index("A069660")  # KODEX 200 is the larger
    found = codes(client, auth, query="전자")
    assert found.index("A005930") < found.index("A066570")  # both contain it; cap decides


def test_filters_and_an_empty_query(client: TestClient, auth: dict[str, str]) -> None:
    konex = codes(client, auth, market="KONEX", limit=200)
    assert len(konex) >= 100 and "A012210" in konex and "A005930" not in konex
    etfs = client.get(URL, params={"type": "ETF", "limit": 200}, headers=auth).json()["items"]
    assert etfs and {item["type"] for item in etfs} == {"ETF"}
    spacs = codes(client, auth, query="스팩", market="KOSDAQ", type="SPAC")
    assert "A430220" in spacs


def test_pages_cover_every_match_once(client: TestClient, auth: dict[str, str]) -> None:
    everything = codes(client, auth, market="KONEX", limit=200)  # 119 in the shipped master
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"market": "KONEX", "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = client.get(URL, params=params, headers=auth).json()
        seen += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything


@pytest.mark.parametrize(("params", "code"), [
    ({"market": "NYSE"}, "validation_error"),
    ({"type": "BOND"}, "validation_error"),
    ({"limit": 0}, "invalid_limit"),
    ({"cursor": "bm90LWEtY3Vyc29y"}, "invalid_cursor"),
    ({"query": "x" * 65}, "validation_error"),
])
def test_bad_search_input_is_a_422_problem(client: TestClient, auth: dict[str, str],
                                           params: dict[str, Any], code: str) -> None:
    assert_problem(client.get(URL, params=params, headers=auth), 422, code)


def test_search_needs_a_token(client: TestClient) -> None:
    assert client.get(URL, params={"query": "삼성"}).status_code == 401


# One instrument ----------------------------------------------------------------------------

def test_an_etf_trades_on_the_5_won_grid(client: TestClient, auth: dict[str, str]) -> None:
    body = client.get(f"{URL}/069500", headers=auth).json()
    assert (body["code"], body["name"], body["market"], body["type"]) == (
        "A069500", "KODEX 200", "KOSPI", "ETF")
    # No live quote: the master's base, 34,610; 30% truncated to the base's tick of 5.
    assert (body["base_price"], body["base_price_source"]) == (34_610, "master")
    assert (body["lower_limit"], body["upper_limit"]) == (24_230, 44_990)
    assert (body["tick_price"], body["tick_size"]) == (34_610, 5)
    assert body["tradable"] is True
    # ETFs are exempt from both sell taxes.
    assert (body["sell_tax"]["securities_transaction_tax"], body["sell_tax"]["total"]) == (
        "0", "0")
    assert client.get(f"{URL}/A069500", params={"price": 1_990},
                      headers=auth).json()["tick_size"] == 1


def test_a_konex_stock_moves_within_15_percent(client: TestClient,
                                               auth: dict[str, str]) -> None:
    body = client.get(f"{URL}/A012210", headers=auth).json()
    assert (body["market"], body["base_price"]) == ("KONEX", 3_330)
    assert (body["lower_limit"], body["upper_limit"]) == (2_835, 3_825)
    # A KONEX sale pays 0.10% securities transaction tax and no rural special tax.
    assert body["sell_tax"] == {"securities_transaction_tax": "0.0010",
                                "rural_special_tax": "0", "total": "0.0010",
                                "trade_date": body["sell_tax"]["trade_date"]}


def test_live_quote_and_streaming_state(client: TestClient, store: redis.Redis,
                                        auth: dict[str, str]) -> None:
    put(store, make_quote("A005930", price=71_200, base=70_500))
    store.sadd(NAMES.desired_subscriptions, TOPICS.topic("A005930"))
    store.hset(NAMES.active_subscriptions, TOPICS.topic("A005930"),
               ActiveSubscription("sub-1", "2026-11-20T00:00:00Z").to_json())
    body = client.get(f"{URL}/A005930", headers=auth).json()
    assert (body["base_price"], body["base_price_source"], body["price"]) == (70_500, "quote",
                                                                              71_200)
    assert (body["lower_limit"], body["upper_limit"]) == (49_400, 91_600)
    assert (body["tick_price"], body["tick_size"]) == (71_200, 100)
    assert (body["streamed"], body["desired"]) == (True, True)
    assert (body["sell_tax"]["securities_transaction_tax"],
            body["sell_tax"]["rural_special_tax"]) == ("0.0005", "0.0015")
    other = client.get(f"{URL}/A000660", headers=auth)
    assert other.status_code == 404 or other.json()["streamed"] is False


def test_halted_and_untradable(client: TestClient, auth: dict[str, str]) -> None:
    body = client.get(f"{URL}/A140910", headers=auth).json()
    assert (body["type"], body["status"], body["tradable"]) == ("REIT", "HALTED", False)


def test_unknown_and_malformed_codes(client: TestClient, auth: dict[str, str]) -> None:
    assert_problem(client.get(f"{URL}/A999999", headers=auth), 404, "unknown_instrument")
    assert_problem(client.get(f"{URL}/12", headers=auth), 422, "invalid_code")


# The importer ------------------------------------------------------------------------------

def _kospi_variant(folder: Path, edit: Callable[[list[bytes]], list[bytes]]) -> Path:
    """The shipped KOSPI master with its lines edited, as a plain .mst."""
    lines = gzip.decompress(shipped_paths()[0].read_bytes()).splitlines(keepends=True)
    path = folder / "kospi_code.mst"
    path.write_bytes(b"".join(edit(lines)))
    return path


def _renamed(lines: list[bytes], code: bytes, name: str) -> list[bytes]:
    out = []
    for line in lines:
        if line.startswith(code):
            encoded = name.encode("cp949")
            line = line[:21] + encoded + b" " * (40 - len(encoded)) + line[61:]
        out.append(line)
    return out


def test_import_adds_renames_delists_and_is_idempotent(tmp_path: Path) -> None:
    with fresh_sqlite_database(tmp_path) as url:
        db = Database(make_engine(url))
        # The migration loaded the shipped master: importing it again changes nothing.
        again = db.call(import_files, shipped_paths())
        assert not again.changed and again.records > 150
        # KOSPI without 카프로 (A006380) and 삼성전자 renamed: one delisted, one renamed.
        edited = _kospi_variant(tmp_path, lambda lines: _renamed(
            [line for line in lines if not line.startswith(b"006380")], b"005930",
            "삼성전자(신)"))
        report = db.call(import_files, [edited])
        assert report.delisted == ["A006380"]
        assert report.renamed == [("A005930", "삼성전자", "삼성전자(신)")]
        assert report.added == [] and report.updated == 1
        assert not db.call(import_files, [edited]).changed  # idempotent
        # The shipped file (gzipped) puts both back: 카프로 is relisted, not added.
        back = db.call(import_files, [shipped_paths()[0]])
        assert (back.relisted, back.added, back.delisted) == (["A006380"], [], [])

        def statuses(session: Session) -> dict[str, str]:
            return {code: status for code, status in
                    session.execute(select(Instrument.code, Instrument.status)).all()}
        rows = db.call(statuses)
        assert rows["A006380"] == "HALTED" and rows["A005930"] == "LISTED"
        # A KONEX-only import never delists KOSPI or KOSDAQ instruments.
        konex = tmp_path / "konex_code.mst"
        konex.write_bytes(gzip.decompress(shipped_paths()[2].read_bytes()).splitlines(
            keepends=True)[0])
        report = db.call(import_files, [konex])
        assert len(report.delisted) == 118  # the KONEX instruments but the one left
        after = db.call(statuses)
        assert {code for code, status in after.items() if status == "DELISTED"} == set(
            report.delisted)
        assert after["A005930"] == "LISTED"
        db.dispose()


def test_a_new_instrument_is_added(tmp_path: Path) -> None:
    with fresh_sqlite_database(tmp_path) as url:
        db = Database(make_engine(url))
        db.call(lambda session: session.execute(
            delete(Instrument).where(Instrument.code == "A069500")))
        report = db.call(import_files, shipped_paths())
        assert report.added == ["A069500"] and not report.delisted
        db.dispose()


def test_the_command_prints_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with fresh_sqlite_database(tmp_path) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        edited = _kospi_variant(tmp_path, lambda lines: [
            line for line in lines if not line.startswith(b"069660")])
        assert instruments_command(["import", str(edited)]) == 0
        out = capsys.readouterr().out
        assert "delisted 1" in out and "A069660" in out
        assert instruments_command(["import", str(tmp_path / "nothing_code.mst")]) == 1
        assert "nothing changed" in capsys.readouterr().err


def test_two_files_of_one_market_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more than one file"):
        read_files([shipped_paths()[0], shipped_paths()[0]])


# The catalog -------------------------------------------------------------------------------

def test_an_import_in_this_process_shows_at_once(client: TestClient,
                                                 auth: dict[str, str]) -> None:
    app = cast(FastAPI, client.app)
    resources = app.state.resources
    assert codes(client, auth, query="카프로")[0] == "A006380"
    edited = read_master(shipped_paths()[0])
    files = [type(edited)(edited.market, [r for r in edited.records if r.code != "A006380"])]
    resources.db.call(apply_master, files, datetime.now(UTC).replace(microsecond=0))
    resources.instruments.invalidate()
    body = client.get(f"{URL}/A006380", headers=auth).json()
    assert (body["status"], body["tradable"]) == ("DELISTED", False)


class FlakyDatabase:
    """Gives the master once, then is down."""

    def __init__(self, instruments: list[InstrumentInfo]) -> None:
        self.instruments = instruments
        self.down = False
        self.reads = 0

    async def read(self, fn: object) -> list[InstrumentInfo]:
        self.reads += 1
        if self.down:
            raise DatabaseUnavailable("the database did not answer")
        return self.instruments


def _info(code: str, name: str) -> InstrumentInfo:
    return InstrumentInfo(code, "KR7" + code[1:] + "000", name, None, Market.KOSPI,
                          SecurityKind.STOCK, ListingStatus.LISTED, 10_000, 1, "",
                          datetime.now(UTC))


async def test_the_catalog_keeps_serving_through_a_database_outage() -> None:
    now = [0.0]
    flaky = FlakyDatabase([_info("A005930", "삼성전자")])
    catalog = InstrumentCatalog(cast(Database, flaky), refresh_s=60, clock=lambda: now[0])
    assert (await catalog.get("A005930")) is not None
    flaky.down = True
    now[0] = 61.0  # due: the refresh runs in the background and fails
    assert (await catalog.get("A005930")) is not None
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert flaky.reads == 2
    assert (await catalog.get("A005930")) is not None  # still the last copy, no new attempt
    assert flaky.reads == 2
    catalog.invalidate()  # an import: the reload fails, the last copy answers
    assert (await catalog.get("A005930")) is not None
    flaky.down = False
    flaky.instruments = [_info("A005930", "삼성전자"), _info("A000660", "SK하이닉스")]
    now[0] = 200.0
    await catalog.snapshot()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert catalog.peek("A000660") is not None


async def test_no_copy_yet_and_the_database_down_is_a_503_not_a_500() -> None:
    flaky = FlakyDatabase([])
    flaky.down = True
    catalog = InstrumentCatalog(cast(Database, flaky), refresh_s=60)
    with pytest.raises(CatalogUnavailable) as raised:
        await catalog.snapshot()
    assert raised.value.status == 503 and raised.value.code == "instruments_unavailable"
    assert catalog.peek("A005930") is None
