"""Valuing a batch of accounts at the quotes in Redis, under their account locks: what the daily
snapshots (api.performance.snapshots) and the intraday samples (api.performance.intraday)
share, so that both value an account exactly as GET /api/v1/portfolio does
(api.portfolio.service.Valuation: a position at its quote's last price, at its book cost
without one).

The quotes are read from Redis before the transaction (never a Redis call inside one). A
position bought in between has no price read yet: the unit of work then writes nothing and
answers the codes it lacks; the caller reads them and runs it again. After QUOTE_ATTEMPTS such
tries, a position without a fetched quote is valued at its book cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import Database
from api.models import Account, Position
from api.portfolio.service import PositionValue, Valuation
from api.quotes.service import note_malformed_quote
from relayer.bus import BusNames, MalformedQuote, decode_quote

# Attempts at a batch whose holdings changed between the quote read and the valuation (a new
# position needs its quote); after them, a position without a fetched quote is valued at cost.
QUOTE_ATTEMPTS = 3

Prices = dict[str, int | None]
# A unit of work that values a batch: (session, prices, final) -> the rows written, or, unless
# `final`, the held codes missing from `prices` (then nothing was written).
PricedWrite = Callable[[Session, Prices, bool], set[str] | int]


def held_codes(session: Session, user_ids: Sequence[int]) -> set[str]:
    return set(session.scalars(select(Position.code).distinct()
                               .where(Position.user_id.in_(user_ids), Position.quantity > 0)))


def quote_prices(redis: Redis, names: BusNames, codes: set[str]) -> Prices:
    """The last price of each code's quote in Redis; None without a readable one."""
    ordered = sorted(codes)
    keys = [names.quote(code) for code in ordered]
    raws: Any = redis.mget(keys) if keys else []
    prices: Prices = {}
    for code, key, raw in zip(ordered, keys, raws, strict=True):
        prices[code] = None
        if raw is None:
            continue
        try:
            prices[code] = decode_quote(raw)["price"]
        except MalformedQuote as exc:
            note_malformed_quote(key, raw, exc)
    return prices


def valued(account: Account, positions: list[Position], prices: Prices) -> Valuation:
    """The account as GET /api/v1/portfolio values it (api.portfolio.service), at `prices`."""
    open_positions = [p for p in positions if p.quantity > 0]
    return Valuation(account,
                     [PositionValue(p, prices.get(p.code), None, prices.get(p.code) is None)
                      for p in open_positions],
                     sum(p.realized_pnl for p in positions))


def unpriced(value: Valuation) -> int:
    """Open positions valued at their book cost for want of a quote."""
    return sum(p.last_price is None for p in value.open_positions)


def locked_valuations(session: Session, user_ids: Sequence[int], prices: Prices, *,
                      final: bool) -> list[Valuation] | set[str]:
    """Lock these accounts (ascending user ids, as every unit of work that locks several:
    api.ledger.service) and value each at `prices`, in user id order. Every change of cash or
    holdings locks its account, so each valuation is one consistent state, and so is anything
    else the caller reads in this transaction about these accounts (their ledger rows). Unless
    `final`, the held codes missing from `prices` instead (the caller reads them and comes
    again)."""
    accounts = list(session.scalars(
        select(Account).where(Account.user_id.in_(user_ids)).order_by(Account.user_id)
        .with_for_update().execution_options(populate_existing=True)))
    positions: dict[int, list[Position]] = {}
    for position in session.scalars(select(Position).where(Position.user_id.in_(user_ids))
                                    .execution_options(populate_existing=True)):
        positions.setdefault(position.user_id, []).append(position)
    missing = {p.code for held in positions.values() for p in held
               if p.quantity > 0 and p.code not in prices}
    if missing and not final:
        return missing
    return [valued(account, positions.get(account.user_id, []), prices)
            for account in accounts]


def write_at_quotes(db: Database, redis: Redis, names: BusNames, user_ids: Sequence[int],
                    write: PricedWrite) -> int:
    """Run `write` for a batch of accounts at the quotes of what they hold, reading the quotes
    of positions opened meanwhile and running it again (QUOTE_ATTEMPTS in all; the last is
    `final`). The number of rows written."""
    prices = quote_prices(redis, names, db.call_read(held_codes, user_ids))
    for attempt in range(QUOTE_ATTEMPTS):
        outcome = db.call_retrying(write, prices, attempt == QUOTE_ATTEMPTS - 1)
        if isinstance(outcome, int):
            return outcome
        prices |= quote_prices(redis, names, outcome)
    raise AssertionError("the final attempt always writes")
