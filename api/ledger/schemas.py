"""Request and response bodies of the account and transactions endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from api.models import Account, LedgerType


class AmountRequest(BaseModel):
    # Strict: "1000" and 1000.0 are refused (validation_error), never coerced. Positivity and
    # the per-request limit are the service's (codes invalid_amount, amount_over_limit).
    amount: StrictInt = Field(description="whole KRW", examples=[1_000_000])


class CashOut(BaseModel):
    """The account's cash after a movement (GET /api/v1/account adds equity and P&L)."""

    cash: int = Field(description="total cash, KRW (includes held cash)")
    held_cash: int = Field(description="part of cash reserved for open orders")
    available_cash: int = Field(description="cash - held_cash: what can be spent or withdrawn")
    clawback_due: int = Field(0, description="virtual cash still owed for a refunded payment")
    currency: str = "KRW"

    @classmethod
    def of(cls, account: Account) -> CashOut:
        return cls(cash=account.cash, held_cash=account.held_cash,
                   available_cash=account.available_cash, clawback_due=account.clawback_due)


class LedgerEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    type: LedgerType
    amount: int = Field(description="KRW; positive credits, negative debits")
    balance_before: int
    balance_after: int
    reference: str | None
    created_at: datetime


class CashMovementOut(BaseModel):
    account: CashOut
    entry: LedgerEntryOut


class TransactionsPage(BaseModel):
    items: list[LedgerEntryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at "
                                                "the end")
