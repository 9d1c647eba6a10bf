"""Instrument search and the details of one instrument, served from the in-process catalog
(api.instruments.catalog): no SQL per request. The details add what Redis knows now: the live
quote (today's base and last price) and whether the relayer streams the instrument.
"""

from __future__ import annotations

from datetime import datetime

from api.errors import NotFound
from api.instruments.catalog import InstrumentInfo
from api.instruments.codes import checked_code
from api.instruments.schemas import (
    InstrumentDetailOut,
    InstrumentOut,
    InstrumentPage,
    SellTaxOut,
)
from api.market.rules import KST, day_base, day_start
from api.pagination import check_limit, decode_cursor, encode_cursor
from api.resources import Resources
from relayer.bus import MalformedQuote, decode_quote
from relayer.krx import Market, SecurityKind

CURSOR_KIND = "instruments"
MAX_QUERY_LENGTH = 64


def instrument_out(info: InstrumentInfo) -> InstrumentOut:
    return InstrumentOut(code=info.code, isin=info.isin, name=info.name, name_en=info.name_en,
                         market=info.market, type=info.kind, status=info.status,
                         tradable=info.tradable)


async def search_instruments(resources: Resources, query: str, *, market: Market | None,
                             kind: SecurityKind | None, cursor: str | None,
                             limit: int) -> InstrumentPage:
    """One page of the instruments matching `query`, best first (api.instruments.search). The
    cursor is the position after the page's last row in the ranked list: pages computed from
    one catalog copy neither repeat nor skip; a refresh in between may shift them by a row."""
    check_limit(limit)
    start = 0 if cursor is None else decode_cursor(CURSOR_KIND, cursor)
    snapshot = await resources.instruments.snapshot()
    found = snapshot.index.search(query, market=market, kind=kind)
    page = found[start:start + limit]
    end = start + len(page)
    return InstrumentPage(items=[instrument_out(info) for info in page],
                          next_cursor=encode_cursor(CURSOR_KIND, end) if end < len(found)
                          else None)


async def instrument_detail(resources: Resources, code_text: str,
                            price: int | None) -> InstrumentDetailOut:
    """Everything about one instrument; 422 `invalid_code`, 404 `unknown_instrument`."""
    code = checked_code(code_text)
    info = await resources.instruments.get(code)
    if info is None:
        raise NotFound(f"{code} is not in the KRX master", code="unknown_instrument")
    names = resources.names
    topic = resources.topics.topic(code)
    async with resources.redis.pipeline(transaction=False) as pipe:
        pipe.get(names.quote(code))
        pipe.sismember(names.desired_subscriptions, topic)
        pipe.hexists(names.active_subscriptions, topic)
        raw, desired, active = await pipe.execute()
    quote = None
    if raw is not None:
        try:
            quote = decode_quote(raw)
        except MalformedQuote:
            quote = None  # counts as no quote, as in every quote read (api.quotes.service)
    rules = info.price_rules
    base, source = info.base_price, "master" if info.base_price else None
    last: int | None = None
    if quote is not None:
        # The day's base, as quotes and orders reckon it (api.market.rules.day_base).
        base = day_base(int(quote["price"]), int(quote["base"]),
                        datetime.fromisoformat(quote["ts"]),
                        day_start(resources.calendar, resources.clock()))
        source, last = "quote", int(quote["price"])
    lower, upper = rules.price_limits(base) if base else (None, None)
    at = price or last or base
    return InstrumentDetailOut(
        **instrument_out(info).model_dump(),
        base_price=base, base_price_source=source, lower_limit=lower, upper_limit=upper,
        price=last, tick_price=at, tick_size=rules.tick_size(at) if at else None,
        market_cap=info.market_cap, streamed=bool(active), desired=bool(desired),
        sell_tax=_sell_tax(resources, info))


def _sell_tax(resources: Resources, info: InstrumentInfo) -> SellTaxOut:
    today = resources.clock().astimezone(KST).date()
    rates = resources.trading_rules.costs.taxes.rates(info.market, info.kind, today)
    return SellTaxOut(securities_transaction_tax=rates.securities_transaction_tax,
                      rural_special_tax=rates.rural_special_tax, total=rates.total,
                      trade_date=today)
