"""Request and response bodies of the payment endpoints."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.models import PaymentStatus
from api.payments.catalog import Product, ProductKind
from api.text import DisplayName


class ProductOut(BaseModel):
    id: str
    kind: ProductKind
    name: str = Field(description="the order name shown in the payment window")
    price: int = Field(description="real money, in whole units of `currency`")
    currency: str
    credit: int = Field(description="virtual KRW credited (CASH products)")
    premium_days: int = Field(description="days of premium added (PREMIUM products)")

    @classmethod
    def of(cls, product: Product) -> ProductOut:
        return cls.model_validate(product.model_dump())


class ProductsOut(BaseModel):
    items: list[ProductOut]

    @classmethod
    def of(cls, products: Iterable[Product]) -> ProductsOut:
        return cls(items=[ProductOut.of(product) for product in products])


class PrepareRequest(BaseModel):
    """Name a catalog product. The older body `{amount, order_name, currency}` is accepted
    when it describes a catalog product exactly; the server never takes a price from a client."""

    model_config = ConfigDict(extra="forbid")

    product_id: str | None = Field(None, max_length=32, examples=["cash-10m"])
    amount: int | None = Field(None, gt=0)
    order_name: DisplayName | None = None
    currency: str | None = Field(None, max_length=3)

    @model_validator(mode="after")
    def _one_way_to_name_a_product(self) -> PrepareRequest:
        seed = (self.amount, self.order_name, self.currency)
        if self.product_id is not None and any(value is not None for value in seed):
            raise ValueError("give either product_id or {amount, order_name, currency}")
        if self.product_id is None and any(value is None for value in seed):
            raise ValueError("product_id is required")
        return self


class PreparedOut(BaseModel):
    """What the browser SDK's `PortOne.requestPayment` needs (camelCase there)."""

    store_id: str
    channel_key: str
    payment_id: str
    order_name: str
    amount: int = Field(description="`totalAmount` for requestPayment")
    currency: str


class PreparedEnvelope(BaseModel):
    data: PreparedOut


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_id: str = Field(min_length=1, max_length=64)


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    payment_id: str
    product_id: str
    kind: ProductKind
    order_name: str
    amount: int
    currency: str
    status: PaymentStatus = Field(
        description="PREPARED until PortOne reports an outcome; PAID granted the product; "
                    "FAILED; PARTIAL_CANCELLED or CANCELLED (refunded, the share taken back); "
                    "MISMATCH (PortOne's payment differs from the one prepared: nothing "
                    "granted)")
    portone_status: str | None = Field(description="PortOne's status when last asked")
    credit: int
    premium_days: int
    cancelled_amount: int = Field(description="real money refunded, per PortOne")
    clawed_back: int = Field(description="virtual KRW taken back for refunds (owed or not)")
    paid_at: datetime | None = Field(description="when the product was granted")
    created_at: datetime
    updated_at: datetime


class PaymentEnvelope(BaseModel):
    data: PaymentOut


class PaymentsPage(BaseModel):
    items: list[PaymentOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at "
                                                "the end")


class WebhookAck(BaseModel):
    status: Literal["processed", "duplicate", "ignored"]
    payment_status: PaymentStatus | None = None
