"""Response shapes of the quote routes, for /docs and for the daemon health answer.

The quote routes do not validate their answers through these models (they pass the relayer's
JSON through with two fields added, see api.quotes.service); `tests/api/test_quotes.py` checks
that `QuoteOut` stays in step with the bus `Quote`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field


class QuoteOut(BaseModel):
    """The latest quote of one instrument, as the relayer wrote it, plus its age."""

    code: str = Field(examples=["A005930"])
    name: str | None = Field(description="the instrument's Korean name (null: not in the "
                                         "instruments master)", examples=["삼성전자"])
    market: str | None = Field(description="KOSPI, KOSDAQ or KONEX (null: not in the master)",
                               examples=["KOSPI"])
    price: int = Field(description="last trade price, integer KRW", examples=[71200])
    base: int = Field(description="reference price (previous close), KRW", examples=[70500])
    change: int = Field(description="price - base, KRW", examples=[700])
    change_rate: str = Field(description="percent, decimal string", examples=["0.99"])
    change_type: str = Field(examples=["UP"])
    volume: int = Field(description="shares in this print", examples=[10])
    cum_volume: int = Field(description="shares traded today", examples=[1234567])
    cum_amount: int = Field(description="KRW traded today", examples=[87900000000])
    trade_type: str = Field(examples=["BUY"])
    trading_strength: str | None = Field(examples=["112.30"])
    open: int
    high: int
    low: int
    session: str | None = Field(description="the upstream's session of this print: REGULAR "
                                            "(continuous), OPENING_AUCTION or CLOSING_AUCTION "
                                            "(the auctions' single prices), as sent; null if "
                                            "not sent (KIS). The session in force now is "
                                            "market_session", examples=["REGULAR"])
    exchange: str | None = Field(examples=["KRX"])
    currency: str = Field(examples=["KRW"])
    ts: str = Field(description="trade time upstream, ISO 8601 UTC",
                    examples=["2026-11-20T00:00:01Z"])
    received_at: str = Field(description="when the relayer read the trade, ISO 8601 UTC",
                             examples=["2026-11-20T00:00:01.004Z"])
    seq: int
    tick_id: str | None = Field(None, description="the id of the trade's entry in the tick "
                                                  "stream: the print a fill names",
                                examples=["1764000000000-0"])
    lower_limit: int = Field(description="하한가: the lowest price an order may carry today (from "
                                         "base, on the instrument's grid; docs/TRADING.md)",
                             examples=[49400])
    upper_limit: int = Field(description="상한가: the highest price an order may carry today",
                             examples=[91600])
    age_s: float | None = Field(
        description="seconds since received_at, at the time of the answer (null if unreadable)",
        examples=[0.42],
    )
    market_session: str = Field(
        description="the session in force now by the market calendar: CLOSED, "
                    "OPENING_AUCTION, CONTINUOUS or CLOSING_AUCTION (GET /api/v1/market/clock "
                    "has the rest). CLOSED: show the market as closed (장 마감), not an error",
        examples=["CONTINUOUS"])
    stale: bool = Field(description="the quote missed prints: more than QUOTE_MAX_AGE_S older "
                                    "than the last moment the market printed (now while "
                                    "CONTINUOUS; the previous close while CLOSED or in the "
                                    "opening auction; 15:20 in the closing auction), or of "
                                    "unknown age. False at night for the last close's quote")


class QuotesOut(BaseModel):
    """Several quotes: every requested code is a key of `quotes` (null when there is no quote),
    and the codes without a quote are also listed in `missing`."""

    quotes: dict[str, QuoteOut | None]
    missing: list[str]


class DaemonHealthOut(BaseModel):
    """The relayer's health hash, decoded; `alive` false (and the rest null) when it is absent.

    The fields in `OPERATOR_FIELDS` are for admins: where the relayer runs and what it connects
    to help an operator, and an attacker; other users get them as null."""

    OPERATOR_FIELDS: ClassVar[frozenset[str]] = frozenset({"upstream", "instance", "pid",
                                                            "host"})

    alive: bool = Field(description="the hash exists and was refreshed within "
                                     "RELAYER_HEALTH_MAX_AGE_S")
    state: str | None = Field(None, examples=["connected"],
                              description="connecting, connected, backoff or stopping")
    upstream: str | None = Field(None, description="adapter and URL, never credentials "
                                                   "(admins only)")
    instance: str | None = Field(None, description="the relayer's id (admins only)")
    pid: int | None = Field(None, description="admins only")
    host: str | None = Field(None, description="admins only")
    started_at: str | None = None
    connected_at: str | None = None
    last_tick_at: str | None = None
    last_tick_age_s: float | None = None
    last_write_at: str | None = Field(None, description="when the relayer last wrote ticks "
                                                        "into Redis")
    last_write_age_s: float | None = None
    ticks_total: int | None = Field(None, description="ticks read from the upstream")
    ticks_written_total: int | None = Field(None, description="ticks written into Redis; "
                                                              "stands still while Redis fails")
    malformed_total: int | None = None
    dropped_total: int | None = None
    reconnects: int | None = None
    subscriptions: int | None = Field(None, description="topics subscribed upstream")
    rejected_topics: list[str] = Field(default_factory=list)
    updated_at: str | None = None
    updated_age_s: float | None = None

    def for_users(self) -> DaemonHealthOut:
        """This answer without the operator fields, for a caller who is not an admin."""
        return self.model_copy(update=dict.fromkeys(self.OPERATOR_FIELDS))
