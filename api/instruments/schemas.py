"""Request and response shapes of the instrument routes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, Field

from relayer.krx import Market, SecurityKind
from relayer.master import ListingStatus


class SellTaxOut(BaseModel):
    """The sell-tax rates of an instrument on a trade date (docs/TRADING.md, "Taxes by market,
    kind and date"), as fractions of the sale value; decimal strings."""

    securities_transaction_tax: Decimal = Field(description="증권거래세", examples=["0.0005"])
    rural_special_tax: Decimal = Field(description="농어촌특별세 (KOSPI)", examples=["0.0015"])
    total: Decimal = Field(examples=["0.0020"])
    trade_date: date = Field(description="the trade date (KST) these rates apply to")


class InstrumentOut(BaseModel):
    code: str = Field(examples=["A005930"])
    isin: str = Field(examples=["KR7005930003"])
    name: str = Field(description="Korean name, as in the KRX master", examples=["삼성전자"])
    name_en: str | None = Field(description="English name where known (the KRX master files "
                                            "have none)", examples=[None])
    market: Market
    type: SecurityKind
    status: ListingStatus
    tradable: bool = Field(description="listed, and of a type this market trades (not ELW or "
                                       "rights)")


class InstrumentPage(BaseModel):
    items: list[InstrumentOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on "
                                                "the last")


class InstrumentDetailOut(InstrumentOut):
    base_price: int | None = Field(description="today's base price (기준가): the live quote's "
                                               "`base`, else the master's", examples=[70500])
    base_price_source: str | None = Field(description="`quote` or `master`; null without either",
                                          examples=["quote"])
    lower_limit: int | None = Field(description="하한가 for `base_price`", examples=[49400])
    upper_limit: int | None = Field(description="상한가 for `base_price`", examples=[91600])
    price: int | None = Field(description="the last trade, from the live quote", examples=[71200])
    tick_price: int | None = Field(description="the price `tick_size` is for: the `price` "
                                               "parameter, else the last trade, else the base")
    tick_size: int | None = Field(description="호가단위 at `tick_price`", examples=[100])
    market_cap: int | None = Field(description="previous day's market capitalisation, "
                                               "100 million KRW (억원), from the master")
    streamed: bool = Field(description="subscribed upstream right now (the relayer's active set)")
    desired: bool = Field(description="asked for upstream (the desired set); `streamed` follows "
                                      "within seconds")
    sell_tax: SellTaxOut = Field(description="the taxes a sale of it traded today pays")
