"""Which resting orders a tick fills, and in what order: pure functions over snapshots.

A tick fills a resting limit order when the trade printed at or through its price (buy: trade
<= limit; sell: trade >= limit), only if the tick came after the order started resting (its
stream entry id is above the order's `rests_after`). Orders share the printed volume in price
priority (the best price first: the highest buy, the lowest sell), then time priority (the
order that started resting first; a modification that loses priority starts it again). Buys
and sells are matched separately: each side may take up to the printed volume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from api.models import Side
from api.orders.checks import marketable
from api.orders.execution import Tick
from relayer.bus import stream_id_key


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """What the worker knows of a live resting order from its last read (the fill transaction
    checks everything again on the locked row)."""

    id: int
    user_id: int
    code: str
    side: Side
    price: int | None  # None: a market order waiting for a call auction's price
    rests_after: str
    checked: bool  # False: the worker has not yet looked back for ticks it may have missed
    # Its unfilled quantity when read: how many orders one print's volume may reach (a hint;
    # the fill takes from the locked rows).
    remaining: int = 0

    def priority(self) -> tuple[int, int, tuple[int, int], int]:
        """A market order first (it accepts any price), then the best price, then the
        earlier `rests_after` (when the order last started resting: a modification that
        loses priority moves it), then the id."""
        if self.price is None:
            return (0, 0, stream_id_key(self.rests_after), self.id)
        return (1, -self.price if self.side is Side.BUY else self.price,
                stream_id_key(self.rests_after), self.id)

    def crosses(self, tick: Tick) -> bool:
        """Whether this tick may fill it: a limit order at or through its price; a waiting
        market order only at an auction's price."""
        if self.price is None:
            return tick.is_auction
        return marketable(self.side, self.price, tick.price)


def after(entry_id: str, start: str) -> bool:
    return stream_id_key(entry_id) > stream_id_key(start)


def candidates(tick: Tick, orders: Iterable[RestingOrder], side: Side) -> list[RestingOrder]:
    """The orders of one side this tick may fill, best priority first."""
    return sorted((o for o in orders
                   if o.side is side and o.code == tick.code and after(tick.id, o.rests_after)
                   and o.crosses(tick)),
                  key=RestingOrder.priority)


def stream_id_at(moment: datetime) -> str:
    """The stream position of `moment`: entry ids are Redis's clock in milliseconds, so every
    entry added after it (to the millisecond) is after this id. A reservation order activated
    at its opening auction rests from there, whenever the worker gets to it."""
    return f"{int(moment.timestamp() * 1000)}-0"
