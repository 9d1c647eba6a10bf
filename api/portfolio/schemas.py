"""Response bodies of the account summary and the portfolio."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # the service builds these answers, so it imports this module
    from api.portfolio.service import PositionValue, Valuation


class AccountSummaryOut(BaseModel):
    cash: int = Field(description="total cash, KRW (includes held cash)")
    held_cash: int = Field(description="part of cash reserved for open buy orders")
    available_cash: int = Field(description="cash - held_cash: what can be spent or withdrawn")
    market_value: int = Field(description="open positions at the last trade prices")
    equity: int = Field(description="cash + market_value")
    realized_pnl: int = Field(description="from closed parts of positions, net of all costs")
    unrealized_pnl: int = Field(description="market_value - book cost of open positions")
    return_rate: Decimal | None = Field(
        description="수익률 of the open positions: unrealized_pnl over their book cost, percent, "
                    "2 decimals, a string; null without open positions", examples=["3.25"])
    fees_paid: int = Field(description="commissions paid, ever, KRW (the FEE rows of the ledger)")
    taxes_paid: int = Field(description="sell taxes paid, ever, KRW (the TAX rows)")
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
                   unrealized_pnl=value.unrealized_pnl, return_rate=value.return_rate,
                   fees_paid=account.fees_paid, taxes_paid=account.taxes_paid,
                   stale_quotes=value.stale_codes,
                   clawback_due=account.clawback_due)


class PositionOut(BaseModel):
    code: str
    quantity: int
    held_quantity: int = Field(description="reserved by open sell orders")
    available_quantity: int
    avg_price: Decimal = Field(description="book cost per share incl. buy commission, 2 "
                                           "decimals; a string")
    avg_purchase_price: Decimal = Field(
        description="매입평균가: what a share was bought for, without commission, as brokers "
                    "show it; 2 decimals, a string")
    cost_basis: int = Field(description="book cost of the shares held, incl. buy "
                                        "commissions, KRW")
    purchase_value: int = Field(description="what the shares held were bought for, without "
                                            "commissions, KRW")
    last_price: int | None = Field(description="null: no quote (valued at book cost)")
    quote_age_s: float | None
    stale: bool = Field(description="the quote missed prints (more than QUOTE_MAX_AGE_S older "
                                    "than the market's last print time: the session counts), "
                                    "or it is missing")
    market_value: int
    unrealized_pnl: int
    return_rate: Decimal | None = Field(
        description="수익률: unrealized_pnl over cost_basis, percent, 2 decimals, a string",
        examples=["-1.07"])
    realized_pnl: int

    @classmethod
    def of(cls, value: PositionValue) -> PositionOut:
        position = value.position
        return cls(code=position.code, quantity=position.quantity,
                   held_quantity=position.held_quantity,
                   available_quantity=position.available_quantity, avg_price=value.avg_price,
                   avg_purchase_price=value.avg_purchase_price,
                   cost_basis=position.cost_basis, purchase_value=position.purchase_value,
                   last_price=value.last_price,
                   quote_age_s=value.quote_age_s, stale=value.stale,
                   market_value=value.market_value, unrealized_pnl=value.unrealized_pnl,
                   return_rate=value.return_rate, realized_pnl=position.realized_pnl)


class PortfolioOut(BaseModel):
    account: AccountSummaryOut
    positions: list[PositionOut]

    @classmethod
    def of(cls, value: Valuation) -> PortfolioOut:
        return cls(account=AccountSummaryOut.of(value),
                   positions=[PositionOut.of(p) for p in value.open_positions])


class PricedAt(StrEnum):
    """Why a buying power's `price` is what it is: the price a buy reserves cash at."""

    LIMIT_PRICE = "limit_price"  # the price asked about: a limit buy reserves at its limit
    # No price asked: a market buy reserves at the day's upper price limit, the most it could
    # fill at (it settles at the fill price and releases the rest).
    UPPER_LIMIT = "upper_limit"
    # No price asked, and the last trade is above the day's upper limit (a print the band
    # does not cover): a market buy reserves at that last trade.
    LAST_TRADE = "last_trade"


class BuyingPowerOut(BaseModel):
    """주문가능 조회: what one order of the instrument may ask for now (docs/api/ACCOUNT.md)."""

    code: str
    name: str = Field(description="the instrument's name in the KRX master")
    price: int = Field(description="KRW per share that a buy reserves at: the `price` asked "
                                   "about, or for a market buy as `priced_at` says")
    priced_at: PricedAt = Field(description="`limit_price`: the price asked about; "
                                            "`upper_limit`: no price asked, a market buy "
                                            "reserves at the day's upper price limit; "
                                            "`last_trade`: the same when the last trade is "
                                            "above that limit")
    cash_available: int = Field(description="cash - held_cash, KRW")
    max_buy_quantity: int = Field(description="the most shares a buy at `price` may order: "
                                              "the largest quantity whose hold fits in "
                                              "cash_available, at most ORDER_MAX_QUANTITY")
    buy_cost: int = Field(description="what a buy of max_buy_quantity at `price` holds: its "
                                      "value plus the most commission its fills can cost, "
                                      "KRW (0 for 0 shares)")
    max_sell_quantity: int = Field(description="shares held and not already held by live "
                                               "sell orders, at most ORDER_MAX_QUANTITY")
