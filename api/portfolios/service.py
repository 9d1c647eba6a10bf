"""Portfolios: a user's list of them, their CRUD, and the account a portfolio id stands for.

An account is what the rest of the code calls `user_id`: accounts, ledger, orders, fills,
positions, idempotency keys, user events and snapshots are all keyed by a users row. So a
portfolio is a name on an account: the default portfolio's account is the user himself (nothing
that existed before changes), any other's is a users row of role `portfolio` made here, which
can never sign in (a hash of a random secret nobody keeps, and the login refuses the role), with
an account opened exactly as registration opens one. Every invariant of an account therefore
holds per portfolio without more code.

Creating and renaming lock the owner's account row (`take_user_lock`, the lock of all his
writes), so the count limit and the "name taken" check are exact. Deleting locks the portfolio's
account, so no order of it is placed or filled while flatness is checked; a deleted portfolio
keeps its account and rows (its history) and answers 404 from then on. Nothing here commits:
`Database` does.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import Conflict, NotFound
from api.ledger.service import open_account, take_user_lock
from api.models import LIVE_ORDER_STATUSES, Order, Portfolio, Position, Role, User
from api.portfolio.service import account_summary
from api.portfolios.schemas import PortfolioDetailOut, PortfolioOut, PortfoliosOut
from api.resources import Resources

# The name of the portfolio every user has from registration (and every user that existed
# before portfolios did: migration 0015 uses the same name).
DEFAULT_NAME = "기본 포트폴리오"
# The synthetic, unique and undeliverable (RFC 2606 `.invalid`) email of a portfolio account.
ACCOUNT_EMAIL_DOMAIN = "portfolios.invalid"


def _not_found() -> NotFound:
    return NotFound("you have no portfolio with this id", code="portfolio_not_found")


def _name_taken() -> Conflict:
    return Conflict("you already have a portfolio with this name", code="portfolio_name_taken")


# --- SQL units of work -----------------------------------------------------------------------


def add_default_portfolio(session: Session, user: User) -> Portfolio:
    """The default portfolio of a new user: his own account (registration, the admin)."""
    portfolio = Portfolio(owner_id=user.id, account_id=user.id, name=DEFAULT_NAME,
                          is_default=True, created_at=user.created_at)
    session.add(portfolio)
    session.flush()
    return portfolio


def account_of(session: Session, owner_id: int, portfolio_id: int) -> int:
    """The account (users id) of the owner's live portfolio `portfolio_id`; 404
    `portfolio_not_found` for another user's portfolio exactly as for one that does not exist."""
    account_id = session.scalar(select(Portfolio.account_id).where(
        Portfolio.id == portfolio_id, Portfolio.owner_id == owner_id,
        Portfolio.deleted_at.is_(None)))
    if account_id is None:
        raise _not_found()
    return account_id


def live_portfolio(session: Session, owner_id: int, portfolio_id: int) -> Portfolio:
    portfolio = session.scalar(select(Portfolio).where(
        Portfolio.id == portfolio_id, Portfolio.owner_id == owner_id,
        Portfolio.deleted_at.is_(None)))
    if portfolio is None:
        raise _not_found()
    return portfolio


def live_portfolios(session: Session, owner_id: int) -> list[Portfolio]:
    """The owner's portfolios, the default one first, then by creation."""
    return list(session.scalars(select(Portfolio).where(
        Portfolio.owner_id == owner_id, Portfolio.deleted_at.is_(None))
        .order_by(Portfolio.is_default.desc(), Portfolio.id)))


def _check_name_free(session: Session, owner_id: int, name: str,
                     renaming: int | None = None) -> None:
    # Letter case is ignored, as the watchlists' names do (MariaDB's collation would ignore it,
    # SQLite would not): the same answer on both.
    query = select(Portfolio.id).where(Portfolio.owner_id == owner_id,
                                       Portfolio.deleted_at.is_(None),
                                       func.lower(Portfolio.name) == func.lower(name))
    if renaming is not None:
        query = query.where(Portfolio.id != renaming)
    if session.scalar(query.limit(1)) is not None:
        raise _name_taken()


def create_portfolio(session: Session, owner_id: int, name: str, unusable_password_hash: str,
                     *, max_per_user: int, initial_cash: int) -> Portfolio:
    """A new portfolio on a new account credited `initial_cash` as a registration's is; 409
    `portfolio_limit` past `max_per_user` (the default one counted), `portfolio_name_taken`."""
    take_user_lock(session, owner_id)  # one at a time per owner: the checks below are exact
    if len(live_portfolios(session, owner_id)) >= max_per_user:
        raise Conflict(f"you have {max_per_user} portfolios already, the most allowed",
                       code="portfolio_limit")
    _check_name_free(session, owner_id, name)
    account = User(email=f"portfolio-{uuid.uuid4().hex}@{ACCOUNT_EMAIL_DOMAIN}",
                   password_hash=unusable_password_hash, role=Role.PORTFOLIO.value)
    session.add(account)
    session.flush()
    open_account(session, account.id, initial_cash)
    portfolio = Portfolio(owner_id=owner_id, account_id=account.id, name=name, is_default=False)
    session.add(portfolio)
    session.flush()
    session.refresh(portfolio)  # created_at as stored
    return portfolio


def rename_portfolio(session: Session, owner_id: int, portfolio_id: int,
                     name: str) -> Portfolio:
    take_user_lock(session, owner_id)
    portfolio = live_portfolio(session, owner_id, portfolio_id)
    _check_name_free(session, owner_id, name, renaming=portfolio.id)
    portfolio.name = name
    session.flush()
    return portfolio


def delete_portfolio(session: Session, owner_id: int, portfolio_id: int, now: datetime) -> None:
    """Mark a flat, non-default portfolio deleted; its account's rows stay (its history)."""
    portfolio = live_portfolio(session, owner_id, portfolio_id)
    if portfolio.is_default:
        raise Conflict("the default portfolio cannot be deleted", code="default_portfolio")
    # Its account's lock: no order of it is placed, filled or modified until this commits.
    take_user_lock(session, portfolio.account_id)
    open_order = session.scalar(select(Order.id).where(
        Order.user_id == portfolio.account_id, Order.status.in_(LIVE_ORDER_STATUSES)).limit(1))
    held = session.scalar(select(Position.code).where(
        Position.user_id == portfolio.account_id, Position.quantity > 0).limit(1))
    if open_order is not None or held is not None:
        raise Conflict("only a portfolio without open orders and without shares can be "
                       "deleted: cancel its orders and sell its shares first",
                       code="portfolio_not_flat")
    portfolio.deleted_at = now


# --- flows for the routes --------------------------------------------------------------------


async def portfolios(resources: Resources, owner_id: int) -> PortfoliosOut:
    rows = await resources.db.read(live_portfolios, owner_id)
    return PortfoliosOut(items=[PortfolioOut.model_validate(row) for row in rows])


async def create(resources: Resources, owner_id: int, name: str) -> PortfolioOut:
    # Made by the normal hasher from a secret that is dropped at once: a well-formed hash that
    # no password matches. (The login refuses the role anyway: this is the second lock.)
    unusable = await run_in_threadpool(resources.passwords.hash, secrets.token_urlsafe(32))
    settings = resources.settings
    return PortfolioOut.model_validate(await resources.db.run_retrying(
        create_portfolio, owner_id, name, unusable,
        max_per_user=settings.max_portfolios_per_user, initial_cash=settings.initial_cash))


async def show(resources: Resources, owner_id: int, portfolio_id: int) -> PortfolioDetailOut:
    portfolio = await resources.db.read(live_portfolio, owner_id, portfolio_id)
    return PortfolioDetailOut(**PortfolioOut.model_validate(portfolio).model_dump(),
                              account=await account_summary(resources, portfolio.account_id))


async def rename(resources: Resources, owner_id: int, portfolio_id: int,
                 name: str) -> PortfolioOut:
    return PortfolioOut.model_validate(await resources.db.run_retrying(
        rename_portfolio, owner_id, portfolio_id, name))


async def delete(resources: Resources, owner_id: int, portfolio_id: int) -> None:
    await resources.db.run_retrying(delete_portfolio, owner_id, portfolio_id, resources.clock())
