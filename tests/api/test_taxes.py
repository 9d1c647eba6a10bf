"""The sell-tax schedule (api/market/sell_taxes.toml) against the published rates, and the
commission rules, as pure functions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.market.rules import Costs
from api.market.taxes import SaleTaxes, TaxSchedule
from api.settings import ApiSettings
from relayer.krx import Market, SecurityKind

SCHEDULE = TaxSchedule.load()
STOCK = SecurityKind.STOCK


@pytest.mark.parametrize(("market", "trade_date", "transaction", "rural"), [
    # 2026: KOSPI 0.05% + 0.15% rural special tax, KOSDAQ 0.20%, KONEX 0.10%.
    (Market.KOSPI, date(2026, 11, 27), "0.0005", "0.0015"),
    (Market.KOSDAQ, date(2026, 11, 27), "0.0020", "0"),
    (Market.KONEX, date(2026, 11, 27), "0.0010", "0"),
    # 2025: KOSPI 0% + 0.15%, KOSDAQ 0.15%, KONEX 0.10%.
    (Market.KOSPI, date(2025, 6, 2), "0", "0.0015"),
    (Market.KOSDAQ, date(2025, 6, 2), "0.0015", "0"),
    (Market.KONEX, date(2025, 6, 2), "0.0010", "0"),
    # Sales settle two trading days later: the last trades of December pay January's rates.
    (Market.KOSDAQ, date(2025, 12, 26), "0.0015", "0"),
    (Market.KOSDAQ, date(2025, 12, 29), "0.0020", "0"),
    (Market.KOSPI, date(2024, 12, 27), "0", "0.0015"),
])
def test_the_rates_by_market_and_trade_date(market: Market, trade_date: date, transaction: str,
                                            rural: str) -> None:
    rates = SCHEDULE.rates(market, STOCK, trade_date)
    assert (rates.securities_transaction_tax, rates.rural_special_tax) == (
        Decimal(transaction), Decimal(rural))


@pytest.mark.parametrize("kind", [SecurityKind.ETF, SecurityKind.ETN, SecurityKind.ELW])
def test_exchange_traded_funds_and_notes_pay_no_sell_tax(kind: SecurityKind) -> None:
    for market in Market:
        assert SCHEDULE.on_sale(market, kind, date(2026, 11, 27), 10_000_000) == SaleTaxes(0, 0)


@pytest.mark.parametrize("kind", [SecurityKind.PREFERRED, SecurityKind.REIT, SecurityKind.SPAC,
                                  SecurityKind.INFRA_FUND])
def test_other_listed_shares_pay_their_markets_tax(kind: SecurityKind) -> None:
    assert SCHEDULE.on_sale(Market.KOSPI, kind, date(2026, 11, 27), 1_000_000) == SaleTaxes(
        500, 1_500)


def test_each_component_is_rounded_down_on_its_own() -> None:
    # 1,234,567 x 0.05% = 617.28 -> 617 and x 0.15% = 1,851.85 -> 1,851: 2,468 in all, a won
    # less than 0.20% of the whole rounded once (2,469.13 -> 2,469).
    taxes = SCHEDULE.on_sale(Market.KOSPI, STOCK, date(2026, 11, 27), 1_234_567)
    assert taxes == SaleTaxes(617, 1_851) and taxes.total == 2_468
    assert SCHEDULE.on_sale(Market.KONEX, STOCK, date(2026, 11, 27), 1_234_567) == SaleTaxes(
        1_234, 0)


def test_a_sale_before_the_schedule_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="starts on 2024-12-27"):
        SCHEDULE.rates(Market.KOSPI, STOCK, date(2024, 12, 26))


def test_the_trade_date_is_the_korean_one() -> None:
    costs = Costs(Decimal("0.00015"))
    # 2025-12-28 16:00 UTC is 2025-12-29 01:00 in Seoul: 2026's rates.
    late = datetime(2025, 12, 28, 16, 0, tzinfo=UTC)
    assert costs.sale_taxes(Market.KOSDAQ, STOCK, 100_000, late) == SaleTaxes(200, 0)
    assert costs.sale_taxes(Market.KOSDAQ, STOCK, 100_000,
                            datetime(2025, 12, 28, 14, 0, tzinfo=UTC)) == SaleTaxes(150, 0)


@pytest.mark.parametrize(("text", "complaint"), [
    ("exempt_kinds = []\n", "schedule"),
    ('[[schedule]]\nfrom = "2026-01-01"\n', "must be a date"),
    ("[[schedule]]\nfrom = 2026-01-01\n"
     'KOSPI = { securities_transaction_tax = "0.05", rural_special_tax = "0" }\n', "between 0"),
    ("[[schedule]]\nfrom = 2026-01-01\n"
     'KOSPI = { securities_transaction_tax = "0.0005", rural_special_tax = "0.0015" }\n',
     "KOSDAQ"),
    ('exempt_kinds = ["BOND"]\n[[schedule]]\nfrom = 2026-01-01\n', "BOND"),
    ("not toml at all = = \n", "not-toml"),
    ("[[schedule]]\nfrom = 2999-01-01\n" + "".join(
        f'{market} = {{ securities_transaction_tax = "0", rural_special_tax = "0" }}\n'
        for market in ("KOSPI", "KOSDAQ", "KONEX")), "must cover today"),
])
def test_a_malformed_schedule_file_is_refused_at_startup(tmp_path: Path, text: str,
                                                         complaint: str) -> None:
    path = tmp_path / "not-toml.toml" if complaint == "not-toml" else tmp_path / "taxes.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=complaint):
        TaxSchedule.load(path)
    with pytest.raises(ValidationError, match="sell_tax_schedule_file"):
        ApiSettings(sell_tax_schedule_file=path)


def test_a_missing_schedule_file_is_refused_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read the tax schedule"):
        ApiSettings(sell_tax_schedule_file=tmp_path / "absent.toml")


def test_the_commission_minimum_is_paid_once_per_order() -> None:
    costs = Costs(Decimal("0.00015"), commission_min=1_000)
    assert costs.commission(700_000, first_fill=True) == 1_000  # 105 -> the minimum
    assert costs.commission(700_000, first_fill=False) == 105
    assert costs.commission(10_000_000, first_fill=True) == 1_500  # above the minimum
    # What a buy holds covers any split of its fills: the minimum once, plus the rate.
    assert costs.buy_reservation(10, 70_000, first_fill_pending=True) == 700_000 + 105 + 1_000
    assert costs.buy_reservation(10, 70_000, first_fill_pending=False) == 700_000 + 105
