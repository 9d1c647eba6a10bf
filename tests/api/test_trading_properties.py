"""A stateful property test of the money invariants: Hypothesis drives random sequences of
deposits, withdrawals, market and limit orders, fills from ticks, cancels, modifications,
expiries, and payments with whatever PortOne reports of them (paid, failed, refunded in part or
in full, tampered; in any order, repeated, stale answers after fresh ones) through the real
services on the real database (MariaDB when reachable), and after every step the invariants of
tests/support/invariants.py must hold. Refusals are expected
(a sell without shares, a buy without cash); a refusal must change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy.orm import Session

from api.db import Database, make_engine
from api.errors import ApiError
from api.fills import store
from api.fills.matching import candidates
from api.instruments.catalog import InstrumentInfo
from api.ledger import service as ledger
from api.market.rules import Costs, PriceBand, TradingRules
from api.models import OrderType, Payment, Role, Side, TimeInForce, User
from api.orders import checks
from api.orders import store as orders
from api.orders.checks import AcceptedOrder, OrderRequest
from api.orders.execution import Tick
from api.orders.snapshot import MarketSnapshot
from api.payments import service as payments
from api.payments import sync
from api.payments.catalog import Product, ProductKind
from api.payments.portone import RemotePayment
from relayer.krx import Market, SecurityKind
from relayer.market_calendar import AlwaysOpen
from relayer.master import ListingStatus
from tests.support.env import scaled
from tests.support.invariants import check_ledger, check_payments, check_trading
from tests.support.quotes import make_quote

CODE = "A005930"
SAMSUNG = InstrumentInfo(code=CODE, isin="KR7005930003", name="삼성전자", name_en=None,
                         market=Market.KOSPI, kind=SecurityKind.STOCK,
                         status=ListingStatus.LISTED, base_price=None, market_cap=None,
                         initials="ㅅㅅㅈㅈ", updated_at=datetime(2026, 11, 27))
BASE = 70_500
BAND = PriceBand.around(BASE)
RULES = TradingRules(Costs(Decimal("0.00015")), 1_000_000, max_open_orders=10**6)
# Prices on the grid (ticks of 100 at this level), mostly near the last trade so that limit
# orders and trades cross often, sometimes anywhere in today's band.
PRICES = (st.integers(695, 715).map(lambda n: n * 100)
          | st.integers(-(-BAND.lower // 100), BAND.upper // 100).map(lambda n: n * 100))
_emails = count()
# Each example's trade prints get ids of their own (its stream times start 100,000 ms after the
# previous example's): the examples share the database, and a print id met again would find
# its volume already given (trade_prints), so a replayed example could fill differently from
# its first run and draw differently (Hypothesis: FlakyStrategyDefinition, seen in CI).
_stream_starts = count(int(datetime.now(UTC).timestamp() * 1000), 100_000)
STORE = "store-properties"
# Packs of the same order of size as the cash, so that a refund often finds part of it spent.
PRODUCTS = (st.builds(Product, id=st.just("cash"), kind=st.just(ProductKind.CASH),
                      name=st.just("cash pack"), price=st.integers(100, 20_000),
                      credit=st.integers(1, 8_000_000))
            | st.builds(Product, id=st.just("premium"), kind=st.just(ProductKind.PREMIUM),
                        name=st.just("premium"), price=st.integers(100, 20_000),
                        premium_days=st.integers(1, 400)))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    from tests.support.databases import (
        fresh_mysql_database,
        fresh_sqlite_database,
        mysql_unreachable_reason,
    )
    if mysql_unreachable_reason() is None:
        with fresh_mysql_database() as url:
            database = Database(make_engine(url))
            yield database
            database.dispose()
    else:
        with fresh_sqlite_database(tmp_path_factory.mktemp("props")) as url:
            database = Database(make_engine(url))
            yield database
            database.dispose()


def place_order(session: Session, user_id: int, accepted: AcceptedOrder) -> int:
    order, _ = orders.place(session, ledger.take_user_lock(session, user_id), accepted, RULES)
    return order.id


class Trading(RuleBasedStateMachine):
    database: Database

    def __init__(self) -> None:
        super().__init__()
        self.user_id = 0
        self.stream_ms = next(_stream_starts)
        # Its own first print too: an order that trades on arrival takes from the last print's
        # volume, and a "0-0" shared by every example was already given by the earlier ones.
        self.last_id = f"{self.stream_ms}-0"
        self.seq = 0
        self.payments: list[tuple[str, Product]] = []
        self.granted: set[str] = set()
        self.order_ids: list[int] = []

    def snapshot(self, price: int) -> MarketSnapshot:
        return MarketSnapshot(CODE, make_quote(CODE, price=price, base=BASE, seq=self.seq), 0.0,
                              self.last_id, SAMSUNG)

    def attempt(self, fn: object, *args: object, **kwargs: object) -> object:
        try:
            return self.database.call(fn, *args, **kwargs)  # type: ignore[arg-type]
        except ApiError:
            return None  # refused: the transaction rolled back, nothing changed

    @initialize(cash=st.integers(3_000_000, 20_000_000), product=PRODUCTS, paid=st.booleans())
    def open_account(self, cash: int, product: Product, paid: bool) -> None:
        """A user with cash and a first payment (so that the payment rules have one to act
        on from the start), which PortOne reports paid half of the time."""
        def make(session: Session) -> int:
            user = User(email=f"prop{next(_emails)}@example.com", password_hash="x",
                        role=Role.USER.value)
            session.add(user)
            session.flush()
            ledger.open_account(session, user.id, cash)
            return user.id
        self.user_id = self.database.call(make)
        self.prepare_payment(product)
        if paid:
            payment_id, _ = self.payments[-1]
            self.attempt(sync.apply_remote, payment_id, RemotePayment(
                payment_id=payment_id, status="PAID", store_id=STORE, order_name=product.name,
                currency=product.currency, total=product.price, cancelled=0), STORE)
            self.granted.add(payment_id)

    @rule(amount=st.integers(1, 3_000_000))
    def deposit(self, amount: int) -> None:
        self.attempt(ledger.deposit, self.user_id, amount, max_krw=10**9,
                     daily_max_krw=10**12, now=datetime.now(UTC))

    @rule(amount=st.integers(1, 3_000_000))
    def withdraw(self, amount: int) -> None:
        self.attempt(ledger.withdraw, self.user_id, amount, max_krw=10**9)

    def withdraw_everything_available(self) -> None:
        def available(session: Session) -> int:
            return ledger.get_account(session, self.user_id).available_cash
        if (amount := self.database.call(available)) > 0:
            self.attempt(ledger.withdraw, self.user_id, amount, max_krw=10**12)

    @rule(side=st.sampled_from(Side), quantity=st.integers(1, 40), last=PRICES,
          limit=st.none() | PRICES,
          tif=st.sampled_from(TimeInForce), volume=st.integers(1, 50))
    def place(self, side: Side, quantity: int, last: int, limit: int | None,
              tif: TimeInForce, volume: int) -> None:
        self.seq += 1
        snapshot = MarketSnapshot(CODE, make_quote(CODE, price=last, base=BASE, seq=self.seq,
                                                   volume=volume), 0.0, self.last_id,
                                  SAMSUNG)
        request = OrderRequest(CODE, side, OrderType.MARKET if limit is None else
                               OrderType.LIMIT, quantity, limit, tif, None)
        try:
            accepted = checks.accept(request, snapshot, quote_max_age_s=10, max_quantity=10**6,
                                     calendar=AlwaysOpen(),
                                     now=datetime.now(UTC))
        except ApiError:
            return  # refused before any SQL (a market order with a limit price, ...)
        placed = self.attempt(place_order, self.user_id, accepted)
        if placed is not None:
            self.order_ids.append(placed)  # type: ignore[arg-type]

    @rule(price=PRICES, volume=st.integers(1, 30))
    def trade_prints(self, price: int, volume: int) -> None:
        """A tick reaches the resting orders, as the fills worker hands it out."""
        self.stream_ms += 1
        self.seq += 1
        self.last_id = f"{self.stream_ms}-0"
        tick = Tick(self.last_id, CODE, price, volume, self.seq, None)
        # This example's orders only: earlier examples' users share the database.
        resting = [order for order in self.database.call(store.resting_orders, {CODE})
                   if order.user_id == self.user_id]
        for side in (Side.BUY, Side.SELL):
            for order in candidates(tick, resting, side):  # each takes what the print has left
                self.database.call(store.fill_from_tick, order, tick, RULES.costs)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if self.order_ids:
            self.attempt(orders.cancel, self.user_id, data.draw(st.sampled_from(self.order_ids)))

    @rule(data=st.data(), price=st.none() | PRICES, quantity=st.none() | st.integers(1, 60))
    def modify(self, data: st.DataObject, price: int | None, quantity: int | None) -> None:
        if self.order_ids and (price is not None or quantity is not None):
            self.attempt(orders.modify, self.user_id,
                         data.draw(st.sampled_from(self.order_ids)), price=price,
                         quantity=quantity, snapshot=self.snapshot(BASE), rules=RULES,
                         quote_max_age_s=10, calendar=AlwaysOpen())

    @rule()
    def session_closes(self) -> None:
        later = datetime.now(UTC) + timedelta(days=2)
        # Every due order, not the worker's batch of 200: earlier examples leave DAY orders
        # due at the same close, and a batch cut among those ties (in no set order) could
        # leave out this example's own, so that a replay ran differently from its first run
        # (Hypothesis: FlakyStrategyDefinition, seen when the machine was busy).
        everything = 10**9
        for order_id, user_id, _ in self.database.call(store.due_for_expiry, later,
                                                       everything):
            if user_id == self.user_id:
                self.database.call(orders.expire, order_id, user_id, later)

    @rule(product=PRODUCTS)
    def prepare_payment(self, product: Product) -> None:
        payment = self.database.call(payments.prepare, self.user_id, product)
        self.payments.append((payment.payment_id, product))

    def portone_says(self, data: st.DataObject, status: str, cancelled: int = 0,
                     tampered: bool = False, granted_first: bool = False) -> None:
        """What PortOne says of one payment reaches a sync (a complete or a webhook).
        `granted_first`: about a payment already granted, when there is one (refunds of those
        are what take cash back)."""
        granted = [entry for entry in self.payments if entry[0] in self.granted]
        choices = granted if granted_first and granted else self.payments
        if not choices:
            return
        payment_id, product = data.draw(st.sampled_from(choices))
        remote = RemotePayment(payment_id=payment_id, status=status, store_id=STORE,
                               order_name=product.name, currency=product.currency,
                               total=product.price + (1 if tampered else 0),
                               cancelled=min(cancelled, product.price))
        payment = self.attempt(sync.apply_remote, payment_id, remote, STORE)
        if isinstance(payment, Payment) and payment.granted:
            self.granted.add(payment_id)

    @rule(data=st.data(), tampered=st.integers(0, 9).map(lambda n: n == 0))
    def portone_says_paid(self, data: st.DataObject, tampered: bool) -> None:
        self.portone_says(data, "PAID", tampered=tampered)

    @rule(data=st.data(), status=st.sampled_from(("READY", "PAY_PENDING", "FAILED")))
    def portone_says_not_paid(self, data: st.DataObject, status: str) -> None:
        self.portone_says(data, status)

    @rule(data=st.data(), refunded=st.integers(1, 20_000), full=st.booleans(),
          spent_first=st.booleans())
    def portone_says_refunded(self, data: st.DataObject, refunded: int, full: bool,
                              spent_first: bool) -> None:
        """A refund, partial or full, perhaps once the cash is gone (so that what it takes
        back is owed). Answers about one payment come in any order, so a smaller refund may
        follow a larger one."""
        if spent_first:
            self.withdraw_everything_available()
        if full:
            self.portone_says(data, "CANCELLED", cancelled=10**9, granted_first=True)
        else:
            self.portone_says(data, "PARTIAL_CANCELLED", cancelled=refunded, granted_first=True)

    @invariant()
    def money_adds_up(self) -> None:
        if self.user_id:
            self.database.call(check_ledger, self.user_id)
            self.database.call(check_trading, self.user_id)
            self.database.call(check_payments, self.user_id)


# 40 examples of 40 steps take 40-95 s alone; the suite's 120 s per test was passed under CI's
# load, and a timeout in the middle of an example is then reported as Hypothesis' "flaky".
@pytest.mark.timeout(scaled(600))
def test_money_invariants_hold_in_any_sequence_of_operations(db: Database) -> None:
    Trading.database = db
    run = Trading.TestCase
    run.settings = settings(max_examples=40, stateful_step_count=40, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
    run().runTest()
