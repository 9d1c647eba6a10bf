"""The SQL schema as ORM models. Alembic migrations (migrations/) create it; a test checks that
`alembic upgrade head` leaves no difference between the two."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
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


class OrderStatus(StrEnum):
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


# Orders in these states hold cash or shares and may still fill.
LIVE_ORDER_STATUSES = (OrderStatus.OPEN.value, OrderStatus.PARTIALLY_FILLED.value)


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
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    client_order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code: Mapped[str] = mapped_column(String(16))
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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now,
                                                 onupdate=utc_now)

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.filled_quantity

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_ORDER_STATUSES


class Fill(Base):
    """One execution of an order, with what priced it: the tick's stream entry id (`tick_id`;
    `quote:{seq}` for a market order priced by the latest quote), its seq and its trade time."""

    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("commission >= 0 AND tax >= 0", name="costs_not_negative"),
        # One tick fills an order at most once, however often the worker sees the tick.
        UniqueConstraint("order_id", "tick_id", name="uq_fills_order_id_tick_id"),
        Index("ix_fills_tick_id", "tick_id"),
        Index("ix_fills_user_id_code", "user_id", "code"),
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
    tax: Mapped[int] = mapped_column(BigInteger)
    tick_id: Mapped[str] = mapped_column(String(32))
    tick_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tick_ts: Mapped[str | None] = mapped_column(String(40), nullable=True)  # as upstream sent
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Position(Base):
    """Shares of one instrument held by one user. `cost_basis` is the book cost of the shares
    held (fill values plus buy commissions), so `equity - net deposits = realized + unrealized
    P&L` exactly; `held_quantity` is reserved by live sell orders. The row stays at zero
    quantity after a position is closed, keeping its realized P&L."""

    __tablename__ = "positions"
    __table_args__ = (
        CheckConstraint("quantity >= 0", name="quantity_not_negative"),
        CheckConstraint("held_quantity >= 0 AND held_quantity <= quantity",
                        name="held_within_quantity"),
        CheckConstraint("cost_basis >= 0", name="cost_basis_not_negative"),
    )

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), primary_key=True,
                                         autoincrement=False)
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    held_quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_basis: Mapped[int] = mapped_column(BigInteger, default=0)
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
    copied at preparation. `payment_id` is ours (PortOne's paymentId). Changed only under a row
    lock by `api.payments.sync`."""

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


class WebhookEvent(Base):
    """A PortOne webhook already handled, by its `webhook-id`: kept forever, since PortOne
    retries a delivery for hours and a duplicate must never act twice."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(WEBHOOK_ID_MAX_LENGTH), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[str | None] = mapped_column(String(PAYMENT_ID_MAX_LENGTH),
                                                   nullable=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
