"""The simulator on the wire through a trading day, with a test calendar and a clock the test
moves: nothing while closed or in an auction's collection, the auction prints at the open and the
close, continuous prints between, and the next day based on the last close. The ticks' pacing runs
on real time (so many a second); the market's time only moves when the test moves it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from relayer.krx import STOCK
from relayer.market_calendar import AlwaysOpen
from relayer.sim import SimServer
from relayer.sim.market import Instrument
from relayer.stomp import Frame, FrameParser, encode_frame
from tests.support.weekday_calendar import WeekdayCalendar, kst

FACTOR = float(os.environ.get("STOCKING_TEST_TIMEOUT_FACTOR", "1"))
TOPIC = "/topic/v1/kr/stock/trade/{code}"
MONDAY = date(2026, 12, 7)
CODES = ("A000001", "A000002")
INSTRUMENTS = {"A000001": Instrument(70_500, STOCK), "A000002": Instrument(1_995, STOCK)}
# Long enough for the loop to have looked at the clock a few times (it polls every 50 ms).
QUIET_S = 0.4


def at(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return kst(day, time(hh, mm, ss))


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


class Ticks:
    """A subscribed client: the tick bodies it receives, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.parser = FrameParser()
        self.pending: list[Frame] = []

    async def frame(self, timeout: float) -> Frame:
        async with asyncio.timeout(timeout * FACTOR):
            while not self.pending:
                self.pending.extend(self.parser.feed(await self.ws.recv()))
        return self.pending.pop(0)

    async def tick(self, timeout: float = 3.0) -> dict[str, Any]:
        while (frame := await self.frame(timeout)).command != "MESSAGE":
            pass
        body: dict[str, Any] = orjson.loads(frame.body)
        return body

    async def none_within(self, seconds: float) -> None:
        """No tick arrives in `seconds` (heart-beats may)."""
        with pytest.raises(TimeoutError):
            tick = await self.tick(timeout=seconds)
            pytest.fail(f"a tick while nothing should print: {tick}")

    async def drain(self) -> None:
        """Forget what arrived so far (ticks written before the clock moved), once nothing more
        arrives: only while nothing prints."""
        self.pending.clear()
        while True:
            try:
                async with asyncio.timeout(0.05):
                    self.parser.feed(await self.ws.recv())
            except TimeoutError:
                return


async def send(ws: ClientConnection, frame: Frame) -> None:
    await ws.send(encode_frame(frame).decode())


@asynccontextmanager
async def subscribed(sim: SimServer) -> AsyncIterator[Ticks]:
    async with connect(sim.url, subprotocols=[Subprotocol("v12.stomp")], compression=None,
                       ping_interval=None) as ws:
        ticks = Ticks(ws)
        await send(ws, Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0"}))
        assert (await ticks.frame(3)).command == "CONNECTED"
        for n, code in enumerate(CODES):
            await send(ws, Frame("SUBSCRIBE", {"id": f"s{n}", "destination": TOPIC.format(
                code=code), "receipt": f"r{n}"}))
            assert (await ticks.frame(3)).command == "RECEIPT"
        yield ticks


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at(MONDAY - timedelta(days=1), 3))  # Sunday, 03:00 KST


@pytest.fixture
async def ticks(clock: FakeClock) -> AsyncIterator[Ticks]:
    async with SimServer(ticks_per_sec=100, seed=4, instruments=INSTRUMENTS,
                         calendar=WeekdayCalendar(), clock=clock) as sim:
        async with subscribed(sim) as client:
            yield client


async def test_a_trading_day_and_the_next_on_the_wire(clock: FakeClock, ticks: Ticks) -> None:
    # Sunday night, then the opening auction's collection: subscribed, but nothing prints.
    await ticks.none_within(QUIET_S)
    clock.now = at(MONDAY, 8, 45)
    await ticks.none_within(QUIET_S)

    # 09:00: one opening auction print per instrument, at the open, then continuous prints.
    clock.now = at(MONDAY, 9)
    opening = {(tick := await ticks.tick())["code"]: tick for _ in CODES}
    assert set(opening) == set(CODES)
    for code, tick in opening.items():
        base = INSTRUMENTS[code].base_price
        assert base is not None
        assert (tick["session"], tick["dt"], tick["base"]) == (
            "OPENING_AUCTION", "2026-12-07T00:00:00Z", base)
        lower, upper = STOCK.price_limits(base)
        assert STOCK.is_on_grid(tick["close"]) and lower <= tick["close"] <= upper
        assert tick["volume"] >= 1 and tick["cumulativeVolume"] == tick["volume"]
    clock.now = at(MONDAY, 10)
    while (first := await ticks.tick())["dt"] != "2026-12-07T01:00:00Z":
        assert first["session"] == "REGULAR"  # printed before the clock moved
    regular = [first] + [await ticks.tick() for _ in range(9)]
    assert {(t["session"], t["dt"]) for t in regular} == {("REGULAR", "2026-12-07T01:00:00Z")}

    # The closing auction's collection: nothing; then the close prints once per instrument.
    clock.now = at(MONDAY, 15, 25)
    await ticks.drain()
    await ticks.none_within(QUIET_S)
    clock.now = at(MONDAY, 15, 30)
    closing = {(tick := await ticks.tick())["code"]: tick for _ in CODES}
    assert {(t["session"], t["dt"]) for t in closing.values()} == {
        ("CLOSING_AUCTION", "2026-12-07T06:30:00Z")}
    await ticks.none_within(QUIET_S)  # closed for the night

    # Tuesday opens around Monday's close: each base is the last price, its limits with it.
    clock.now = at(MONDAY + timedelta(days=1), 9, 0, 1)
    tuesday = {(tick := await ticks.tick())["code"]: tick for _ in CODES}
    for code, tick in tuesday.items():
        assert tick["session"] == "OPENING_AUCTION"
        assert tick["base"] == closing[code]["close"]
        lower, upper = STOCK.price_limits(tick["base"])
        assert lower <= tick["close"] <= upper


async def test_with_always_open_it_prints_at_night_as_before(clock: FakeClock) -> None:
    async with SimServer(ticks_per_sec=100, seed=4, instruments=INSTRUMENTS,
                         calendar=AlwaysOpen(), clock=clock) as sim:
        async with subscribed(sim) as ticks:
            night = [await ticks.tick() for _ in range(6)]
            assert {(t["session"], t["dt"]) for t in night} == {
                ("REGULAR", "2026-12-05T18:00:00Z")}  # Sunday 03:00 KST
            assert {t["base"] for t in night if t["code"] == "A000001"} == {70_500}
