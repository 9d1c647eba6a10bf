"""Request and response bodies of the watchlist endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema

from api.quotes.schemas import QuoteOut
from api.text import Label

# Trimmed before the length check, so "  " is refused (validation_error) rather than stored;
# control characters are refused (api.text).
WatchlistName = Label

# The quote is the relayer's JSON passed through with `age_s` and `stale`, as the quote routes
# answer it (api.quotes.service): documented as QuoteOut, not rebuilt through it, so a field the
# relayer adds reaches clients and an odd stored quote cannot turn a watchlist into a 500.
PassedQuote = Annotated[
    dict[str, Any] | None,
    WithJsonSchema({"anyOf": [QuoteOut.model_json_schema(), {"type": "null"}]}),
]


class WatchlistCreate(BaseModel):
    name: WatchlistName = Field(examples=["반도체"])
    codes: list[str] = Field(default_factory=list, examples=[["A005930", "000660"]],
                             description="instruments to start with (A005930 or 005930); "
                                         "repeats count once")


class WatchlistRename(BaseModel):
    name: WatchlistName = Field(examples=["Semiconductors"])


class ItemAdd(BaseModel):
    code: str = Field(examples=["A005930"], description="A005930 or a bare 005930")


class WatchlistItemOut(BaseModel):
    code: str = Field(description="bus form", examples=["A005930"])
    added_at: datetime
    quote: PassedQuote = Field(description="the latest quote with `age_s` and `stale`; null "
                                           "when there is none")


class WatchlistSummaryOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    item_count: int


class WatchlistOut(WatchlistSummaryOut):
    items: list[WatchlistItemOut] = Field(description="in the order they were added")


class WatchlistsOut(BaseModel):
    watchlists: list[WatchlistSummaryOut] = Field(description="oldest first")
