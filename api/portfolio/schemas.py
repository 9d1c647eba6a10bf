"""Response bodies of the account summary and the portfolio."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from api.portfolio.service import PositionValue, Valuation


class AccountSummaryOut(BaseModel):
    cash: int = Field(description="total cash, KRW (includes held cash)")
    held_cash: int = Field(description="part of cash reserved for open buy orders")
    available_cash: int = Field(description="cash - held_cash: what can be spent or withdrawn")
    market_value: int = Field(description="open positions at the last trade prices")
    equity: int = Field(description="cash + market_value")
    realized_pnl: int = Field(description="from closed parts of positions, net of all costs")
    unrealized_pnl: int = Field(description="market_value - book cost of open positions")
    stale_quotes: list[str] = Field(description="codes valued at a stale or missing quote")
    clawback_due: int = Field(description="virtual cash still owed for a refunded payment; "
                                          "taken from the next credits, and withdrawals wait "
                                          "until it is 0")
    currency: str = "KRW"

    @classmethod
    def of(cls, value: Valuation) -> AccountSummaryOut:
        account = value.account
        return cls(cash=account.cash, held_cash=account.held_cash,
                   available_cash=account.available_cash, market_value=value.market_value,
                   equity=value.equity, realized_pnl=value.realized_pnl,
                   unrealized_pnl=value.unrealized_pnl, stale_quotes=value.stale_codes,
                   clawback_due=account.clawback_due)


class PositionOut(BaseModel):
    code: str
    quantity: int
    held_quantity: int = Field(description="reserved by open sell orders")
    available_quantity: int
    avg_price: Decimal = Field(description="book cost per share incl. buy commission, 2 "
                                           "decimals; a string")
    cost_basis: int = Field(description="book cost of the shares held, KRW")
    last_price: int | None = Field(description="null: no quote (valued at book cost)")
    quote_age_s: float | None
    stale: bool = Field(description="the quote is older than QUOTE_MAX_AGE_S, or missing")
    market_value: int
    unrealized_pnl: int
    realized_pnl: int

    @classmethod
    def of(cls, value: PositionValue) -> PositionOut:
        position = value.position
        return cls(code=position.code, quantity=position.quantity,
                   held_quantity=position.held_quantity,
                   available_quantity=position.available_quantity, avg_price=value.avg_price,
                   cost_basis=position.cost_basis, last_price=value.last_price,
                   quote_age_s=value.quote_age_s, stale=value.stale,
                   market_value=value.market_value, unrealized_pnl=value.unrealized_pnl,
                   realized_pnl=position.realized_pnl)


class PortfolioOut(BaseModel):
    account: AccountSummaryOut
    positions: list[PositionOut]

    @classmethod
    def of(cls, value: Valuation) -> PortfolioOut:
        return cls(account=AccountSummaryOut.of(value),
                   positions=[PositionOut.of(p) for p in value.open_positions])
