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
    return datetime.now(UTC)


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
    )

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), primary_key=True,
                                         autoincrement=False)
    cash: Mapped[int] = mapped_column(BigInteger)
    held_cash: Mapped[int] = mapped_column(BigInteger, default=0)
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


class IdempotencyKey(Base):
    """The answer given to a POST that carried an `Idempotency-Key` header, so that the same
    key with the same request gets the same answer instead of a second effect."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_id_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of method, path and body
    response: Mapped[str] = mapped_column(Text)  # the JSON answer
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
