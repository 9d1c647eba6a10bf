"""Resetting a portfolio (POST /api/v1/portfolios/{id}/reset): its account starts over at the
initial cash, and what it did before stays readable.

A reset is in-account, one transaction under the account's lock:

1. every live order (open, partially filled, reserved) is cancelled, as a user's cancel
   would, releasing what it holds (reason `portfolio_reset`);
2. every position is closed at no cost: a filled market sell of all its shares at its
   valuation price (the quote's last price, as GET /account values it; a position without a
   quote at its average book cost a share, rounded down), with no commission and no tax
   (the order's reason `reset_close`, the fill's rule `portfolio_reset`);
3. one RESET ledger row moves the cash to INITIAL_CASH (none when it is there already);
4. a `portfolio_resets` row (api.models.PortfolioReset) records what the account held just
   before: the mark that the history and the stats show.

Why in the account rather than a new account per reset: the default portfolio's account is
the user himself (no SQL is spent to find it on every request), and every row keyed by the
account stays where it is. Because the money moves through the account's usual rows, every
invariant holds with no rule of its own: the closing sales are sales (their realized P&L is
the account's, as if sold at that price), and the RESET row is an external flow like a
deposit, which the performance history does not count as a gain or a loss.

Why there is no Idempotency-Key: a repeated reset finds the account as the first one left it
and only adds another mark.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.ledger.service import post, take_user_lock
from api.models import LedgerType, PortfolioReset, Position
from api.orders.store import cancel_every_live_order, close_at_no_cost
from api.portfolio.service import last_price
from api.portfolios.schemas import PortfolioResetOut, PortfolioResetsOut
from api.portfolios.service import live_portfolio
from api.quotes.service import latest_quotes
from api.resources import Resources

# The `reason` of the orders a reset cancels; that of the orders it closes positions with is
# api.models.RESET_CLOSING_REASON (not orders the user placed: GET /stats does not count them).
CANCEL_REASON = "portfolio_reset"

Prices = Mapping[str, int | None]


def closing_price(position: Position, last_price: int | None) -> int:
    """What a reset sells a position at: its last trade price, or without one its average book
    cost a share rounded down (at least 1 won): what GET /account values it at, to the won."""
    if last_price is not None:
        return last_price
    return max(1, position.cost_basis // position.quantity)


# --- SQL units of work -----------------------------------------------------------------------


def held_codes(session: Session, owner_id: int, portfolio_id: int) -> list[str]:
    """The codes a live portfolio holds shares of (404 `portfolio_not_found` otherwise)."""
    account_id = live_portfolio(session, owner_id, portfolio_id).account_id
    return list(session.scalars(select(Position.code).where(
        Position.user_id == account_id, Position.quantity > 0)))


def reset_portfolio(session: Session, owner_id: int, portfolio_id: int, prices: Prices, *,
                    initial_cash: int, now: datetime) -> PortfolioReset:
    """Reset a live portfolio of the owner (the module's steps); `prices`: the last trade price
    of the codes it held when they were read (a position bought since is closed at its book
    cost)."""
    portfolio = live_portfolio(session, owner_id, portfolio_id)
    account = take_user_lock(session, portfolio.account_id)
    cancelled = cancel_every_live_order(session, account, CANCEL_REASON)
    positions = list(session.scalars(
        select(Position).where(Position.user_id == account.user_id, Position.quantity > 0)
        .order_by(Position.code).with_for_update()))
    closing = [(position, closing_price(position, prices.get(position.code)))
               for position in positions]
    market_value = sum(position.quantity * price for position, price in closing)
    mark = PortfolioReset(portfolio_id=portfolio.id, account_id=account.user_id, reset_at=now,
                          cash_before=account.cash, market_value_before=market_value,
                          equity_before=account.cash + market_value, cash_after=initial_cash,
                          orders_cancelled=cancelled, positions_closed=len(closing))
    session.add(mark)
    session.flush()  # its id names the closing fills' print
    for position, price in closing:
        close_at_no_cost(session, account, position, price, f"reset:{mark.id}")
    if account.cash != initial_cash:
        post(session, account, LedgerType.RESET, initial_cash - account.cash,
             f"reset:{mark.id}", reference_is_new=True)
    session.flush()
    return mark


def resets_of(session: Session, owner_id: int, portfolio_id: int) -> list[PortfolioReset]:
    """A live portfolio's resets, newest first."""
    live_portfolio(session, owner_id, portfolio_id)
    return list(session.scalars(select(PortfolioReset).where(
        PortfolioReset.portfolio_id == portfolio_id).order_by(PortfolioReset.id.desc())))


# --- flows for the routes --------------------------------------------------------------------


async def reset(resources: Resources, owner_id: int, portfolio_id: int) -> PortfolioResetOut:
    codes = await resources.db.read(held_codes, owner_id, portfolio_id)
    quotes = await latest_quotes(resources, codes)
    prices = {code: last_price(quotes.get(code)) for code in codes}
    mark = await resources.db.run_retrying(
        reset_portfolio, owner_id, portfolio_id, prices,
        initial_cash=resources.settings.initial_cash, now=resources.clock())
    return PortfolioResetOut.model_validate(mark)


async def resets(resources: Resources, owner_id: int, portfolio_id: int) -> PortfolioResetsOut:
    rows = await resources.db.read(resets_of, owner_id, portfolio_id)
    return PortfolioResetsOut(items=[PortfolioResetOut.model_validate(row) for row in rows])
