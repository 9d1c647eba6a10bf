"""The API's settings (the fills worker's too): every one an environment variable with a
development default.

Field names are the environment variable names in lower case, as in `relayer.settings`; what
every process shares (Redis, the namespace, the topic template) comes from
`relayer.shared_settings`. Built once in the entry point (`api.main`, `api.fills`, or a test)
and passed to `create_app`; nothing else reads the environment. Development defaults are refused
in production (`STOCKING_ENV=production`). A settings object is never changed once built.
"""

from __future__ import annotations

import base64
import binascii
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.auth.passwords import PasswordProfile
from api.auth.signing_key import development_key_wanted, draw_development_key
from api.market.taxes import DEFAULT_SCHEDULE_FILE, TaxSchedule
from api.payments.catalog import DEFAULT_PRODUCTS, Product, check_catalog
from relayer.shared_settings import Environment as Environment  # re-exported: its old home
from relayer.shared_settings import SharedSettings

JWT_MIN_KEY_BYTES = 32

# PortOne development placeholders: PortOne refuses them, they cannot be mistaken for real
# credentials, and production refuses to start with any of them (or with none).
DEV_PORTONE_STORE_ID = "store-development-only"
DEV_PORTONE_CHANNEL_KEY = "channel-key-development-only"
DEV_PORTONE_API_SECRET = "development-only-not-a-portone-api-secret"
# The SDK wants `whsec_` + base64; this is base64 of "development-only-webhook-secret".
DEV_PORTONE_WEBHOOK_SECRET = "whsec_ZGV2ZWxvcG1lbnQtb25seS13ZWJob29rLXNlY3JldA=="
WEBHOOK_SECRET_PREFIX = "whsec_"


class DatabaseSettings(BaseSettings):
    """Just DATABASE_URL, for tools that need nothing else (migrations)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    database_url: str = "sqlite:///./stocking.db"


class ApiSettings(SharedSettings, DatabaseSettings):
    # STOCKING_ENV (`Environment`, importable from here as before) and the market calendar's
    # settings (MARKET_CALENDAR, MARKET_SESSIONS, MARKET_SPECIAL_SESSIONS, MARKET_CLOSE_KST)
    # are shared with the relayer and the simulator: relayer.shared_settings.

    # Auth. In development an unset key becomes a random one, drawn when the settings are built
    # (api.auth.signing_key); production refuses to start without one.
    jwt_secret_key: SecretStr | None = None
    jwt_access_ttl_s: int = Field(900, gt=0)
    jwt_refresh_ttl_s: int = Field(14 * 24 * 3600, gt=0)
    stocking_admin_email: str | None = None
    stocking_admin_password: SecretStr | None = None
    password_min_length: int = Field(10, ge=8)
    # `tests-only` makes hashing nearly free for test suites; production refuses it.
    password_hash_profile: PasswordProfile = PasswordProfile.STANDARD
    # Failed logins per window (api.auth.rate_limit): per (account, address), per address, and
    # per account from all addresses but those it logged in from lately (a high ceiling).
    login_max_attempts_per_account_address: int = Field(5, gt=0)
    login_max_attempts_per_address: int = Field(20, gt=0)
    login_max_attempts_per_account: int = Field(100, gt=0)
    login_window_s: int = Field(300, gt=0)
    # Registrations (successful or not) per client address per window.
    register_max_per_address: int = Field(20, gt=0)
    register_window_s: int = Field(3600, gt=0)
    # Trust X-Forwarded-For for the client address (only behind a proxy that sets it).
    trust_forwarded_for: bool = False

    # Redis: short timeouts, so an outage gives fast 503s instead of hung workers.
    api_redis_timeout_s: float = Field(0.5, gt=0)
    api_redis_max_connections: int = Field(64, gt=0)
    quote_max_age_s: float = Field(10.0, gt=0)
    # Per-worker memo of single-quote reads (api.quotes.cache); 0 turns it off.
    quote_cache_ttl_s: float = Field(0.05, ge=0)
    command_timeout_s: float = Field(10.0, gt=0)
    # How often each worker checks that the desired set holds the SQL subscriptions (one
    # HEXISTS), restoring it at once when Redis has lost it (api.subscriptions.restore).
    subscriptions_restore_interval_s: float = Field(1.0, gt=0)
    relayer_health_max_age_s: float = Field(5.0, gt=0)
    # How old each worker's copy of the instruments master may grow before it is re-read in
    # the background (api.instruments.catalog): an import shows in other processes within it.
    instruments_refresh_s: float = Field(60.0, gt=0)

    # SQL.
    # Per worker, plus as many overflow connections. Sized for the thread pool (40): a new
    # PyMySQL connection costs ~30 ms of CPU (it builds a TLS context), so churn is expensive.
    database_pool_size: int = Field(20, gt=0)
    database_echo: bool = False
    # A transaction that hits a deadlock or a lock wait timeout (MySQL 1213/1205) is run again
    # this many more times, after a short jittered pause (api.db.Database.run_retrying).
    database_deadlock_retries: int = Field(3, ge=0)
    # Database faults (docs/OPERATIONS.md, "Database faults"): a request's SQL work gets
    # `database_deadline_s` in all (the wait for a thread and a connection included), then it
    # answers 503 database_unavailable; a row lock is waited for as long at most. Connecting
    # (and waiting for a pooled connection) gives up after `database_connect_timeout_s`; one
    # read or write on a connection after `database_read_timeout_s`, which ends the worker
    # thread of a request that was already answered 503 (api.db.Database).
    database_deadline_s: float = Field(5.0, gt=0)
    database_connect_timeout_s: float = Field(2.0, gt=0)
    database_read_timeout_s: float = Field(10.0, gt=0)

    # Money, in whole KRW. A new account starts with `initial_cash` (one DEPOSIT ledger row).
    initial_cash: int = Field(10_000_000, ge=0)
    deposit_max_krw: int = Field(100_000_000, gt=0)
    withdraw_max_krw: int = Field(100_000_000, gt=0)
    # Free virtual deposits (POST /account/deposit) per KST day, so that a virtual-cash pack
    # bought with real money keeps its value (docs/PAYMENTS.md, "The catalog").
    deposit_daily_max_krw: int = Field(5_000_000, ge=0)
    # Watchlists: at most this many per user, and this many instruments in each (every item
    # is one more key in the watchlist answer's quote MGET).
    watchlists_max_per_user: int = Field(20, gt=0)
    watchlist_max_items: int = Field(100, gt=0)
    # Portfolios a user may have at once, the default one included (api.portfolios).
    max_portfolios_per_user: int = Field(5, gt=0)

    # Trading (docs/TRADING.md). Rates are exact decimals: 0.00015 is
    # 0.015%. Costs are rounded down to the whole won. An order's first fill pays at least
    # `commission_min_krw` (most Korean online brokers have no minimum: 0).
    commission_rate: Decimal = Field(Decimal("0.00015"), ge=0, lt=1)
    commission_min_krw: int = Field(0, ge=0, le=100_000)
    # The sell taxes by market, kind and date (api/market/sell_taxes.toml is the default).
    sell_tax_schedule_file: Path = DEFAULT_SCHEDULE_FILE
    order_max_quantity: int = Field(1_000_000, gt=0)
    # Live (resting) orders one user may have at once: each is work for the fills worker.
    orders_max_open_per_user: int = Field(100, gt=0)
    # Idempotency-Key answers are kept at least this long, then purged by the fills worker.
    idempotency_key_ttl_s: int = Field(24 * 3600, ge=24 * 3600)
    # A user's stream events (api.streams.events) are kept at least this long, so a client
    # may resume after a disconnect that short; then the fills worker purges them.
    user_events_retention_s: int = Field(24 * 3600, ge=24 * 3600)
    # The fills worker (api.fills): stream entries per read, and how long a read blocks.
    fills_batch_size: int = Field(500, gt=0)
    fills_block_ms: int = Field(1000, gt=0)
    fills_consumer_group: str = "fills"
    # The daily snapshots (api.performance.snapshots, issue 15): accounts valued and written
    # per transaction (their account rows are locked for its length: keep it small).
    snapshot_batch_size: int = Field(200, gt=0, le=5000)
    # The intraday samples (api.performance.intraday): every account valued every this many
    # seconds while a session is on (a divisor of 300, so that every 5-minute point of the
    # series is a sample), and kept this many days.
    intraday_sample_interval_s: int = Field(300, ge=10, le=300)
    intraday_retention_days: int = Field(7, ge=1, le=366)

    # Payments (PortOne V2, docs/PAYMENTS.md). The products a payment can buy, and PortOne's
    # coordinates: the store and channel the browser SDK pays into, the V2 API secret our
    # server asks PortOne with, and the secret PortOne signs webhooks with.
    payment_products: tuple[Product, ...] = DEFAULT_PRODUCTS
    portone_store_id: str = DEV_PORTONE_STORE_ID
    portone_channel_key: str = DEV_PORTONE_CHANNEL_KEY
    portone_v2_api_secret: SecretStr = SecretStr(DEV_PORTONE_API_SECRET)
    portone_webhook_secret: SecretStr = SecretStr(DEV_PORTONE_WEBHOOK_SECRET)
    portone_api_base_url: str = "https://api.portone.io"
    # One question to PortOne (the SDK's own timeout is 60 s): past this, 503 and no credit.
    portone_timeout_s: float = Field(10.0, gt=0)

    # Operations. /ready gives each check (Redis, SQL, relayer health) this long.
    ready_timeout_s: float = Field(1.0, gt=0)
    # Set by gunicorn.conf.py before the workers start: each worker writes its metrics there,
    # and /metrics merges them (prometheus-client's multiprocess mode). Unset: one process.
    prometheus_multiproc_dir: str | None = None
    # Who may read /metrics (api.system.routes): with a token, only `Authorization: Bearer
    # <METRICS_TOKEN>`. Without one, anyone in development; in production nobody (404) unless
    # METRICS_PUBLIC says the network in front already keeps it private.
    metrics_token: SecretStr | None = None
    metrics_public: bool = False
    # /docs, /redoc and /openapi.json. Unset: served in development, not in production.
    api_docs_enabled: bool | None = None

    # Request size limits (api.limits): the body, and the request line plus headers (the
    # latter enforced by the HTTP protocol of api.server, before anything is parsed).
    max_request_body_bytes: int = Field(1024 * 1024, gt=0)
    max_request_header_bytes: int = Field(32 * 1024, ge=1024)

    # The live stream (api.streams, docs/api/STREAMS.md). A WebSocket client without an
    # Authorization header authenticates by its first message within STREAM_AUTH_TIMEOUT_S;
    # when its token expires it has STREAM_AUTH_GRACE_S to send a new one.
    stream_auth_timeout_s: float = Field(5.0, gt=0)
    stream_auth_grace_s: float = Field(30.0, gt=0)
    # Instrument codes one connection may watch at once (each is a snapshot to send and a
    # Redis channel of the worker's).
    stream_max_codes: int = Field(100, gt=0)
    # The server's `ping` every STREAM_HEARTBEAT_S (an SSE comment line); a WebSocket client
    # that sends nothing for STREAM_IDLE_TIMEOUT_S is closed (4408).
    stream_heartbeat_s: float = Field(15.0, gt=0)
    stream_idle_timeout_s: float = Field(60.0, gt=0)
    # A slow client is closed (4429): one send blocked this long, or more than
    # STREAM_MAX_PENDING messages other than quote updates waiting (updates are coalesced to
    # the latest per code, so they never pile up).
    stream_send_timeout_s: float = Field(5.0, gt=0)
    stream_max_pending: int = Field(1000, gt=0)
    # Orders channel: events read from SQL per query (at most 1000); every subscription
    # re-reads SQL every STREAM_ORDERS_RECHECK_S besides each notification (one lost while
    # Redis was away delays an event by that much at most).
    stream_orders_batch: int = Field(200, gt=0, le=1000)
    stream_orders_recheck_s: float = Field(10.0, gt=0)
    # The worker's hub (api.streams.fanout): how often it reads the relayer's health hash
    # (a reconnect upstream is a `gap`) and the market calendar (a `market` message); how long
    # a Redis SUBSCRIBE may take to be confirmed; a PING on its pub/sub connection every
    # STREAM_REDIS_PING_S (three unanswered: reconnect); its longest pause between reconnects.
    stream_relayer_poll_s: float = Field(1.0, gt=0)
    stream_market_poll_s: float = Field(1.0, gt=0)
    stream_subscribe_timeout_s: float = Field(2.0, gt=0)
    # Snapshot reads (one MGET each) a worker's hub runs at once; more wait their turn, so a
    # burst of subscriptions never takes the whole Redis pool (API_REDIS_MAX_CONNECTIONS)
    # that requests need.
    stream_snapshot_concurrency: int = Field(8, gt=0)
    stream_redis_ping_s: float = Field(5.0, gt=0)
    stream_redis_retry_max_s: float = Field(2.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _draw_development_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and development_key_wanted(
                data.get("stocking_env"), data.get("jwt_secret_key") is not None):
            return {**data, "jwt_secret_key": draw_development_key()}
        return data

    @field_validator("payment_products")
    @classmethod
    def _unique_products(cls, products: tuple[Product, ...]) -> tuple[Product, ...]:
        check_catalog(products)
        return products

    @field_validator("intraday_sample_interval_s")
    @classmethod
    def _divides_five_minutes(cls, seconds: int) -> int:
        if 300 % seconds:
            raise ValueError("must divide 300 (5 minutes): 10, 15, 20, 30, 60, 100, 150, 300...")
        return seconds

    @field_validator("sell_tax_schedule_file")
    @classmethod
    def _readable_tax_schedule(cls, path: Path) -> Path:
        try:
            TaxSchedule.load(path)  # refused at startup, not at the first sale
        except OSError as exc:
            raise ValueError(f"cannot read the tax schedule {path}: {exc}") from exc
        return path

    @field_validator("portone_api_base_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")  # the SDK appends "/payments/..." as is

    @model_validator(mode="after")
    def _read_timeout_outlasts_the_deadline(self) -> ApiSettings:
        # A row lock is waited for up to the deadline (api.db.make_engine): a shorter read
        # timeout would cut the connection in the middle of a legitimate lock wait.
        if self.database_read_timeout_s <= math.ceil(self.database_deadline_s):
            raise ValueError("DATABASE_READ_TIMEOUT_S must be longer than DATABASE_DEADLINE_S "
                             "rounded up to the second")
        return self

    @field_validator("portone_webhook_secret")
    @classmethod
    def _webhook_secret_format(cls, secret: SecretStr) -> SecretStr:
        value = secret.get_secret_value()
        try:
            ok = (value.startswith(WEBHOOK_SECRET_PREFIX)
                  and len(base64.b64decode(value[len(WEBHOOK_SECRET_PREFIX):],
                                           validate=True)) > 0)
        except binascii.Error:
            ok = False
        if not ok:
            raise ValueError("PORTONE_WEBHOOK_SECRET is `whsec_` followed by base64, as the "
                             "PortOne console shows it")
        return secret

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> ApiSettings:
        if self.stocking_env is Environment.PRODUCTION:
            placeholders = {
                "PORTONE_STORE_ID": (self.portone_store_id, DEV_PORTONE_STORE_ID),
                "PORTONE_CHANNEL_KEY": (self.portone_channel_key, DEV_PORTONE_CHANNEL_KEY),
                "PORTONE_V2_API_SECRET": (self.portone_v2_api_secret.get_secret_value(),
                                          DEV_PORTONE_API_SECRET),
                "PORTONE_WEBHOOK_SECRET": (self.portone_webhook_secret.get_secret_value(),
                                           DEV_PORTONE_WEBHOOK_SECRET),
            }
            unset = [name for name, (value, placeholder) in placeholders.items()
                     if not value or value == placeholder]
            if unset:
                raise ValueError(f"{', '.join(unset)} must be set in production (the "
                                 "development placeholders are refused)")
            if self.password_hash_profile is not PasswordProfile.STANDARD:
                raise ValueError("PASSWORD_HASH_PROFILE must be `standard` in production (the "
                                 f"`{self.password_hash_profile}` profile is for tests only)")
            key = self.jwt_secret_key.get_secret_value() if self.jwt_secret_key else ""
            if len(key.encode()) < JWT_MIN_KEY_BYTES:
                raise ValueError(
                    f"JWT_SECRET_KEY of at least {JWT_MIN_KEY_BYTES} bytes is required in "
                    "production"
                )
            if self.database_url.startswith("sqlite"):
                raise ValueError("DATABASE_URL must name a real database in production")
        elif self.jwt_secret_key is not None and len(
            self.jwt_secret_key.get_secret_value().encode()
        ) < JWT_MIN_KEY_BYTES:
            raise ValueError(f"JWT_SECRET_KEY must be at least {JWT_MIN_KEY_BYTES} bytes")
        return self

    def signing_key(self) -> str:
        """The JWT key (in development, the drawn one when none is configured)."""
        assert self.jwt_secret_key is not None  # drawn, or refused by the validator
        return self.jwt_secret_key.get_secret_value()

    def serves_api_docs(self) -> bool:
        """/docs, /redoc and /openapi.json: API_DOCS_ENABLED, else development only (the
        document maps every route, admin ones included, for whoever asks)."""
        if self.api_docs_enabled is not None:
            return self.api_docs_enabled
        return self.stocking_env is not Environment.PRODUCTION
