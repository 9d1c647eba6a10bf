"""Where the simulator's instruments come from: SIM_MASTER_FILES, read once by the entry point."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from relayer.krx import FUNDS, KONEX, STOCK, SecurityKind, price_rules
from relayer.krx import Market as Exchange
from relayer.master import by_code, read_master, shipped_paths
from relayer.sim.__main__ import EXIT_BAD_MASTER, SimSettings, build_server, main
from relayer.sim.instruments import instruments_of, load_instruments
from relayer.sim.market import SYNTHETIC, Instrument


def test_the_shipped_master_files_are_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIM_MASTER_FILES", raising=False)
    assert SimSettings().sim_master_files == shipped_paths()


def test_master_files_are_a_comma_separated_list_and_empty_means_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_MASTER_FILES", " /data/kospi_code.mst, konex_code.mst.gz ,")
    assert SimSettings().sim_master_files == [Path("/data/kospi_code.mst"),
                                              Path("konex_code.mst.gz")]
    monkeypatch.setenv("SIM_MASTER_FILES", "")
    assert SimSettings().sim_master_files == []
    assert load_instruments([]) == {}


def test_loading_the_shipped_files_gives_each_record_its_base_and_rules() -> None:
    instruments = load_instruments(shipped_paths())
    records = by_code([read_master(path) for path in shipped_paths()])
    assert instruments == instruments_of(records.values())
    assert instruments.keys() == records.keys()
    for code, record in records.items():
        assert instruments[code] == Instrument(record.base_price,
                                               price_rules(record.market, record.kind))
    kinds = {(records[code].market, records[code].kind): rules
             for code, (_, rules) in instruments.items()}
    assert kinds[Exchange.KOSPI, SecurityKind.ETF] == FUNDS
    assert kinds[Exchange.KONEX, SecurityKind.STOCK] == KONEX
    assert kinds[Exchange.KOSPI, SecurityKind.STOCK] == STOCK


def test_one_file_alone_and_a_plain_mst(tmp_path: Path) -> None:
    konex_gz = next(path for path in shipped_paths() if path.name.startswith("konex"))
    plain = tmp_path / "konex_code.mst"
    plain.write_bytes(gzip.decompress(konex_gz.read_bytes()))
    instruments = load_instruments([plain])
    assert instruments == load_instruments([konex_gz])
    assert instruments and all(rules == KONEX for _, rules in instruments.values())


def test_the_entry_point_hands_the_instruments_to_the_market(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIM_MASTER_FILES", raising=False)
    settings = SimSettings()
    instruments = load_instruments(settings.sim_master_files)
    sim = build_server(settings, instruments)
    etf = next(code for code, (_, rules) in sorted(instruments.items()) if rules == FUNDS)
    assert sim.market.instrument(etf) == instruments[etf]
    base, _ = instruments[etf]
    assert base is None or sim.market.state(etf).base == FUNDS.snap_down(base)
    absent = next(code for n in range(1_000_000) if (code := f"A{n:06d}") not in instruments)
    assert sim.market.instrument(absent) == SYNTHETIC


@pytest.mark.parametrize("content", [None, b"not a master file\n"])
def test_an_unreadable_master_file_stops_the_simulator_with_status_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        content: bytes | None) -> None:
    path = tmp_path / "kospi_code.mst"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("SIM_MASTER_FILES", f"{shipped_paths()[2]},{path}")

    async def serve(sim: object) -> None:
        raise AssertionError("the simulator started on a master it could not read")

    monkeypatch.setattr("relayer.sim.__main__.serve_until_signalled", serve)
    with caplog.at_level(logging.ERROR, logger="relayer.sim"):
        assert main() == EXIT_BAD_MASTER == 2  # before listening: nothing to stop
    assert "SIM_MASTER_FILES" in caplog.text and "kospi_code.mst" in caplog.text
