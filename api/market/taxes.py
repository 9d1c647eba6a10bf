"""The taxes on a sale, by market, security kind and trade date: the securities transaction
tax (증권거래세) and, on KOSPI, the special rural tax (농어촌특별세). Rates change by law (they
moved every year from 2019 to 2026), so they are data, read from a schedule file
(api/market/sell_taxes.toml, or SELL_TAX_SCHEDULE_FILE), never literals in the code.

Each component is rounded down to the won separately, as the tax statements show them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from relayer.krx import Market, SecurityKind

DEFAULT_SCHEDULE_FILE = Path(__file__).with_name("sell_taxes.toml")
# A sanity bound on any one rate read from a file: no KRX sale tax has ever come near 1%.
MAX_RATE = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class SaleTaxes:
    """The taxes on one sale, in whole won."""

    securities_transaction_tax: int = 0
    rural_special_tax: int = 0

    @property
    def total(self) -> int:
        return self.securities_transaction_tax + self.rural_special_tax


NO_TAX = SaleTaxes()


@dataclass(frozen=True, slots=True)
class SellTaxRates:
    securities_transaction_tax: Decimal
    rural_special_tax: Decimal

    def on(self, value: int) -> SaleTaxes:
        """The taxes on a sale of `value` won, each rounded down to the won."""
        return SaleTaxes(_floor(value * self.securities_transaction_tax),
                         _floor(value * self.rural_special_tax))

    @property
    def total(self) -> Decimal:
        return self.securities_transaction_tax + self.rural_special_tax


EXEMPT = SellTaxRates(Decimal(0), Decimal(0))


@dataclass(frozen=True, slots=True)
class TaxPeriod:
    starts: date  # the first trade date the rates apply to
    rates: Mapping[Market, SellTaxRates]


@dataclass(frozen=True, slots=True)
class TaxSchedule:
    periods: tuple[TaxPeriod, ...]  # by start date, oldest first
    exempt_kinds: frozenset[SecurityKind]

    def rates(self, market: Market, kind: SecurityKind, trade_date: date) -> SellTaxRates:
        """The rates on a sale of an instrument of `market` and `kind` traded on
        `trade_date`. ValueError for a date before the schedule starts (the schedule is
        checked to cover the day it is loaded, so only a back-dated caller can hit that)."""
        if kind in self.exempt_kinds:
            return EXEMPT
        current = None
        for period in self.periods:
            if period.starts > trade_date:
                break
            current = period
        if current is None:
            raise ValueError(f"the tax schedule starts on {self.periods[0].starts}, "
                             f"after {trade_date}")
        return current.rates[market]

    def on_sale(self, market: Market, kind: SecurityKind, trade_date: date,
                value: int) -> SaleTaxes:
        return self.rates(market, kind, trade_date).on(value)

    @classmethod
    def load(cls, path: Path = DEFAULT_SCHEDULE_FILE) -> TaxSchedule:
        """The schedule in a TOML file (the format of api/market/sell_taxes.toml); ValueError
        naming what is wrong with a malformed one."""
        with path.open("rb") as file:
            try:
                document = tomllib.load(file)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: {exc}") from exc
        try:
            return cls.of(document)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise ValueError(f"{path}: not a tax schedule: {exc!r}") from exc

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> TaxSchedule:
        exempt = frozenset(SecurityKind(kind) for kind in document.get("exempt_kinds", ()))
        periods = tuple(sorted((_period(entry) for entry in document["schedule"]),
                               key=lambda period: period.starts))
        if not periods:
            raise ValueError("the schedule has no periods")
        if len({period.starts for period in periods}) != len(periods):
            raise ValueError("two periods start on the same date")
        if periods[0].starts > date.today():
            raise ValueError(f"the schedule starts on {periods[0].starts}: it must cover today")
        return cls(periods, exempt)


def _period(entry: Mapping[str, Any]) -> TaxPeriod:
    starts = entry["from"]
    if not isinstance(starts, date):
        raise ValueError(f"`from` must be a date (2026-01-02), not {starts!r}")
    rates = {market: _rates(entry[market.value]) for market in Market}
    return TaxPeriod(starts, rates)


def _rates(entry: Mapping[str, Any]) -> SellTaxRates:
    rates = SellTaxRates(Decimal(str(entry["securities_transaction_tax"])),
                         Decimal(str(entry["rural_special_tax"])))
    for rate in (rates.securities_transaction_tax, rates.rural_special_tax):
        if not Decimal(0) <= rate <= MAX_RATE:
            raise ValueError(f"a tax rate must be between 0 and {MAX_RATE}: {rate}")
    return rates


def _floor(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))
