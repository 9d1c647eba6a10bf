"""Request and response bodies of the portfolio endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from api.portfolio.schemas import AccountSummaryOut
from api.text import Label

# Trimmed before the length check (1 to 64 characters), control characters refused (api.text).
PortfolioName = Label


class PortfolioCreate(BaseModel):
    name: PortfolioName = Field(examples=["배당주 전략"])


class PortfolioRename(BaseModel):
    name: PortfolioName = Field(examples=["Momentum"])


class PortfolioOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="the value of the X-Portfolio-Id header that selects it")
    name: str
    is_default: bool = Field(description="the user's own account: used without the header; "
                                         "cannot be deleted")
    created_at: datetime


class PortfolioDetailOut(PortfolioOut):
    account: AccountSummaryOut = Field(description="its cash, equity and P&L at live prices, "
                                                   "as GET /account answers with its header")


class PortfoliosOut(BaseModel):
    items: list[PortfolioOut] = Field(description="the default portfolio first, then the "
                                                  "others in the order they were created")


class PortfolioResetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    portfolio_id: int
    reset_at: datetime
    cash_before: int = Field(description="the cash just before (its live orders cancelled)")
    market_value_before: int = Field(description="its positions at the prices they were "
                                                 "closed at (the last trade price, or the "
                                                 "average book cost without a quote)")
    equity_before: int = Field(description="cash_before + market_value_before")
    cash_after: int = Field(description="the cash it starts over with (INITIAL_CASH)")
    orders_cancelled: int
    positions_closed: int = Field(description="each sold at its price above, at no cost: a "
                                              "fill with rule `portfolio_reset`")


class PortfolioResetsOut(BaseModel):
    items: list[PortfolioResetOut] = Field(description="newest first")
