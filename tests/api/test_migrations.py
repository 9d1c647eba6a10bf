"""`alembic upgrade head` on an empty database leaves no difference from the models, and a
migration that fills new columns from existing rows fills them right."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from api.migrate import alembic_config
from api.models import Base
from tests.support.databases import (
    empty_mysql_database,
    fresh_sqlite_database,
    mysql_unreachable_reason,
)


def drift(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(differences)


def test_sqlite_migrations_match_the_models(tmp_path: Path) -> None:
    with fresh_sqlite_database(tmp_path) as url:
        assert drift(url) == []


def test_mysql_migrations_match_the_models(mysql_database_url: str) -> None:
    assert drift(mysql_database_url) == []


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    from api.migrate import upgrade

    with fresh_sqlite_database(tmp_path) as url:
        upgrade(url, configure_logging=False)  # already at head: nothing to do, no error
        assert drift(url) == []


@contextlib.contextmanager
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database without any table on `backend` (`sqlite` or `mariadb`), for a migration test
    to take step by step; the test is skipped, loudly, when no MariaDB answers."""
    if backend == "mariadb" and (reason := mysql_unreachable_reason()) is not None:
        pytest.skip(f"SKIPPED MySQL-only check: {reason}")
    with (empty_mysql_database() if backend == "mariadb"
          else contextlib.nullcontext(f"sqlite:///{tmp_path / 'old.db'}")) as url:
        yield url


def _ledger_before_0007(url: str) -> None:
    """A user who has paid 21 + 21 in commissions and 280 in taxes, written at revision 0006."""
    command.upgrade(alembic_config(url, configure_logging=False), "0006")
    engine = create_engine(url)
    rows = [("DEPOSIT", 1_000_000), ("BUY", -140_000), ("FEE", -21), ("SELL", 140_000),
            ("FEE", -21), ("TAX", -280)]
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO users (id, email, password_hash, role, created_at) "
            "VALUES (1, 'old@example.com', 'x', 'USER', CURRENT_TIMESTAMP)"))
        balance = 0
        for number, (kind, amount) in enumerate(rows):
            connection.execute(text(
                "INSERT INTO ledger_entries (user_id, type, amount, reference, balance_before, "
                "balance_after, created_at) VALUES (1, :kind, :amount, :reference, :before, "
                ":after, CURRENT_TIMESTAMP)"),
                {"kind": kind, "amount": amount, "reference": f"r{number}", "before": balance,
                 "after": balance + amount})
            balance += amount
        connection.execute(text(
            "INSERT INTO accounts (user_id, cash, held_cash, clawback_due, created_at, "
            "updated_at) VALUES (1, :cash, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"cash": balance})
    engine.dispose()


def _costs_paid(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    with engine.connect() as connection:
        fees, taxes = connection.execute(text(
            "SELECT fees_paid, taxes_paid FROM accounts WHERE user_id = 1")).one()
    engine.dispose()
    return int(fees), int(taxes)


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_0007_fills_the_costs_paid_from_the_ledger(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        _ledger_before_0007(url)
        command.upgrade(alembic_config(url, configure_logging=False), "head")
        assert _costs_paid(url) == (42, 280)
        assert drift(url) == []


def _trades_before_0008(url: str) -> None:
    """At revision 0007: a user who bought 10 + 5 of 삼성전자 (commission 1 on the first) and
    sold 3 (tax 9), and placed orders on an ETF, a KOSDAQ stock and a code the master lacks."""
    command.upgrade(alembic_config(url, configure_logging=False), "0007")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO users (id, email, password_hash, role, created_at) "
            "VALUES (1, 'old@example.com', 'x', 'USER', CURRENT_TIMESTAMP)"))
        for order_id, code, side, kind in ((1, "A005930", "BUY", "MARKET"),
                                           (2, "A005930", "SELL", "LIMIT"),
                                           (3, "A069500", "BUY", "MARKET"),
                                           (4, "A035900", "BUY", "MARKET"),
                                           (5, "A999999", "BUY", "MARKET"),
                                           (6, "A005930", "BUY", "LIMIT")):
            connection.execute(text(
                "INSERT INTO orders (id, user_id, code, side, type, time_in_force, quantity, "
                "status, filled_quantity, filled_value, held_cash, created_at, updated_at) "
                "VALUES (:id, 1, :code, :side, :type, 'IOC', 15, 'FILLED', 0, 0, 0, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                {"id": order_id, "code": code, "side": side, "type": kind})
        # A market order's fill in its request, a resting limit order's from the stream, and
        # a limit order's in its request.
        for fill_id, order_id, side, quantity, price, commission, tax, tick in (
                (1, 1, "BUY", 10, 1_000, 1, 0, "quote:5"),
                (2, 6, "BUY", 5, 1_300, 0, 0, "1764000000000-0"),
                (3, 2, "SELL", 3, 1_500, 0, 9, "quote:6")):
            connection.execute(text(
                "INSERT INTO fills (id, order_id, user_id, code, side, quantity, price, value, "
                "commission, tax, tick_id, created_at) VALUES (:id, :order_id, 1, 'A005930', "
                ":side, :quantity, :price, :value, :commission, :tax, :tick, "
                "CURRENT_TIMESTAMP)"),
                {"id": fill_id, "order_id": order_id, "side": side, "quantity": quantity,
                 "price": price, "value": quantity * price, "commission": commission,
                 "tax": tax, "tick": tick})
        # Book cost 10,001 + 6,500 = 16,501; the 3 sold carried 16,501 x 3 // 15 = 3,300.
        connection.execute(text(
            "INSERT INTO positions (user_id, code, quantity, held_quantity, cost_basis, "
            "realized_pnl, updated_at) VALUES (1, 'A005930', 12, 0, 13201, 1191, "
            "CURRENT_TIMESTAMP)"))
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_0009_and_0010_fill_from_earlier_trades(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        _trades_before_0008(url)
        command.upgrade(alembic_config(url, configure_logging=False), "head")
        engine = create_engine(url)
        with engine.connect() as connection:
            kinds = {order_id: f"{market}/{kind}" for order_id, market, kind in connection.execute(
                text("SELECT id, market, security_kind FROM orders")).all()}
            taxes = connection.execute(text(
                "SELECT id, tax, securities_transaction_tax, rural_special_tax FROM fills "
                "ORDER BY id")).all()
            purchase_value = connection.execute(text(
                "SELECT purchase_value FROM positions")).scalar_one()
            rules = connection.execute(text("SELECT rule FROM fills ORDER BY id")).scalars().all()
            prints = connection.execute(text(
                "SELECT print_id, side, volume, consumed FROM trade_prints "
                "ORDER BY print_id")).all()
        engine.dispose()
        # From the master; a code it lacks keeps the default, a KOSPI stock.
        assert kinds == {1: "KOSPI/STOCK", 2: "KOSPI/STOCK", 3: "KOSPI/ETF",
                         4: "KOSDAQ/STOCK", 5: "KOSPI/STOCK", 6: "KOSPI/STOCK"}
        # The one tax of a fill before is recorded as securities transaction tax.
        assert [tuple(row) for row in taxes] == [(1, 0, 0, 0), (2, 0, 0, 0), (3, 9, 9, 0)]
        # 10,000 + 6,500 paid for 15; the 3 sold took 16,500 x 3 // 15 = 3,300.
        assert purchase_value == 13_200
        # 0009: each fill's rule from how it was made; the limit orders' prints counted as used
        # up (market orders take nothing from a print).
        assert rules == ["market_order_last_trade", "resting_limit", "aggressor_last_trade"]
        assert [tuple(row) for row in prints] == [("1764000000000-0", "BUY", 5, 5),
                                                  ("quote:6", "SELL", 3, 3)]
        assert drift(url) == []


def _trades_before_0013(url: str) -> None:
    """At revision 0012, fills made by apply_fill's rules and the positions they left:
    user 1 bought A005930 10 at 1,000 (commission 1) and 5 at 1,300 (commission 0), sold 4 at
    1,500 (commission 0, tax 12), then 11 at 900 (commission 1, tax 19: the rest, closing it),
    then bought 2 at 1,000 (commission 0); user 2 bought A000660 3 at 2,000 (commission 0) and
    sold 1 at 1,000 (commission 0, tax 2)."""
    command.upgrade(alembic_config(url, configure_logging=False), "0012")
    engine = create_engine(url)
    with engine.begin() as connection:
        for user_id in (1, 2):
            connection.execute(text(
                "INSERT INTO users (id, email, password_hash, role, created_at) "
                "VALUES (:id, :email, 'x', 'USER', CURRENT_TIMESTAMP)"),
                {"id": user_id, "email": f"old{user_id}@example.com"})
        fills = ((1, 1, "A005930", "BUY", 10, 1_000, 1, 0),
                 (2, 2, "A000660", "BUY", 3, 2_000, 0, 0),
                 (3, 1, "A005930", "BUY", 5, 1_300, 0, 0),
                 (4, 1, "A005930", "SELL", 4, 1_500, 0, 12),
                 (5, 2, "A000660", "SELL", 1, 1_000, 0, 2),
                 (6, 1, "A005930", "SELL", 11, 900, 1, 19),
                 (7, 1, "A005930", "BUY", 2, 1_000, 0, 0))
        for fill_id, user_id, code, side, quantity, price, commission, tax in fills:
            connection.execute(text(
                "INSERT INTO orders (id, user_id, code, side, type, time_in_force, quantity, "
                "status, filled_quantity, filled_value, held_cash, market, security_kind, "
                "session, created_at, updated_at) VALUES (:id, :user_id, :code, :side, "
                "'MARKET', 'IOC', :quantity, 'FILLED', :quantity, :value, 0, 'KOSPI', "
                "'STOCK', 'CONTINUOUS', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                {"id": fill_id, "user_id": user_id, "code": code, "side": side,
                 "quantity": quantity, "value": quantity * price})
            connection.execute(text(
                "INSERT INTO fills (id, order_id, user_id, code, side, quantity, price, value, "
                "commission, tax, securities_transaction_tax, rural_special_tax, tick_id, rule, "
                "created_at) VALUES (:id, :id, :user_id, :code, :side, :quantity, :price, "
                ":value, :commission, :tax, :tax, 0, :tick, 'market_order_last_trade', "
                "CURRENT_TIMESTAMP)"),
                {"id": fill_id, "user_id": user_id, "code": code, "side": side,
                 "quantity": quantity, "price": price, "value": quantity * price,
                 "commission": commission, "tax": tax, "tick": f"quote:{fill_id}"})
        # User 1: book cost 10,001 + 6,500 = 16,501 for 15. The 4 sold carried
        # 16,501 x 4 // 15 = 4,400: P&L 6,000 - 0 - 12 - 4,400 = 1,588. The last 11 carried the
        # rest, 12,101: P&L 9,900 - 1 - 19 - 12,101 = -2,221. Realized 1,588 - 2,221 = -633;
        # then 2 bought for 2,000. User 2: 6,000 for 3; 1 sold carried 2,000: P&L
        # 1,000 - 2 - 2,000 = -1,002.
        for user_id, code, quantity, cost, purchase, pnl in (
                (1, "A005930", 2, 2_000, 2_000, -633), (2, "A000660", 2, 4_000, 4_000, -1_002)):
            connection.execute(text(
                "INSERT INTO positions (user_id, code, quantity, held_quantity, cost_basis, "
                "purchase_value, realized_pnl, updated_at) VALUES (:user_id, :code, :quantity, "
                "0, :cost, :purchase, :pnl, CURRENT_TIMESTAMP)"),
                {"user_id": user_id, "code": code, "quantity": quantity, "cost": cost,
                 "purchase": purchase, "pnl": pnl})
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_0013_gives_each_earlier_sale_its_realized_pnl(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        _trades_before_0013(url)
        command.upgrade(alembic_config(url, configure_logging=False), "0013")
        engine = create_engine(url)
        with engine.connect() as connection:
            sales = connection.execute(text(
                "SELECT id, cost_basis_sold, realized_pnl FROM fills ORDER BY id")).all()
            positions = connection.execute(text(
                "SELECT positions.user_id, positions.code, positions.realized_pnl, "
                "SUM(fills.realized_pnl) FROM positions JOIN fills ON fills.user_id = "
                "positions.user_id AND fills.code = positions.code GROUP BY positions.user_id, "
                "positions.code, positions.realized_pnl ORDER BY positions.user_id")).all()
        engine.dispose()
        # Worked out in _trades_before_0013; buys carry neither.
        assert [tuple(row) for row in sales] == [
            (1, None, None), (2, None, None), (3, None, None), (4, 4_400, 1_588),
            (5, 2_000, -1_002), (6, 12_101, -2_221), (7, None, None)]
        # Each position's realized P&L is the sum of its sales'.
        assert [tuple(row) for row in positions] == [(1, "A005930", -633, -633),
                                                     (2, "A000660", -1_002, -1_002)]
        command.upgrade(alembic_config(url, configure_logging=False), "head")
        assert drift(url) == []


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_0015_gives_every_existing_user_a_default_portfolio(backend: str,
                                                            tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        command.upgrade(alembic_config(url, configure_logging=False), "0014")
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO users (id, email, password_hash, role, created_at) VALUES "
                "(3, 'old@example.com', 'x', 'user', '2026-01-02 03:04:05'), "
                "(7, 'admin@example.com', 'x', 'admin', '2026-02-03 04:05:06')"))
        command.upgrade(alembic_config(url, configure_logging=False), "0015")
        with engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT owner_id, account_id, name, is_default, created_at, deleted_at "
                "FROM portfolios ORDER BY owner_id")).all()
        engine.dispose()
        # One default portfolio each, on the user's own account, as old as the user.
        assert [(o, a, n, bool(d), str(c), x) for o, a, n, d, c, x in rows] == [
            (3, 3, "기본 포트폴리오", True, "2026-01-02 03:04:05", None),
            (7, 7, "기본 포트폴리오", True, "2026-02-03 04:05:06", None)]
        command.upgrade(alembic_config(url, configure_logging=False), "head")
        assert drift(url) == []
