"""Which instruments a request may name: the one place that refuses an order, a watchlist item
or an admin subscription for an instrument the master does not know or does not let trade
(docs/TRADING.md, "Instruments"). Answers from the in-process catalog, no SQL per request.

- Orders need a tradable instrument: listed (not halted or delisted) and of a kind this market
  models (not ELW or rights). Checked inside the order's transaction, after its Idempotency-Key
  (api.orders.checks.accept), so a repeat answers what the first request answered.
- Watchlists and subscriptions need an instrument that exists: a halted stock is still worth
  watching and its quotes still worth relaying, a delisted one is not.
"""

from __future__ import annotations

from collections.abc import Iterable

from api.errors import Unprocessable
from api.instruments.catalog import InstrumentInfo
from api.resources import Resources
from relayer.master import ListingStatus


def require_known(code: str, info: InstrumentInfo | None) -> InstrumentInfo:
    """The instrument, listed or halted; 422 `unknown_instrument` if the master lacks it,
    `instrument_not_tradable` if it was delisted."""
    info = _in_master(code, info)
    if info.status is ListingStatus.DELISTED:
        raise _not_tradable(info, "it has been delisted")
    return info


def require_tradable(code: str, info: InstrumentInfo | None) -> InstrumentInfo:
    """The instrument, if it can be ordered now; 422 `unknown_instrument` or
    `instrument_not_tradable` (delisted, halted, or a kind not modelled)."""
    info = _in_master(code, info)
    if not info.tradable:
        why = {ListingStatus.DELISTED: "it has been delisted",
               ListingStatus.HALTED: "trading in it is halted"}.get(
            info.status, f"{info.kind.value} instruments are not traded here")
        raise _not_tradable(info, why)
    return info


async def known_instruments(resources: Resources, codes: Iterable[str]) -> None:
    """422 unless every code names an instrument that exists (`require_known`)."""
    for code in codes:
        require_known(code, await resources.instruments.get(code))


def _in_master(code: str, info: InstrumentInfo | None) -> InstrumentInfo:
    if info is None:
        raise Unprocessable(
            f"{code} is not a KRX instrument (it is not in the instruments master: search "
            "/api/v1/instruments)", code="unknown_instrument", instrument=code)
    return info


def _not_tradable(info: InstrumentInfo, why: str) -> Unprocessable:
    return Unprocessable(f"{info.code} ({info.name}) cannot be traded: {why}",
                         code="instrument_not_tradable", instrument=info.code,
                         listing_status=info.status.value, security_type=info.kind.value)
