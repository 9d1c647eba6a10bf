"""Response shapes of the admin subscription routes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Outcome(StrEnum):
    """How a command ended, as a word (the HTTP status says the same)."""

    APPLIED = "applied"  # 200: the relayer answered ok
    FAILED = "failed"  # 200: the relayer answered, not ok (rejected upstream, cap, ...)
    PENDING = "pending"  # 202: no answer within COMMAND_TIMEOUT_S; it will be applied
    RELAYER_UNAVAILABLE = "relayer_unavailable"  # 503: no relayer alive; applied when one is


class CommandAnswer(BaseModel):
    """The answer to subscribe, unsubscribe and resync. `success` and `message` are what the
    existing clients read; the SQL row and the desired set are updated whatever the outcome."""

    success: bool = Field(description="the relayer answered, and the change is applied upstream")
    message: str = Field(examples=["subscribed"])
    topic: str | None = Field(examples=["/topic/v1/kr/stock/trade/A000660"])
    command_id: str | None = Field(
        description="id of the command sent to the relayer (null when none was sent)")
    active: int | None = Field(
        None, description="topics subscribed upstream after the command (null without answer)")
    outcome: Outcome


class ResyncAnswer(CommandAnswer):
    restored: int = Field(description="topics from SQL that were missing in the desired set")
    desired_count: int = Field(description="topics in the desired set after the restore")


class SubscriptionOut(BaseModel):
    topic: str
    code: str | None = Field(description="instrument code inside the topic")
    stored: bool = Field(description="an admin subscribed it (a row in SQL); false for topics "
                                     "only seeded by RELAYER_SUBSCRIBE")
    desired: bool = Field(description="in the desired set: the relayer converges to it")
    active: bool = Field(description="subscribed upstream right now")
    sub_id: str | None = Field(None, description="upstream subscription id, when active")
    since: str | None = Field(None, description="when it became active")
    created_at: datetime | None = Field(None, description="when it was stored (SQL)")
    created_by: int | None = None


class RelayerSummary(BaseModel):
    alive: bool
    state: str | None


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]
    desired_count: int
    active_count: int
    relayer: RelayerSummary
