"""relayer.master on recorded records: real lines of Korea Investment's master files (KOSPI
and KOSDAQ of mid-2025, KONEX as shipped), as bytes, CP949, names padded to 40 bytes."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest

from relayer.krx import Market, SecurityKind
from relayer.master import (
    ListingStatus,
    MasterFormatError,
    by_code,
    market_of_path,
    parse_master,
    read_master,
    shipped_paths,
)

KOSPI_LINES = [
    # Samsung Electronics: a common stock (우선주 구분 0), 기준가 54,700, 시가총액 3,238,041 억.
    ("005930   KR7005930003", "삼성전자",
     "ST1002700130000 NN5YYY YYNNNNNNN0NNNNNNNY0000547000000100001NNN00NNN000000020Y09000001525"
     "42780000000001001975061100000000591963700000000077804668500012       0 NYY000791405000066"
     "85300009151682229000008.1620250331003238041511NNY"),
    # Its preferred share (우선주 구분 1).
    ("005935   KR7005931001", "삼성전자우",
     "ST0002700130000 NN0NNN NNNNNNNNN0NNNNNNNN0000455000000100001NNN00NNN000000020Y09000000085"
     "71260000000001001989092500000000081597400000000011946713500012       1 NNN000000000000000"
     "00000000000000000000000.00        000371268   NNY"),
    # A new-type preferred with a letter in its code (우선주 구분 2).
    ("00680K   KR700680K019", "미래에셋증권2우B",
     "ST0002100240000 N 0NNN NN    N  0  N     0000051500000100001NNN00NNN000000040Y09000000093"
     "24550000000050002018031400000000013750000000000070000000000012       2 NNN000000000000000"
     "00000000000000000000000.00        000007081   NNN"),
    # An ETF with letters in its code.
    ("0040S0   KR70040S0004", "HANARO 글로벌피지컬AI액티브",
     "EF 000000000000NN 0NNN2NN    N  0  Y     0000118400000100001NNN00NNN000000100N09000000016"
     "27140000000000002025042200000000000200000000000000000000000012       0 NNN000000000000000"
     "00000000000000000000000.00        000000236   NNN"),
    ("069500   KR7069500007", "KODEX 200",
     "EF 000000000000NNN0NNN2NNNNNNNNN0NNYNNNNN0000346100000100001NNN00NNN000000030Y09000000441"
     "75660000000000002002101400000000017650000000000000000000000012       0 NNN000000000000000"
     "00000000000000000000000.00        000061086   NNN"),
    # A REIT whose trading is halted (거래정지 Y).
    ("140910   KR7140910001", "에이리츠",
     "RT3002800000000 NN0NNN NNNNNNNNN0NNYNNNNN0000031300000100001YNN00NNN000000100N09000000000"
     "000000000000500020110714000000000004463000000000022315160000         0 NNY000000000000000"
     "00000000000000000000000.00        000000139   NNN"),
    # A securities investment company (MF).
    ("152550   KR7152550000", "한국ANKOR유전",
     "MF 000000000000NNN0NNN NNNNNNNNN0NNNNNNNN0000002500000100001NNN00NNN000000100N09000000050"
     "944500000000000020120308000000000070020000000000350100000000         0 NNN000000000000000"
     "00000000000000000000000.00        000000175   NNN"),
    # An ETN: a Q and six characters; its 40-byte name runs into the group code.
    ("Q520066  KRG520000669", "미래에셋 KRX금현물 Auto-KO-C 2810-01 ETN",
     "EN 000000000000NN 0NNN4NN    N  0  N     0000173400000100001NNN00NNN000000100N09000000012"
     "049800000000000020231026000000000003000000000000000000000000         0 NNN000000000000000"
     "00000000000000000000000.00        000000520   NNN"),
    # A beneficiary certificate: a nine-character code, which has no bus form.
    ("F70100009KR5701000097", "한투삼성그룹성장테마1호(A)",
     "BC 000000000000NN 0NNN NN    N  0  N     0000010080000100000NNN00NNN000000100N09000000000"
     "000000000000100020240809000000000017771000000000017771907000         0 NNN000000000000000"
     "00000000000000000000000.00        000000179   NNN"),
]
KOSDAQ_LINES = [
    # A SPAC (기업인수목적회사여부 Y).
    ("430220   KR7430220004", "신영스팩8호",
     "ST3101400000000 NN N    Y  0  N    N0000022800000100001NNN00NNN000000100N090000000126445"
     "0000000001002022082600000000000676000000000000067600000012       0 NN00000000000000000000"
     "00000040000300000000220241231000000154   NNN"),
    # Halted, and an administrative issue (관리종목 Y).
    ("418250   KR7418250007", "시큐레터",
     "ST3000000000000 NN N    N  0  N    N0000065500000100001YNY00NNN000000100N090000000000000"
     "0000000005002023082400000000000798100000000000399077100012       0 NN000000014-00000073-"
     "00000094-0094-0000008220241231000000522   NNN"),
]
KONEX_LINES = [
    ("012210   KR7012210001", "삼미금속",
     "ST0000033300000100001NNN00NNN000000100N0900000000000610000000010002023051600000000001976"
     "600000000001976660900012       0 N 0000007640000000450000000240003500000000520241231000000"
     "658NNN"),
]


def master_bytes(lines: list[tuple[str, str, str]]) -> bytes:
    def record(head: str, name: str, tail: str) -> bytes:
        encoded = name.encode("cp949")
        return head.encode() + encoded + b" " * (40 - len(encoded)) + tail.encode() + b"\r\n"
    return b"".join(record(*line) for line in lines)


def test_kospi_records() -> None:
    master = parse_master(master_bytes(KOSPI_LINES), Market.KOSPI)
    records = {record.code: record for record in master.records}
    samsung = records["A005930"]
    assert (samsung.short_code, samsung.isin, samsung.name) == ("005930", "KR7005930003",
                                                                "삼성전자")
    assert (samsung.market, samsung.kind, samsung.status) == (Market.KOSPI, SecurityKind.STOCK,
                                                              ListingStatus.LISTED)
    assert (samsung.base_price, samsung.market_cap, samsung.lot_size) == (54_700, 3_238_041, 1)
    assert samsung.listed_on == date(1975, 6, 11)
    assert records["A005935"].kind is SecurityKind.PREFERRED
    assert records["A00680K"].kind is SecurityKind.PREFERRED
    assert (records["A0040S0"].kind, records["A0040S0"].base_price) == (SecurityKind.ETF, 11_840)
    assert records["A069500"].name == "KODEX 200"
    reit = records["A140910"]
    assert (reit.kind, reit.status, reit.base_price) == (SecurityKind.REIT, ListingStatus.HALTED,
                                                         3_130)
    assert records["A152550"].kind is SecurityKind.FUND
    etn = records["A520066"]
    assert (etn.short_code, etn.kind, etn.base_price) == ("Q520066", SecurityKind.ETN, 17_340)
    assert etn.name == "미래에셋 KRX금현물 Auto-KO-C 2810-01 ETN"
    assert master.without_bus_code == 1  # F70100009
    assert master.skipped == [] and not master.unknown_groups


def test_kosdaq_and_konex_records() -> None:
    kosdaq = {r.code: r for r in parse_master(master_bytes(KOSDAQ_LINES), Market.KOSDAQ).records}
    assert (kosdaq["A430220"].kind, kosdaq["A430220"].base_price) == (SecurityKind.SPAC, 2_280)
    halted = kosdaq["A418250"]
    assert (halted.status, halted.administrative, halted.kind) == (
        ListingStatus.HALTED, True, SecurityKind.STOCK)
    konex = parse_master(master_bytes(KONEX_LINES), Market.KONEX).records
    assert [(r.code, r.name, r.market, r.kind, r.base_price, r.market_cap) for r in konex] == [
        ("A012210", "삼미금속", Market.KONEX, SecurityKind.STOCK, 3_330, 658)]


def test_an_unknown_group_reads_as_a_stock_and_is_counted() -> None:
    head, name, tail = KOSPI_LINES[0]
    master = parse_master(master_bytes([(head, name, "ZZ" + tail[2:])]), Market.KOSPI)
    assert master.records[0].kind is SecurityKind.STOCK
    assert master.unknown_groups == {"ZZ": 1}


def test_a_bad_line_is_skipped_with_its_number() -> None:
    data = master_bytes(KOSPI_LINES[:1]) + b"005380   KR7005380001short\n"
    master = parse_master(data, Market.KOSPI)
    assert [r.code for r in master.records] == ["A005930"]
    assert master.skipped[0][0] == 2 and "shorter" in master.skipped[0][1]


def test_the_wrong_market_or_no_record_is_an_error() -> None:
    with pytest.raises(MasterFormatError):
        parse_master(b"", Market.KOSPI)
    # A KONEX file read with the KOSPI layout: every line is shorter than a KOSPI record.
    with pytest.raises(MasterFormatError, match="shorter"):
        parse_master(master_bytes(KONEX_LINES), Market.KOSPI)


def test_plain_and_gzipped_files(tmp_path: Path) -> None:
    plain = tmp_path / "kosdaq_code.mst"
    plain.write_bytes(master_bytes(KOSDAQ_LINES))
    zipped = tmp_path / "archive" / "kosdaq_code.mst.gz"
    zipped.parent.mkdir()
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_master(plain).records == read_master(zipped).records
    assert read_master(zipped).market is Market.KOSDAQ
    assert market_of_path(Path("KONEX_code.mst")) is Market.KONEX
    with pytest.raises(MasterFormatError):
        market_of_path(Path("elw_code.mst"))


def test_the_shipped_master_reads_whole() -> None:
    files = [read_master(path) for path in shipped_paths()]
    assert [master.market for master in files] == [Market.KOSPI, Market.KOSDAQ, Market.KONEX]
    assert all(master.skipped == [] and not master.unknown_groups for master in files)
    records = by_code(files)
    assert records["A005930"].name == "삼성전자"
    assert records["A069500"].kind is SecurityKind.ETF
    assert sum(r.market is Market.KONEX for r in records.values()) >= 100
