"""The SQL schema as ORM models. Alembic migrations (migrations/) create it; a test checks that
`alembic upgrade head` leaves no difference between the two."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so that migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on MySQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (MySQL DATETIME has no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utc_now() -> datetime:
    """Now, in whole seconds: what a MySQL DATETIME column keeps, so that an answer built from
    a row just written shows the same time as a later read of it."""
    return datetime.now(UTC).replace(microsecond=0)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"
    # The account of an extra portfolio (api.portfolios): a users row that holds money and
    # orders but is nobody's login (an unusable password, refused at login by role).
    PORTFOLIO = "portfolio"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.USER.value)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    # Premium status lasts until this instant (bought with a PREMIUM product); null: never had it.
    premium_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class RefreshTokenFamily(Base):
    """The refresh tokens descended from one login (api.auth.refresh_tokens): only the newest,
    `generation`, is usable; presenting an older one revokes the family. Session state, not
    history: deleting the user deletes its families."""

    __tablename__ = "refresh_token_families"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random; the `fam` claim
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)  # the `gen` claim it accepts
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    refreshed_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)


class Subscription(Base):
    """A market-data topic that should be subscribed upstream: the source of truth that the
    Redis desired set mirrors."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(191), unique=True)  # 191: utf8mb4 index limit
    code: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    created_by: Mapped[int | None] = mapped_column(BigId, nullable=True)


class LedgerType(StrEnum):
    """Why cash moved. Credits are positive amounts, debits negative."""

    DEPOSIT = "DEPOSIT"
    WITHDRAW = "WITHDRAW"
    BUY = "BUY"
    SELL = "SELL"
    FEE = "FEE"
    TAX = "TAX"
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"
    # A portfolio reset's move back to the initial cash (api.portfolios.reset).
    RESET = "RESET"


class Account(Base):
    """A user's cash, in whole KRW. `cash` is the total; `held_cash` is the part of it reserved
    for open orders, so what can be spent or withdrawn is `cash - held_cash`. Only
    `api.ledger.service.post` changes `cash`, always together with one ledger row."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("cash >= 0", name="cash_not_negative"),
        CheckConstraint("held_cash >= 0", name="held_cash_not_negative"),
        CheckConstraint("held_cash <= cash", name="held_cash_within_cash"),
        CheckConstraint("clawback_due >= 0", name="clawback_due_not_negative"),
    )

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), primary_key=True,
                                         autoincrement=False)
    cash: Mapped[int] = mapped_column(BigInteger)
    held_cash: Mapped[int] = mapped_column(BigInteger, default=0)
    # Virtual cash still owed after a refunded payment's clawback found too little available
    # cash; collected from later credits (docs/PAYMENTS.md, "Refunds").
    clawback_due: Mapped[int] = mapped_column(BigInteger, default=0)
    # Running totals of the FEE and TAX rows (as positive amounts), kept by `post` so that the
    # account summary does not sum a user's whole history on every read.
    fees_paid: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    taxes_paid: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now,
                                                 onupdate=utc_now)

    @property
    def available_cash(self) -> int:
        return self.cash - self.held_cash


class LedgerEntry(Base):
    """One append-only change to an account's cash: never updated, never deleted. The account's
    cash always equals the sum of its rows' amounts."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("balance_after = balance_before + amount", name="balance_adds_up"),
        CheckConstraint("balance_after >= 0", name="balance_not_negative"),
        # A credit or debit tied to an outside event (an order, a payment) happens once.
        UniqueConstraint("type", "reference", name="uq_ledger_entries_type_reference"),
        Index("ix_ledger_entries_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_before: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TimeInForce(StrEnum):
    DAY = "DAY"  # rests until the session close of the day it was accepted
    GTC = "GTC"  # rests until filled or cancelled
    IOC = "IOC"  # fills what it can at once; the rest is cancelled
    FOK = "FOK"  # fills completely at once, or not at all


# The `reason` of an order a portfolio reset placed to close a position (api.portfolios.reset):
# not the user's order.
RESET_CLOSING_REASON = "reset_close"


class OrderStatus(StrEnum):
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    # A reservation order (예약주문) placed while the market was closed: it holds cash or shares
    # like a resting order, and the fills worker activates it (OPEN) at its day's opening
    # auction; until then no tick fills it (it has no `rests_after`).
    RESERVED = "RESERVED"


# Orders in these states are in the market: they hold cash or shares and may fill.
ACTIVE_ORDER_STATUSES = (OrderStatus.OPEN.value, OrderStatus.PARTIALLY_FILLED.value)
# Orders in these states hold cash or shares and can be cancelled (the money invariants count
# their holds): the active ones and those reserved for the next trading day.
LIVE_ORDER_STATUSES = (*ACTIVE_ORDER_STATUSES, OrderStatus.RESERVED.value)


class Order(Base):
    """A virtual order. What it holds while live: a buy, `held_cash` (always what its unfilled
    quantity reserves, api.market.rules.Costs.buy_reservation); a sell, its unfilled quantity
    of shares (counted in `Position.held_quantity`). Rejected orders are never stored."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("filled_quantity >= 0 AND filled_quantity <= quantity",
                        name="filled_within_quantity"),
        CheckConstraint("filled_value >= 0", name="filled_value_not_negative"),
        CheckConstraint("held_cash >= 0", name="held_cash_not_negative"),
        CheckConstraint("price IS NULL OR price > 0", name="price_positive"),
        UniqueConstraint("user_id", "client_order_id", name="uq_orders_user_id_client_order_id"),
        Index("ix_orders_user_id_id", "user_id", "id"),
        # The fills worker's questions: live limit orders of a code; live orders past expiry.
        Index("ix_orders_status_code", "status", "code"),
        Index("ix_orders_status_expires_at", "status", "expires_at"),
        Index("ix_orders_status_activates_at", "status", "activates_at"),  # reservations
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    client_order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code: Mapped[str] = mapped_column(String(16))
    # The instrument's market and kind when the order was placed: its fills' taxes follow them.
    market: Mapped[str] = mapped_column(String(8), default="KOSPI")
    security_kind: Mapped[str] = mapped_column(String(16), default="STOCK")
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(8))
    time_in_force: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # limit price
    status: Mapped[str] = mapped_column(String(20))
    # Why it ended, when it ended other than by filling (user, ioc_remainder, session_close...).
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    filled_quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    filled_value: Mapped[int] = mapped_column(BigInteger, default=0)  # sum of fill values
    held_cash: Mapped[int] = mapped_column(BigInteger, default=0)
    # A resting order is filled by ticks after this stream entry id (its acceptance), and the
    # fills worker has examined it up to `checked_upto` (api.fills.worker).
    rests_after: Mapped[str | None] = mapped_column(String(32), nullable=True)
    checked_upto: Mapped[str | None] = mapped_column(String(32), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # A reservation order's activation: its trading day's opening auction (null otherwise).
    activates_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The market session it was accepted in (relayer.market_calendar.Session): CLOSED for a
    # reservation order. Named apart from the column, which the API calls `session`, so that
    # it is never mistaken for a database session.
    market_session: Mapped[str] = mapped_column("session", String(16), default="CONTINUOUS")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now,
                                                 onupdate=utc_now)

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.filled_quantity

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_ORDER_STATUSES


class FillRule(StrEnum):
    """Which rule set a fill's price (docs/TRADING.md, "How each order executes")."""

    MARKET_ORDER_LAST_TRADE = "market_order_last_trade"  # a market order: the last trade
    AGGRESSOR_LAST_TRADE = "aggressor_last_trade"  # a marketable limit order: the last trade
    RESTING_LIMIT = "resting_limit"  # a resting limit order reached by a later trade: its limit
    # An order filled by a call auction's single price (opening or closing): that price.
    AUCTION_PRICE = "auction_price"
    # A portfolio reset closed the position at its valuation price, at no cost.
    PORTFOLIO_RESET = "portfolio_reset"


class Fill(Base):
    """One execution of an order, with what priced it: the print (`tick_id`, its stream entry
    id; `quote:{seq}` when the quote that priced it did not carry one), its seq and trade time,
    and the rule that set the price (`FillRule`)."""

    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("commission >= 0 AND tax >= 0", name="costs_not_negative"),
        # One tick fills an order at most once, however often the worker sees the tick.
        UniqueConstraint("order_id", "tick_id", name="uq_fills_order_id_tick_id"),
        Index("ix_fills_tick_id", "tick_id"),
        Index("ix_fills_user_id_code", "user_id", "code"),
        Index("ix_fills_user_id_id", "user_id", "id"),  # a user's fills, newest first
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    code: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[int] = mapped_column(BigInteger)  # quantity * price
    commission: Mapped[int] = mapped_column(BigInteger)
    tax: Mapped[int] = mapped_column(BigInteger)  # the sum of the two taxes below
    securities_transaction_tax: Mapped[int] = mapped_column(BigInteger, default=0)  # 증권거래세
    rural_special_tax: Mapped[int] = mapped_column(BigInteger, default=0)  # 농어촌특별세
    tick_id: Mapped[str] = mapped_column(String(32))
    tick_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tick_ts: Mapped[str | None] = mapped_column(String(40), nullable=True)  # as upstream sent
    rule: Mapped[str] = mapped_column(String(32))  # a FillRule
    # A sale's part of its position's book cost, and its realized P&L (value - commission -
    # tax - cost_basis_sold), as api.orders.execution moved them; NULL on buys.
    cost_basis_sold: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    realized_pnl: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class TradePrint(Base):
    """How much of one trade print's volume limit orders have taken, per side: the row every
    transaction that fills a limit order from the print locks (inserted by the first), so that
    the print never gives one side more than its volume, whichever API worker or fills worker
    fills (docs/TRADING.md, "One print's volume"). `print_id` is the print's `tick_id`.
    `price` is NULL on rows made by migration 0009 from earlier fills, whose print was not
    kept (their `volume` is what they had given: such a print gives nothing more)."""

    __tablename__ = "trade_prints"
    __table_args__ = (
        CheckConstraint("consumed >= 0 AND consumed <= volume", name="consumed_within_volume"),
        Index("ix_trade_prints_created_at", "created_at"),  # the fills worker's purge
    )

    print_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    side: Mapped[str] = mapped_column(String(4), primary_key=True)
    code: Mapped[str] = mapped_column(String(16))
    price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    volume: Mapped[int] = mapped_column(BigInteger)
    consumed: Mapped[int] = mapped_column(BigInteger)
    # When the first fill took from it: a row is purged once its print has left the stream
    # (api.orders.prints.purge_prints).
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Position(Base):
    """Shares of one instrument held by one user. `cost_basis` is the book cost of the shares
    held (fill values plus buy commissions; `purchase_value` the same without them), so
    `equity - net deposits = realized + unrealized P&L` exactly; `held_quantity` is reserved by
    live sell orders. The row stays at zero quantity after a position is closed, keeping its
    realized P&L."""

    __tablename__ = "positions"
    __table_args__ = (
        CheckConstraint("quantity >= 0", name="quantity_not_negative"),
        CheckConstraint("held_quantity >= 0 AND held_quantity <= quantity",
                        name="held_within_quantity"),
        CheckConstraint("cost_basis >= 0", name="cost_basis_not_negative"),
        CheckConstraint("purchase_value >= 0 AND purchase_value <= cost_basis",
                        name="purchase_value_within_cost_basis"),
    )

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), primary_key=True,
                                         autoincrement=False)
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    held_quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_basis: Mapped[int] = mapped_column(BigInteger, default=0)
    # What the shares held were bought for, without commissions: 매입평균가 is this over
    # quantity. Reduced in proportion on a sale, like cost_basis.
    purchase_value: Mapped[int] = mapped_column(BigInteger, default=0)
    realized_pnl: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now,
                                                 onupdate=utc_now)

    @property
    def available_quantity(self) -> int:
        return self.quantity - self.held_quantity


class IdempotencyKey(Base):
    """The answer given to a POST that carried an `Idempotency-Key` header, so that the same
    key with the same request gets the same answer instead of a second effect."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_id_key"),
        Index("ix_idempotency_keys_created_at", "created_at"),  # the purge's question
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of method, path and body
    response: Mapped[str] = mapped_column(Text)  # the JSON answer
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Watchlist(Base):
    """A user's named list of instruments to follow. Names are unique per user."""

    __tablename__ = "watchlists"
    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uq_watchlists_user_id_name"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class WatchlistItem(Base):
    """One instrument (bus form, `A005930`) in a watchlist, at most once; deleted with it."""

    __tablename__ = "watchlist_items"
    __table_args__ = (
        UniqueConstraint("watchlist_id", "code", name="uq_watchlist_items_watchlist_id_code"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    watchlist_id: Mapped[int] = mapped_column(BigId, ForeignKey("watchlists.id",
                                                                ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(16))
    added_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class PaymentStatus(StrEnum):
    """Our record of a payment. PREPARED until PortOne reports an outcome; CANCELLED and
    MISMATCH are final. PAID and the cancelled states imply the product was granted, except a
    CANCELLED payment never seen paid (nothing granted, nothing to take back)."""

    PREPARED = "PREPARED"
    PAID = "PAID"
    FAILED = "FAILED"
    PARTIAL_CANCELLED = "PARTIAL_CANCELLED"
    CANCELLED = "CANCELLED"
    MISMATCH = "MISMATCH"  # PortOne's amount, currency or order name differ: nothing granted


# Lengths of the ids PortOne's webhooks name, checked before anything is stored
# (api.payments.portone): a longer id cannot be one of ours, and MariaDB refuses to store it.
PAYMENT_ID_MAX_LENGTH = 64
WEBHOOK_ID_MAX_LENGTH = 128


class Payment(Base):
    """A real-money payment through PortOne for one catalog product, with the product's terms
    copied at preparation. `payment_id` is ours (PortOne's paymentId). `user_id` is the payer
    (whose payments list it, whose premium it buys); `account_id` the account its virtual cash
    credits and refunds take back from: the portfolio chosen at prepare (migration 0016).
    Changed only under a row lock by `api.payments.sync`."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("cancelled_amount >= 0 AND cancelled_amount <= amount",
                        name="cancelled_within_amount"),
        CheckConstraint("credit >= 0 AND clawed_back >= 0 AND clawed_back <= credit",
                        name="clawed_back_within_credit"),
        CheckConstraint("premium_days >= 0 AND premium_revoked_s >= 0",
                        name="premium_not_negative"),
        Index("ix_payments_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(String(PAYMENT_ID_MAX_LENGTH), unique=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    product_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    order_name: Mapped[str] = mapped_column(String(128))
    amount: Mapped[int] = mapped_column(BigInteger)  # real money, in `currency`
    currency: Mapped[str] = mapped_column(String(3))
    credit: Mapped[int] = mapped_column(BigInteger, default=0)  # virtual KRW (CASH)
    premium_days: Mapped[int] = mapped_column(Integer, default=0)  # (PREMIUM)
    status: Mapped[str] = mapped_column(String(24), default=PaymentStatus.PREPARED.value)
    portone_status: Mapped[str | None] = mapped_column(String(32), nullable=True)  # last seen
    # Refunds: the real money PortOne reports cancelled, and what was taken back for it.
    cancelled_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)  # virtual KRW, owed or not
    premium_revoked_s: Mapped[int] = mapped_column(BigInteger, default=0)
    mismatch: Mapped[str | None] = mapped_column(String(255), nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)  # granted
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now,
                                                 onupdate=utc_now)

    @property
    def granted(self) -> bool:
        return self.paid_at is not None


class HandledWebhook(Base):
    """A PortOne webhook already handled, by its `webhook-id`: kept forever, since PortOne
    retries a delivery for hours and a duplicate must never act twice."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(WEBHOOK_ID_MAX_LENGTH), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[str | None] = mapped_column(String(PAYMENT_ID_MAX_LENGTH),
                                                   nullable=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Instrument(Base):
    """One KRX instrument of the master (종목 마스터), loaded by migration 0008 and refreshed by
    `python -m api.instruments import` (api.instruments.importer). Never deleted: an instrument
    that leaves the master becomes DELISTED, since orders and fills name it. Read through the
    per-process catalog (api.instruments.catalog), not per request."""

    __tablename__ = "instruments"
    __table_args__ = (
        CheckConstraint("status IN ('LISTED', 'HALTED', 'DELISTED')", name="status_known"),
        CheckConstraint("market IN ('KOSPI', 'KOSDAQ', 'KONEX')", name="market_known"),
    )

    code: Mapped[str] = mapped_column(String(16), primary_key=True)  # bus form, A005930
    isin: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(64))  # Korean, as in the master
    name_en: Mapped[str | None] = mapped_column(String(128), nullable=True)
    market: Mapped[str] = mapped_column(String(8))  # relayer.krx.Market
    kind: Mapped[str] = mapped_column(String(16))  # relayer.krx.SecurityKind
    status: Mapped[str] = mapped_column(String(8))  # relayer.master.ListingStatus
    base_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # 기준가, KRW
    market_cap: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # 억원; ranking
    initials: Mapped[str] = mapped_column(String(64))  # api.instruments.hangul.initials(name)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class UserEvent(Base):
    """One event of a user's `orders` stream (api.streams.events): an order's change, a fill, a
    cash movement, as the stream sends it. Written in the transaction that makes the change,
    under the user's account lock, so per user the ids (the stream's offsets) increase in
    commit order. Deleted by the fills worker once older than USER_EVENTS_RETENTION_S."""

    __tablename__ = "user_events"
    __table_args__ = (
        Index("ix_user_events_user_id_id", "user_id", "id"),  # a replay from an offset
        Index("ix_user_events_created_at", "created_at"),  # the purge's question
        # SQLite reuses the highest rowid after a delete without AUTOINCREMENT: an offset
        # handed out once would be handed out again, and a client would skip the new event.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))  # api.streams.events.EventType
    event: Mapped[str] = mapped_column(String(32))  # what happened: created, filled, deposit...
    data: Mapped[str] = mapped_column(Text)  # JSON, the `data` of the stream message
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class UserEventWatermark(Base):
    """The highest id of a user's events the purge has deleted: a client resuming from below
    it has missed events and gets `reset` (api.streams.events.is_expired)."""

    __tablename__ = "user_event_watermarks"

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True, autoincrement=False)
    purged_upto: Mapped[int] = mapped_column(BigInteger)


class AccountSnapshot(Base):
    """An account at one trading day's close (api.performance.snapshots), written once by the
    fills worker's snapshot job: the daily points of the performance history. Everything since
    the user's previous snapshot is counted on this one: the ledger rows with ids in
    (previous `ledger_upto`, `ledger_upto`], read in the transaction that valued the account,
    so `equity - base_equity - net_flows` is exactly the P&L between the two
    (docs/api/PERFORMANCE.md). Never updated; (user_id, day) is unique, so a rerun writes
    nothing twice."""

    __tablename__ = "account_snapshots"
    __table_args__ = (
        # The history's question (a user's days in a range) reads this index alone.
        UniqueConstraint("user_id", "day", name="uq_account_snapshots_user_id_day"),
        Index("ix_account_snapshots_day", "day"),  # the job's question: who lacks a day
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)  # the trading day (KST date) whose close this is
    cash: Mapped[int] = mapped_column(BigInteger)
    market_value: Mapped[int] = mapped_column(BigInteger)  # open positions at the quotes
    equity: Mapped[int] = mapped_column(BigInteger)  # cash + market_value
    # The previous snapshot's equity; 0 on a user's first (which counts every flow since the
    # account was opened).
    base_equity: Mapped[int] = mapped_column(BigInteger)
    # DEPOSIT, WITHDRAW, PAYMENT and REFUND rows since the previous snapshot, signed.
    net_flows: Mapped[int] = mapped_column(BigInteger)
    realized_pnl: Mapped[int] = mapped_column(BigInteger)  # cumulative: sum of positions'
    fees: Mapped[int] = mapped_column(BigInteger)  # FEE rows since the previous snapshot
    taxes: Mapped[int] = mapped_column(BigInteger)  # TAX rows since the previous snapshot
    ledger_upto: Mapped[int] = mapped_column(BigInteger)  # the last ledger row counted; 0: none
    # Open positions valued at their book cost for want of a quote.
    unpriced_positions: Mapped[int] = mapped_column(Integer)
    priced_at: Mapped[datetime] = mapped_column(UtcDateTime())  # when it was valued
    # Taken after the next trading day had begun (the worker was down): valued at the holdings
    # and quotes of `priced_at`, not of the close.
    late: Mapped[bool] = mapped_column(Boolean)


class IntradaySnapshot(Base):
    """An account at one sample time of a session (api.performance.intraday): the fills
    worker's intraday job values every live account every INTRADAY_SAMPLE_INTERVAL_S, as the
    daily snapshot does, for today's series of the history (period=1D). `ledger_upto` is the
    account's last ledger row when it was valued (under its lock), so the flows between any
    two points are exact. Never updated; the primary key (user_id, at) is one row per account
    per sample time (a rerun writes nothing twice) and the series' range scan. Purged after
    INTRADAY_RETENTION_DAYS."""

    __tablename__ = "intraday_snapshots"
    __table_args__ = (Index("ix_intraday_snapshots_at", "at"),)  # the purge's question

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True, autoincrement=False)
    # The sample time: the slot (a multiple of the interval) it was taken for, not the moment.
    at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    cash: Mapped[int] = mapped_column(BigInteger)
    market_value: Mapped[int] = mapped_column(BigInteger)  # open positions at the quotes
    equity: Mapped[int] = mapped_column(BigInteger)  # cash + market_value
    ledger_upto: Mapped[int] = mapped_column(BigInteger)  # the last ledger row; 0: none
    # Open positions valued at their book cost for want of a quote.
    unpriced_positions: Mapped[int] = mapped_column(Integer)


class Portfolio(Base):
    """One of a user's portfolios (api.portfolios). Its money, orders and history are those of
    its account, a users row: the owner himself for the default portfolio, a `portfolio`-role
    user for every other one. Deleting one sets `deleted_at` and keeps the account's rows (its
    history); live names are unique per owner (checked under the owner's account lock: a
    deleted portfolio keeps its name, so the database cannot hold that rule)."""

    __tablename__ = "portfolios"
    __table_args__ = (Index("ix_portfolios_owner_id", "owner_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # A user's portfolios go with him (as his refresh tokens do); the money history of their
    # accounts does not cascade (ledger, orders, ... refer to the users rows without it).
    owner_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"),
                                            unique=True)
    name: Mapped[str] = mapped_column(String(64))
    is_default: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class PortfolioReset(Base):
    """One reset of a portfolio (api.portfolios.reset): when, and what its account held just
    before, valued as GET /account values it. The mark the history and the stats show; the
    money itself moved through the account's usual rows (cancelled orders, closing fills at no
    cost, one RESET ledger row)."""

    __tablename__ = "portfolio_resets"
    __table_args__ = (Index("ix_portfolio_resets_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    portfolio_id: Mapped[int] = mapped_column(BigId, ForeignKey("portfolios.id",
                                                                ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    reset_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    # Just before: cash (live orders already cancelled), the positions at their closing prices,
    # and their sum; then the cash the reset set (INITIAL_CASH at the time).
    cash_before: Mapped[int] = mapped_column(BigInteger)
    market_value_before: Mapped[int] = mapped_column(BigInteger)
    equity_before: Mapped[int] = mapped_column(BigInteger)
    cash_after: Mapped[int] = mapped_column(BigInteger)
    orders_cancelled: Mapped[int] = mapped_column(Integer)
    positions_closed: Mapped[int] = mapped_column(Integer)
