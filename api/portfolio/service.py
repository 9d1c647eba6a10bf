"""Valuing an account: its cash and positions from SQL, priced at the latest quotes from Redis.

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


@dataclass(frozen=True)
class PositionValue:
    position: Position
    last_price: int | None
    quote_age_s: float | None
    stale: bool
    market_value: int
    unrealized_pnl: int

    @property
    def avg_price(self) -> Decimal:
        return (Decimal(self.position.cost_basis) / self.position.quantity).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_EVEN)


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
    def equity(self) -> int:
        return self.account.cash + self.market_value

    @property
    def stale_codes(self) -> list[str]:
        return [p.position.code for p in self.open_positions if p.stale]


def _value(position: Position, quote: dict[str, Any] | None) -> PositionValue:
    price = None if quote is None else quote.get("price")
    if quote is None or not isinstance(price, int) or isinstance(price, bool):
        return PositionValue(position, None, None, True, position.cost_basis, 0)
    market_value = position.quantity * price
    return PositionValue(position, price, quote.get("age_s"), bool(quote.get("stale")),
                         market_value, market_value - position.cost_basis)


async def valuation(resources: Resources, user_id: int) -> Valuation:
    held = await resources.db.read(holdings, user_id)
    open_positions = [p for p in held.positions if p.quantity > 0]
    quotes = await latest_quotes(resources, [p.code for p in open_positions])
    return Valuation(held.account, [_value(p, quotes.get(p.code)) for p in open_positions],
                     sum(p.realized_pnl for p in held.positions))
