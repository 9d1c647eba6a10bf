"""Valuing an account: its cash and positions from SQL, priced at the latest quotes from Redis;
the requests of the account summary and portfolio routes.

A position is valued at the last trade price. One without any quote is valued at its book cost
(so it adds no P&L) and listed as unpriced; one with a stale quote is valued at that last price
and flagged. Unrealized P&L is market value minus book cost (cost_basis, which includes buy
commissions), so that `equity - net deposits = realized + unrealized P&L` holds exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.ledger.service import get_account
from api.models import Account, Position
from api.portfolio.schemas import AccountSummaryOut, PortfolioOut
from api.quotes.service import latest_quotes
from api.resources import Resources


@dataclass(frozen=True)
class Holdings:
    account: Account
    positions: list[Position]  # every position row, closed ones (quantity 0) included


def holdings(session: Session, user_id: int) -> Holdings:
    """The account and its positions, read in one transaction (a consistent pair)."""
    account = get_account(session, user_id)
    positions = list(session.scalars(select(Position).where(Position.user_id == user_id)
                                     .order_by(Position.code)))
    return Holdings(account, positions)


def return_rate(pnl: int, cost: int) -> Decimal | None:
    """수익률: `pnl` over the `cost` it was made on, in percent with 2 decimals; None on no cost."""
    if cost <= 0:
        return None
    return (Decimal(pnl) * 100 / cost).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class PositionValue:
    """An open position at its last trade price (None: no quote, valued at its book cost)."""

    position: Position
    last_price: int | None
    quote_age_s: float | None
    stale: bool

    @property
    def market_value(self) -> int:
        if self.last_price is None:
            return self.position.cost_basis
        return self.position.quantity * self.last_price

    @property
    def unrealized_pnl(self) -> int:
        return self.market_value - self.position.cost_basis

    @property
    def return_rate(self) -> Decimal | None:
        return return_rate(self.unrealized_pnl, self.position.cost_basis)

    @property
    def avg_price(self) -> Decimal:
        """Book cost per share, buy commissions included."""
        return _per_share(self.position.cost_basis, self.position.quantity)

    @property
    def avg_purchase_price(self) -> Decimal:
        """매입평균가: the price paid per share, without commissions."""
        return _per_share(self.position.purchase_value, self.position.quantity)


def _per_share(amount: int, quantity: int) -> Decimal:
    return (Decimal(amount) / quantity).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Valuation:
    account: Account
    open_positions: list[PositionValue]
    realized_pnl: int

    @property
    def market_value(self) -> int:
        return sum(p.market_value for p in self.open_positions)

    @property
    def unrealized_pnl(self) -> int:
        return sum(p.unrealized_pnl for p in self.open_positions)

    @property
    def return_rate(self) -> Decimal | None:
        """수익률 of the open positions taken together: unrealized P&L over their book cost."""
        return return_rate(self.unrealized_pnl,
                           sum(p.position.cost_basis for p in self.open_positions))

    @property
    def equity(self) -> int:
        return self.account.cash + self.market_value

    @property
    def stale_codes(self) -> list[str]:
        return [p.position.code for p in self.open_positions if p.stale]


def last_price(quote: dict[str, Any] | None) -> int | None:
    """A quote's last trade price, or None (no quote, or one without a usable price)."""
    price = None if quote is None else quote.get("price")
    return price if isinstance(price, int) and not isinstance(price, bool) else None


def _value(position: Position, quote: dict[str, Any] | None) -> PositionValue:
    price = last_price(quote)
    if quote is None or price is None:
        return PositionValue(position, None, None, True)
    return PositionValue(position, price, quote.get("age_s"), bool(quote.get("stale")))


async def account_summary(resources: Resources, user_id: int) -> AccountSummaryOut:
    return AccountSummaryOut.of(await valuation(resources, user_id))


async def portfolio(resources: Resources, user_id: int) -> PortfolioOut:
    return PortfolioOut.of(await valuation(resources, user_id))


async def valuation(resources: Resources, user_id: int) -> Valuation:
    held = await resources.db.read(holdings, user_id)
    open_positions = [p for p in held.positions if p.quantity > 0]
    quotes = await latest_quotes(resources, [p.code for p in open_positions])
    return Valuation(held.account, [_value(p, quotes.get(p.code)) for p in open_positions],
                     sum(p.realized_pnl for p in held.positions))
