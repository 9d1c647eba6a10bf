"""The settings every process shares: where Redis is, the bus namespace, the topic template.

`SharedSettings` is the base of each process's own settings (`relayer.settings.RelayerSettings`,
`relayer.sim.__main__.SimSettings`, `api.settings.ApiSettings`, which the fills worker uses too)
and what scripts/supervise.py reads, so that one environment configures every process alike and
a default is written once. Field names are the environment variable names in lower case
(`STOCKING_NS` -> `stocking_ns`), so the README's settings table maps one to one.

It lives in `relayer/` next to `relayer.bus`, whose names and topics these values parametrise,
because nothing in `relayer/` may import from `api/`.
"""

from __future__ import annotations

from datetime import time
from enum import StrEnum
from typing import Annotated, Any

from pydantic import PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from relayer.bus import BusNames, TopicTemplate
from relayer.krx_calendar import (
    DEFAULT_SPECIAL_SESSIONS,
    SessionTimes,
    SpecialSession,
    parse_special_sessions,
)
from relayer.market_calendar import CalendarKind

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TOPIC_TEMPLATE = "/topic/v1/kr/stock/trade/{code}"


class Environment(StrEnum):
    """`STOCKING_ENV`: production refuses development defaults (api.settings) and trades on
    the exchange's calendar unless told otherwise (`MARKET_CALENDAR`)."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SharedSettings(BaseSettings):
    # hide_input_in_errors: a refused start must not print the environment it was given,
    # secrets included, into the logs.
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore",
                                      hide_input_in_errors=True)

    redis_url: str = DEFAULT_REDIS_URL
    stocking_ns: str = "stocking"
    # The upstream's topic for an instrument code: the relayer subscribes it, the simulator
    # serves it, the API expands bare codes with it. Checked here, once, for every process.
    relayer_topic_template: str = DEFAULT_TOPIC_TEMPLATE
    log_level: str = "INFO"
    # Here, not only in the API's settings: the calendar's default depends on it, and the
    # relayer and the simulator must follow the same calendar as the API.
    stocking_env: Environment = Environment.DEVELOPMENT

    # When the market trades (relayer.market_calendar, docs/TRADING.md "Trading days and
    # sessions"). Unset: `krx` in production, `always_open` in development (trading at night).
    market_calendar: CalendarKind | None = None
    # The boundaries of a normal KRX day, KST: opening auction, open, closing auction, close.
    # Strings in the environment (NoDecode: not JSON), parsed and checked once, here.
    market_sessions: Annotated[SessionTimes, NoDecode] = SessionTimes()
    # Days whose hours the library lacks: `YYYY-MM-DD=HH:MM-HH:MM` or `YYYY-MM-DD=closed`.
    market_special_sessions: Annotated[tuple[SpecialSession, ...], NoDecode] = (
        DEFAULT_SPECIAL_SESSIONS)
    # With `always_open`: the day boundary (DAY orders expire then, the day's base is the last
    # trade before it), every calendar day. The KRX regular session closes at 15:30.
    market_close_kst: time = time(15, 30)
    # Whether MARKET_CALENDAR was left to the environment's default (start_services.sh says so).
    _calendar_defaulted: bool = PrivateAttr(default=False)

    @field_validator("relayer_topic_template")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        try:
            TopicTemplate(value)
        except ValueError:
            raise ValueError("RELAYER_TOPIC_TEMPLATE must contain {code} exactly once") from None
        return value

    @field_validator("market_sessions", mode="before")
    @classmethod
    def _parse_sessions(cls, value: Any) -> Any:
        return SessionTimes.parse(value) if isinstance(value, str) else value

    @field_validator("market_special_sessions", mode="before")
    @classmethod
    def _parse_special_sessions(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_special_sessions(value)
        # Given as objects (tests, code): checked for repeated dates the same way.
        return parse_special_sessions(",".join(str(session) for session in value))

    @model_validator(mode="after")
    def _calendar_by_environment(self) -> SharedSettings:
        # A special session must leave continuous trading between its auctions, which have
        # MARKET_SESSIONS' lengths: refused here, at start, not on that day.
        for session in self.market_special_sessions:
            if session.open is not None and session.close is not None:
                try:
                    self.market_sessions.day(session.day, session.open, session.close)
                except ValueError as exc:
                    raise ValueError(f"MARKET_SPECIAL_SESSIONS: {exc} (MARKET_SESSIONS "
                                     f"{self.market_sessions})") from None
        if self.market_calendar is None:
            self._calendar_defaulted = True
            # Resolved once, here, so every process and start_services.sh read the same kind.
            self.market_calendar = (CalendarKind.KRX
                                    if self.stocking_env is Environment.PRODUCTION
                                    else CalendarKind.ALWAYS_OPEN)
        return self

    @property
    def calendar_kind(self) -> CalendarKind:
        """`MARKET_CALENDAR`, its default resolved by the environment."""
        return self.market_calendar or CalendarKind.ALWAYS_OPEN

    @property
    def calendar_defaulted(self) -> bool:
        """MARKET_CALENDAR was not set: the environment chose it."""
        return self._calendar_defaulted

    @property
    def topics(self) -> TopicTemplate:
        return TopicTemplate(self.relayer_topic_template)

    @property
    def names(self) -> BusNames:
        return BusNames(self.stocking_ns)
