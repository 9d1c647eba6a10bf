"""The relayer's settings: every one an environment variable with a development default.

Field names are the environment variable names in lower case (`RELAYER_UPSTREAM` ->
`relayer_upstream`), so the README's settings table maps one to one; what every process shares
(Redis, the namespace, the topic template) comes from `relayer.shared_settings`. Built once in
`relayer.__main__` and passed down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from relayer.shared_settings import SharedSettings

# What the platform subscribes when it runs for development and RELAYER_SUBSCRIBE is unset
# (scripts/supervise.py, docker-compose.yml): 20 well-known KRX codes. The relayer alone
# subscribes nothing by default.
DEVELOPMENT_SUBSCRIBE = (
    "A005930,A000660,A373220,A207940,A005380,A000270,A068270,A035420,A005490,A051910,"
    "A035720,A006400,A105560,A055550,A012330,A028260,A066570,A003670,A096770,A034730"
)


class UpstreamKind(StrEnum):
    SIM = "sim"
    TOSS = "toss"
    STOMP = "stomp"
    KIS = "kis"


class TossAuth(StrEnum):
    GUEST = "guest"  # fetch a guest key before every connect (what the browser does)
    STATIC = "static"  # only what RELAYER_STOMP_HEADERS carries (e.g. a fixed authorization)


DEFAULT_UPSTREAM_URLS = {
    UpstreamKind.SIM: "ws://127.0.0.1:8765/ws",
    UpstreamKind.TOSS: "wss://realtime-socket.tossinvest.com/ws",
    UpstreamKind.KIS: "ws://ops.koreainvestment.com:21000",
}


class RelayerSettings(SharedSettings):
    relayer_upstream: UpstreamKind = UpstreamKind.SIM
    relayer_upstream_url: str | None = None
    relayer_stomp_login: str | None = None
    relayer_stomp_passcode: SecretStr | None = None
    relayer_stomp_host: str | None = None
    # Extra CONNECT headers (JSON object). Secret: may carry an authorization value.
    relayer_stomp_headers: SecretStr = SecretStr("{}")
    relayer_subscribe: Annotated[list[str], NoDecode] = Field(default_factory=list)
    relayer_ws_origin: str | None = None
    relayer_ws_compression: bool = False

    # Toss credential step (docs/UPSTREAM.md, "Toss Securities").
    relayer_toss_auth: TossAuth = TossAuth.GUEST
    relayer_toss_token_url: str = "https://wts-api.tossinvest.com/api/v1/refresh-utk"

    # Korea Investment (docs/UPSTREAM.md, "Korea Investment").
    kis_app_key: SecretStr | None = None
    kis_app_secret: SecretStr | None = None
    kis_approval_key: SecretStr | None = None  # static key; else fetched with app key/secret
    kis_rest_url: str = "https://openapi.koreainvestment.com:9443"
    kis_tr_id: str = "H0STCNT0"
    kis_custtype: str = "P"

    # STOMP session.
    relayer_heartbeat_ms: int = Field(5000, ge=0)  # offered both ways in CONNECT
    relayer_heartbeat_grace: float = Field(2.0, ge=1.0)  # silence factor before "dead"
    relayer_receipt_timeout_s: float = Field(5.0, gt=0)
    relayer_connect_timeout_s: float = Field(10.0, gt=0)
    relayer_ws_ping_interval_s: float = Field(20.0, gt=0)
    relayer_ws_ping_timeout_s: float = Field(20.0, gt=0)
    relayer_max_frame_bytes: int = Field(1 << 20, gt=0)
    relayer_disconnect_timeout_s: float = Field(1.0, gt=0)

    # Reconnect policy.
    relayer_backoff_initial_s: float = Field(1.0, gt=0)
    relayer_backoff_max_s: float = Field(60.0, gt=0)
    relayer_backoff_factor: float = Field(2.0, ge=1.0)
    relayer_healthy_after_s: float = Field(30.0, ge=0)  # a connection must live this long
    relayer_auth_failure_delay_s: float = Field(300.0, gt=0)  # after HTTP 401/403

    # Subscriptions.
    relayer_max_subscriptions: int = Field(100, gt=0)  # per upstream connection
    relayer_subscribe_batch: int = Field(20, gt=0)
    relayer_subscribe_batch_interval_s: float = Field(0.4, ge=0)
    relayer_reconcile_interval_s: float = Field(15.0, gt=0)
    # How often the desired set's marks are looked at (a Redis that lost the set is noticed).
    relayer_desired_check_interval_s: float = Field(1.0, gt=0)

    # Redis writes.
    quote_ttl_s: int = Field(86400, gt=0)
    tick_stream_maxlen: int = Field(100_000, gt=0)
    relayer_flush_max_batch: int = Field(2000, gt=0)
    relayer_buffer_max_ticks: int = Field(200_000, gt=0)
    relayer_redis_timeout_s: float = Field(2.0, gt=0)

    # Liveness and leadership.
    relayer_health_interval_s: float = Field(1.0, gt=0)
    relayer_health_ttl_s: int = Field(5, gt=0)
    relayer_lease_ttl_ms: int = Field(5000, gt=0)

    @field_validator("relayer_subscribe", mode="before")
    @classmethod
    def _split_subscribe(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _upstream_has_a_url(self) -> Self:
        if not self.relayer_upstream_url and self.relayer_upstream not in DEFAULT_UPSTREAM_URLS:
            raise ValueError(f"RELAYER_UPSTREAM={self.relayer_upstream} needs RELAYER_UPSTREAM_URL")
        return self

    @property
    def upstream_url(self) -> str:
        return self.relayer_upstream_url or DEFAULT_UPSTREAM_URLS[self.relayer_upstream]

    @property
    def upstream_display(self) -> str:
        """The upstream for logs and the health hash: no user info, no query string."""
        parts = urlsplit(self.upstream_url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        url = urlunsplit((parts.scheme, host, parts.path, "", ""))
        return f"{self.relayer_upstream.value} {url}"
