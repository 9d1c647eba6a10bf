"""`python -m relayer.sim`: run the exchange simulator until SIGINT or SIGTERM.

Settings come from the environment (SIM_HOST, SIM_PORT, SIM_TICKS_PER_SEC, SIM_SEED,
SIM_FRAMES_PER_MESSAGE, SIM_REJECT_TOPICS, SIM_ERROR_RECEIPT_IDS, SIM_MASTER_FILES,
RELAYER_TOPIC_TEMPLATE, MARKET_CALENDAR and the other MARKET_* settings, LOG_LEVEL). The topic
template and the calendar are the shared settings (relayer.shared_settings) on purpose, so one
environment file configures every process alike: the simulator prints while the API's calendar
says the market trades.

The instruments are read from the master files once, and the calendar built once, before the
event loop starts; a file that cannot be read, or a calendar the settings cannot build, is a
configuration error (exit status 2, which the supervisor does not retry).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from relayer.bus import TopicTemplate
from relayer.market_calendar import MarketCalendar, market_calendar
from relayer.master import MasterFormatError, shipped_paths
from relayer.shared_settings import SharedSettings
from relayer.sim.instruments import load_instruments
from relayer.sim.market import Instrument
from relayer.sim.server import SimServer

log = logging.getLogger("relayer.sim")

EXIT_PORT_IN_USE = 2
EXIT_BAD_MASTER = 2
EXIT_BAD_CALENDAR = 2


class SimSettings(SharedSettings):
    sim_host: str = "127.0.0.1"
    sim_port: Annotated[int, Field(ge=0, le=65535)] = 8765
    sim_ticks_per_sec: Annotated[float, Field(ge=0)] = 20.0
    sim_seed: int | None = None
    sim_frames_per_message: Annotated[int, Field(ge=1)] = 1
    # Codes or topics whose SUBSCRIBE is refused with an ERROR (then the connection is closed),
    # to play an upstream that refuses a topic (docs/RELAYER.md, "Rejected topics").
    sim_reject_topics: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sim_error_receipt_ids: bool = True
    # The KRX master files the instruments (base prices, grids, limits) come from, comma
    # separated; empty: none, every code a synthetic stock (docs/RELAYER.md, "The simulator").
    sim_master_files: Annotated[list[Path], NoDecode] = Field(default_factory=shipped_paths)

    @field_validator("sim_reject_topics", "sim_master_files", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("sim_reject_topics")
    @classmethod
    def _expand_reject_topics(cls, items: list[str], info: ValidationInfo) -> list[str]:
        """Bare codes become topics of the template (a typo fails at start, not silently)."""
        template = info.data.get("relayer_topic_template")  # absent: refused, reported already
        if template is None:
            return items
        return [TopicTemplate(template).topic(item) for item in items]


def build_server(settings: SimSettings, instruments: Mapping[str, Instrument],
                 calendar: MarketCalendar | None = None) -> SimServer:
    """The simulator the settings describe, trading `instruments` by `calendar` (default: the
    one MARKET_CALENDAR names) (not started)."""
    sim = SimServer(
        settings.sim_host,
        settings.sim_port,
        ticks_per_sec=settings.sim_ticks_per_sec,
        seed=settings.sim_seed,
        topic_template=settings.relayer_topic_template,
        frames_per_message=settings.sim_frames_per_message,
        instruments=instruments,
        calendar=market_calendar(settings) if calendar is None else calendar,
    )
    sim.reject_topics = set(settings.sim_reject_topics)
    sim.error_receipt_ids = settings.sim_error_receipt_ids
    return sim


async def serve_until_signalled(sim: SimServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        await stop.wait()
        log.info("stopping the exchange simulator")


def main() -> int:
    settings = SimSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        instruments = load_instruments(settings.sim_master_files)
    except (OSError, MasterFormatError) as exc:
        log.error("cannot read the instruments from SIM_MASTER_FILES: %s", exc)
        return EXIT_BAD_MASTER
    try:
        calendar = market_calendar(settings)
    except ValueError as exc:
        log.error("cannot build the market calendar (MARKET_CALENDAR=%s): %s",
                  settings.market_calendar, exc)
        return EXIT_BAD_CALENDAR
    log.info("trading by the %s calendar", calendar.name)
    try:
        asyncio.run(serve_until_signalled(build_server(settings, instruments, calendar)))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        log.error(
            "cannot listen on %s:%d: the port is in use (set SIM_PORT to a free port)",
            settings.sim_host,
            settings.sim_port,
        )
        return EXIT_PORT_IN_USE
    return 0


if __name__ == "__main__":
    sys.exit(main())
