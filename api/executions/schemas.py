"""Response bodies of the fills history."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.models import Fill, Side
from api.orders.schemas import FillOut


class FillHistoryOut(FillOut):
    """A fill as an order's detail lists it, with the order and instrument it belongs to."""

    order_id: int
    code: str
    side: Side
    name: str | None = Field(description="the instrument's name in the KRX master; null if "
                                         "the master no longer lists the code")
    realized_pnl: int | None = Field(description="a sale's realized P&L: its value minus its "
                                                 "commission, taxes and the book cost of the "
                                                 "shares sold (KRW); null on a buy")

    @classmethod
    def of(cls, fill: Fill, name: str | None) -> FillHistoryOut:
        return cls(**FillOut.model_validate(fill).model_dump(), order_id=fill.order_id,
                   code=fill.code, side=Side(fill.side), name=name,
                   realized_pnl=fill.realized_pnl)


class FillsPage(BaseModel):
    items: list[FillHistoryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at "
                                                "the end")
