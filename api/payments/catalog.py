"""The product catalog: what a payment buys. The server owns prices; a client names a product.

A product is either a virtual-cash pack (a real KRW price -> virtual KRW credited to the cash
account) or the premium plan (a real KRW price -> days added to the user's premium period). The
catalog is the `PAYMENT_PRODUCTS` setting (JSON), with the default below. A payment copies its
product's terms when it is prepared, so a later price change never alters a payment in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.errors import Unprocessable


class ProductKind(StrEnum):
    CASH = "CASH"  # virtual cash, credited to the cash account through the ledger
    PREMIUM = "PREMIUM"  # days of premium status


class Product(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    kind: ProductKind
    # The PortOne order name, shown to the buyer in the payment window.
    name: str = Field(min_length=1, max_length=128)
    price: int = Field(gt=0, description="real money, in whole units of `currency`")
    currency: str = "KRW"
    credit: int = Field(0, ge=0, description="virtual KRW credited (CASH)")
    premium_days: int = Field(0, ge=0, description="days of premium added (PREMIUM)")

    @model_validator(mode="after")
    def _one_benefit(self) -> Product:
        if self.kind is ProductKind.CASH and (self.credit <= 0 or self.premium_days):
            raise ValueError(f"product {self.id!r}: a CASH product credits > 0 and no days")
        if self.kind is ProductKind.PREMIUM and (self.premium_days <= 0 or self.credit):
            raise ValueError(f"product {self.id!r}: a PREMIUM product adds > 0 days, no cash")
        return self


DEFAULT_PRODUCTS: tuple[Product, ...] = (
    Product(id="cash-10m", kind=ProductKind.CASH, name="StocKing 가상머니 1,000만원",
            price=1_000, credit=10_000_000),
    Product(id="cash-50m", kind=ProductKind.CASH, name="StocKing 가상머니 5,000만원",
            price=4_500, credit=50_000_000),
    Product(id="cash-100m", kind=ProductKind.CASH, name="StocKing 가상머니 1억원",
            price=8_000, credit=100_000_000),
    Product(id="premium-30d", kind=ProductKind.PREMIUM, name="StocKing 프리미엄 30일",
            price=9_900, premium_days=30),
)


def check_catalog(products: Sequence[Product]) -> None:
    """Ids are unique, and so are (name, price, currency): the seed's prepare body names a
    product by those three."""
    ids = [product.id for product in products]
    if len(set(ids)) != len(ids):
        raise ValueError("PAYMENT_PRODUCTS: product ids must be unique")
    terms = [(product.name, product.price, product.currency) for product in products]
    if len(set(terms)) != len(terms):
        raise ValueError("PAYMENT_PRODUCTS: two products with the same name, price and currency")


def product_by_id(products: Sequence[Product], product_id: str) -> Product:
    for product in products:
        if product.id == product_id:
            return product
    raise Unprocessable(f"there is no product {product_id!r}", code="unknown_product")


def product_by_terms(products: Sequence[Product], *, order_name: str, amount: int,
                     currency: str) -> Product:
    """The product a seed-style body `{amount, order_name, currency}` describes exactly."""
    for product in products:
        if (product.name, product.price, product.currency) == (order_name, amount, currency):
            return product
    raise Unprocessable("no product has exactly this order name, amount and currency; "
                        "name a product with `product_id` (GET /api/v1/payments/products)",
                        code="unknown_product")
