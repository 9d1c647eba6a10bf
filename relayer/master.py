"""Korea Investment's stock master files (`kospi_code.mst`, `kosdaq_code.mst`,
`konex_code.mst`): bytes in, `MasterRecord`s out. Shared by the API's importer
(api.instruments.importer) and the exchange simulator (relayer.sim), so it does no I/O beyond
reading the bytes of a file it is given, and imports nothing from `api/`.

The format (Korea Investment's published layout: the headers
`stocks_info/종목마스터정보(코스피|코스닥|코넥스).h` in the koreainvestment/open-trading-api
repository; docs/TRADING.md, "Instruments"): CP949
text, one record a line. A record is a head and a fixed-width tail:

    head  단축코드 (9 bytes, space padded) | 표준코드 ISIN (12) | 한글종목명 (40 bytes, CP949)
    tail  증권그룹구분코드 (2) | flags and index memberships | 주식 기준가 (9) | ... (ASCII only)

The tail is 227 characters on KOSPI, 221 on KOSDAQ and 184 on KONEX. A name that fills its 40
bytes runs straight into the group code, so the tail is cut from the end of the line and the
name is what lies between the ISIN and the tail.

Errors: a line that does not fit the layout is skipped and reported in `MasterFile.skipped`
(with its line number), never raised, so that one bad record cannot stop a daily import; a
file with no readable record at all raises `MasterFormatError`. An unknown security group is
read as `UNKNOWN_GROUP_KIND` and counted in `MasterFile.unknown_groups`.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path

from relayer.krx import Market, SecurityKind

logger = logging.getLogger(__name__)

ENCODING = "cp949"

HEAD_CODE_BYTES = 9
HEAD_ISIN_BYTES = 12
HEAD_BYTES = HEAD_CODE_BYTES + HEAD_ISIN_BYTES


class MasterFormatError(ValueError):
    """The bytes are not a master file of the expected market (no record could be read)."""


class ListingStatus(StrEnum):
    LISTED = "LISTED"
    HALTED = "HALTED"  # 거래정지: listed, but nothing trades today
    DELISTED = "DELISTED"  # gone from the exchange's master (kept: orders and fills name it)


@dataclass(frozen=True, slots=True)
class TailLayout:
    """Where the fields this module reads lie in one market's tail (offsets from its start).

    Every field from 주식 기준가 (`base_offset`) to 공모가 is laid out the same in the three
    files; KOSPI has one more flag (KOSPI 여부) before the financial figures.
    """

    length: int
    base_offset: int  # stck_sdpr
    spac_offset: int | None  # etpr_undt_objt_co_yn (기업인수목적회사여부); KONEX has none
    figures_offset: int  # sale_account, the first of the financial figures

    def market_cap_slice(self) -> slice:
        # 매출액 9, 영업이익 9, 경상이익 9, 당기순이익 5, ROE 9, 기준년월 8, then 시가총액 9.
        start = self.figures_offset + 9 + 9 + 9 + 5 + 9 + 8
        return slice(start, start + 9)


# KOSPI: group 2, 시가총액규모 1, three 4-digit industry codes, then 26 one-character flags
# (the 15th is the SPAC flag). KOSDAQ: the same head with 21 flags (the 10th is the SPAC flag).
# KONEX: the group code, then 주식 기준가 at once.
LAYOUTS: dict[Market, TailLayout] = {
    Market.KOSPI: TailLayout(length=227, base_offset=41, spac_offset=29, figures_offset=41 + 122),
    Market.KOSDAQ: TailLayout(length=221, base_offset=36, spac_offset=24,
                              figures_offset=36 + 121),
    Market.KONEX: TailLayout(length=184, base_offset=2, spac_offset=None,
                             figures_offset=2 + 121),
}

# Offsets from 주식 기준가, the same in every market.
_BASE_PRICE = slice(0, 9)
_LOT_SIZE = slice(9, 14)  # 정규 시장 매매 수량 단위
_HALTED = 19  # 거래정지 여부
_LIQUIDATION = 20  # 정리매매 여부
_ADMINISTRATIVE = 21  # 관리 종목 여부
_LISTED_ON = slice(64, 72)  # 주식 상장 일자, YYYYMMDD
_PREFERRED = 117  # 우선주 구분 코드: 0 common, 1 old-type, 2 new-type preferred (9 also seen)

# 증권그룹구분코드 -> kind. ST is refined by the preferred and SPAC flags (`_stock_kind`).
GROUP_KINDS: dict[str, SecurityKind] = {
    "ST": SecurityKind.STOCK,  # 주권
    "KN": SecurityKind.STOCK,  # 코넥스 (the KONEX layout's name for its shares)
    "EF": SecurityKind.ETF,
    "FE": SecurityKind.ETF,  # 해외ETF
    "EN": SecurityKind.ETN,
    "EW": SecurityKind.ELW,
    "RT": SecurityKind.REIT,  # 부동산투자회사
    "IF": SecurityKind.INFRA_FUND,  # 사회간접자본투융자회사
    "MF": SecurityKind.FUND,  # 증권투자회사
    "SC": SecurityKind.FUND,  # 선박투자회사
    "BC": SecurityKind.FUND,  # 수익증권
    "DR": SecurityKind.DR,  # 주식예탁증서
    "FS": SecurityKind.FOREIGN_STOCK,  # 외국주권
    "SW": SecurityKind.RIGHTS,  # 신주인수권증권
    "SR": SecurityKind.RIGHTS,  # 신주인수권증서
}
# A group the layout does not list yet reads as a stock: the stock grid is the KRX's general
# one, and the import logs the group so that an operator can map it (docs/TRADING.md).
UNKNOWN_GROUP_KIND = SecurityKind.STOCK

# The bus form (`A` + 6) of a short code: six characters as they are (`005930`, `0080G0`), or
# an ETN's seven, whose leading `Q` is dropped (`Q520039` -> `A520039`). Beneficiary
# certificates' nine-character codes (`F70100009`) have no bus form and are skipped.
_SIX = re.compile(r"[0-9A-Z]{6}")
_ETN = re.compile(r"Q[0-9A-Z]{6}")

MARKET_FILES: dict[Market, str] = {
    Market.KOSPI: "kospi_code.mst",
    Market.KOSDAQ: "kosdaq_code.mst",
    Market.KONEX: "konex_code.mst",
}


@dataclass(frozen=True, slots=True)
class MasterRecord:
    code: str  # bus form, A005930
    short_code: str  # as in the file: 005930, Q520039
    isin: str
    name: str
    market: Market
    kind: SecurityKind
    group: str  # the raw 증권그룹구분코드
    halted: bool
    liquidation: bool  # 정리매매: the last days before delisting
    administrative: bool  # 관리종목
    base_price: int | None  # 기준가 (the previous close); None when the file gives 0
    lot_size: int
    listed_on: date | None
    market_cap: int | None  # previous day's market capitalisation, 억원 (100 million KRW)

    @property
    def status(self) -> ListingStatus:
        return ListingStatus.HALTED if self.halted else ListingStatus.LISTED


@dataclass(frozen=True, slots=True)
class MasterFile:
    market: Market
    records: list[MasterRecord]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)
    unknown_groups: Counter[str] = field(default_factory=Counter)
    without_bus_code: int = 0  # records whose short code has no `A` + 6 form


def bus_code(short_code: str) -> str | None:
    if _SIX.fullmatch(short_code):
        return "A" + short_code
    if _ETN.fullmatch(short_code):
        return "A" + short_code[1:]
    return None


def _digits(text: str) -> int | None:
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else None


def _date(text: str) -> date | None:
    if not (len(text) == 8 and text.isdigit()):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _stock_kind(tail: str, layout: TailLayout) -> SecurityKind:
    if layout.spac_offset is not None and tail[layout.spac_offset] == "Y":
        return SecurityKind.SPAC
    preferred = tail[layout.base_offset + _PREFERRED]
    return SecurityKind.STOCK if preferred in ("0", " ") else SecurityKind.PREFERRED


class _Skip(Exception):
    pass


def _record(line: bytes, market: Market, layout: TailLayout,
            unknown: Counter[str]) -> MasterRecord | None:
    """One record; None when its code has no bus form; _Skip when it does not fit."""
    if len(line) < HEAD_BYTES + layout.length + 1:
        raise _Skip(f"{len(line)} bytes, shorter than a {market} record")
    try:
        tail = line[-layout.length:].decode("ascii")
        short_code = line[:HEAD_CODE_BYTES].decode("ascii").strip()
        isin = line[HEAD_CODE_BYTES:HEAD_BYTES].decode("ascii").strip()
        name = line[HEAD_BYTES:-layout.length].decode(ENCODING).strip()
    except UnicodeDecodeError as exc:
        raise _Skip(f"not {ENCODING} text where the layout expects it ({exc.reason})") from None
    code = bus_code(short_code)
    if code is None:
        return None
    if not name:
        raise _Skip(f"{short_code}: no name")
    group = tail[:2]
    kind = GROUP_KINDS.get(group)
    if kind is None:
        unknown[group] += 1
        kind = UNKNOWN_GROUP_KIND
    if kind is SecurityKind.STOCK:
        kind = _stock_kind(tail, layout)
    base = layout.base_offset
    return MasterRecord(
        code=code,
        short_code=short_code,
        isin=isin,
        name=name,
        market=market,
        kind=kind,
        group=group,
        halted=tail[base + _HALTED] == "Y",
        liquidation=tail[base + _LIQUIDATION] == "Y",
        administrative=tail[base + _ADMINISTRATIVE] == "Y",
        base_price=_digits(tail[base + _BASE_PRICE.start:base + _BASE_PRICE.stop]) or None,
        lot_size=_digits(tail[base + _LOT_SIZE.start:base + _LOT_SIZE.stop]) or 1,
        listed_on=_date(tail[base + _LISTED_ON.start:base + _LISTED_ON.stop]),
        market_cap=_digits(tail[layout.market_cap_slice()]),
    )


def parse_master(data: bytes, market: Market) -> MasterFile:
    """Every record of one market's master file (the bytes of the unzipped `.mst`)."""
    layout = LAYOUTS[market]
    records: list[MasterRecord] = []
    skipped: list[tuple[int, str]] = []
    unknown: Counter[str] = Counter()
    without_code = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            record = _record(line, market, layout, unknown)
        except _Skip as exc:
            skipped.append((number, str(exc)))
            continue
        if record is None:
            without_code += 1
        else:
            records.append(record)
    if not records:
        raise MasterFormatError(
            f"no {market} record could be read"
            + (f" (line {skipped[0][0]}: {skipped[0][1]})" if skipped else " (empty file)"))
    for group, count in unknown.items():
        logger.warning("%s master: %d records of unknown security group %r read as %s",
                       market, count, group, UNKNOWN_GROUP_KIND)
    return MasterFile(market, records, skipped, unknown, without_code)


def market_of_path(path: Path) -> Market:
    """The market a master file is for, from its name (`kospi_code.mst`, `kosdaq_code.mst.gz`)."""
    name = path.name.lower()
    for market, file_name in MARKET_FILES.items():
        if name.startswith(file_name.split("_")[0] + "_"):
            return market
    raise MasterFormatError(
        f"{path.name}: cannot tell the market from the name (expected one of "
        f"{', '.join(MARKET_FILES.values())}, optionally gzipped)")


def read_master(path: Path, market: Market | None = None) -> MasterFile:
    """Parse a `.mst` or gzipped `.mst.gz` file; the market from its name unless given."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return parse_master(data, market or market_of_path(path))


SHIPPED_DIR = Path(__file__).with_name("master_files")


def shipped_paths() -> list[Path]:
    """The master files shipped with the code (relayer/master_files/), one per market."""
    return [SHIPPED_DIR / f"{file_name}.gz" for file_name in MARKET_FILES.values()]


def by_code(files: list[MasterFile]) -> dict[str, MasterRecord]:
    """The records of several files by bus code. A code twice (never seen in real files: ETN
    codes start with 5, stock codes do not) keeps its first record, logged."""
    records: dict[str, MasterRecord] = {}
    for master in files:
        for record in master.records:
            first = records.setdefault(record.code, record)
            if first is not record:
                logger.warning("%s appears in the %s and %s masters; keeping %s's (%s)",
                               record.code, first.market, record.market, first.market,
                               first.name)
    return records
