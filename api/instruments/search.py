"""Instrument search as Korean trading apps do it, over the in-process catalog: by code, by
Korean or English name, and by Hangul initial consonants (`ㅅㅅㅈㅈ`, or mixed: `삼ㅅ`).

Ranking (docs/TRADING.md, "Instruments"), best first:

    0 the exact code (`A005930`, `005930`, any letter case)
    1 the exact name (Korean or English)
    2 a name that starts with the query
    3 a code that starts with the query (`0059`, `A0059`)
    4 a name that contains the query
    5 initials that start with the query's (`ㅅㅅㅈㅈ` -> 삼성전자)
    6 initials that contain the query's

Names are compared without letter case and without spaces (`kodex200` finds `KODEX 200`).
Within a rank: listed and halted instruments before delisted ones, then the larger market
capitalisation (the master's previous-day figure: what people mean by `삼성` is 삼성전자), then
the shorter name, then the code.

Pure and synchronous: the index is built once per catalog copy (api.instruments.catalog) and a
query is a scan of a few thousand precomputed keys, about a millisecond (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.instruments.hangul import has_initial, initials, matches_at
from relayer.krx import Market, SecurityKind
from relayer.master import ListingStatus

if TYPE_CHECKING:
    from api.instruments.catalog import InstrumentInfo

# What a typed code looks like: an optional `A`, then a digit and up to five more characters.
_CODE_QUERY = re.compile(r"A?([0-9][0-9A-Z]{0,5})")
_SPACES = re.compile(r"\s+")

EXACT_CODE, EXACT_NAME, NAME_PREFIX, CODE_PREFIX, NAME_CONTAINS, INITIALS_PREFIX, \
    INITIALS_CONTAIN = range(7)


def search_key(text: str) -> str:
    """How names and queries are compared: no letter case, no spaces."""
    return _SPACES.sub("", text).casefold()


@dataclass(frozen=True, slots=True)
class _Entry:
    info: InstrumentInfo
    code6: str  # the code without its `A`
    name: str  # search_key(name)
    name_en: str | None  # search_key(name_en)
    initials: str  # initials(self.name): one character per character of self.name
    order: tuple[int, int, int, str]  # the tie-break within a rank


def _entry(info: InstrumentInfo) -> _Entry:
    name = search_key(info.name)
    order = (int(info.status is ListingStatus.DELISTED), -(info.market_cap or 0),
             len(info.name), info.code)
    return _Entry(info, info.code[1:], name,
                  search_key(info.name_en) if info.name_en else None, initials(name), order)


class SearchIndex:
    def __init__(self, instruments: Iterable[InstrumentInfo]) -> None:
        self._entries = [_entry(info) for info in instruments]
        self._entries.sort(key=lambda entry: entry.order)

    def search(self, query: str, *, market: Market | None = None,
               kind: SecurityKind | None = None) -> list[InstrumentInfo]:
        """Every instrument that matches, best first (module docstring); all of them, in the
        tie-break order, for an empty query."""
        entries = [entry for entry in self._entries
                   if (market is None or entry.info.market is market)
                   and (kind is None or entry.info.kind is kind)]
        key = search_key(query)
        if not key:
            return [entry.info for entry in entries]
        code = _code_query(query)
        ranked = (_by_initials(entries, key) if has_initial(key)
                  else _by_name_or_code(entries, key, code))
        # Stable, and the entries are already in tie-break order: the rank alone sorts.
        ranked.sort(key=lambda pair: pair[0])
        return [entry.info for _, entry in ranked]


# The two scans below are the whole cost of a keystroke (about 4,000 entries): one loop each,
# no call per entry but str methods.

def _by_initials(entries: list[_Entry], key: str) -> list[tuple[int, _Entry]]:
    """A bare initial is in no name: only the initials can match (`삼ㅅ`: 삼 must be 삼)."""
    qi = initials(key)
    plain = qi == key  # initials only: no syllable to compare
    ranked = []
    for entry in entries:
        position = entry.initials.find(qi)
        while position >= 0:
            if plain or matches_at(key, entry.name, position):
                ranked.append((INITIALS_PREFIX if position == 0 else INITIALS_CONTAIN, entry))
                break
            position = entry.initials.find(qi, position + 1)
    return ranked


def _by_name_or_code(entries: list[_Entry], key: str,
                     code: str | None) -> list[tuple[int, _Entry]]:
    ranked = []
    for entry in entries:
        if code is not None and entry.code6.startswith(code):
            ranked.append((EXACT_CODE if entry.code6 == code else _name_rank(entry, key)
                           or CODE_PREFIX, entry))
            continue
        position = entry.name.find(key)
        if position < 0 and entry.name_en is not None:
            position = entry.name_en.find(key)
        if position >= 0:
            ranked.append((_name_rank(entry, key) or NAME_CONTAINS, entry))
    return ranked


def _code_query(query: str) -> str | None:
    match = _CODE_QUERY.fullmatch(query.strip().upper())
    return match.group(1) if match else None


def _name_rank(entry: _Entry, key: str) -> int | None:
    """EXACT_NAME or NAME_PREFIX, None otherwise (for the few entries that matched at all)."""
    names = (entry.name,) if entry.name_en is None else (entry.name, entry.name_en)
    if key in names:
        return EXACT_NAME
    if any(name.startswith(key) for name in names):
        return NAME_PREFIX
    return None
