"""The API's settings: every one an environment variable with a development default.

Field names are the environment variable names in lower case, as in `relayer.settings`. Built
once in the entry point (`api.main`, or a test) and passed to `create_app`; nothing else reads
the environment. Development defaults are refused in production (`STOCKING_ENV=production`).
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
from datetime import time
from decimal import Decimal
from enum import StrEnum

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.auth.passwords import PasswordProfile
from api.payments.catalog import DEFAULT_PRODUCTS, Product, check_catalog

DEFAULT_TOPIC_TEMPLATE = "/topic/v1/kr/stock/trade/{code}"
JWT_MIN_KEY_BYTES = 32

# PortOne development placeholders: PortOne refuses them, they cannot be mistaken for real
# credentials, and production refuses to start with any of them (or with none).
DEV_PORTONE_STORE_ID = "store-development-only"
DEV_PORTONE_CHANNEL_KEY = "channel-key-development-only"
DEV_PORTONE_API_SECRET = "development-only-not-a-portone-api-secret"
# The SDK wants `whsec_` + base64; this is base64 of "development-only-webhook-secret".
DEV_PORTONE_WEBHOOK_SECRET = "whsec_ZGV2ZWxvcG1lbnQtb25seS13ZWJob29rLXNlY3JldA=="
WEBHOOK_SECRET_PREFIX = "whsec_"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class DatabaseSettings(BaseSettings):
    """Just DATABASE_URL, for tools that need nothing else (migrations)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    database_url: str = "sqlite:///./stocking.db"


class ApiSettings(BaseSettings):
    # hide_input_in_errors: a refused start (say, a placeholder in production) must not print
    # the environment it was given, secrets included, into the logs.
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore",
                                      hide_input_in_errors=True)

    stocking_env: Environment = Environment.DEVELOPMENT
    redis_url: str = "redis://127.0.0.1:6379/0"
    stocking_ns: str = "stocking"
    database_url: str = "sqlite:///./stocking.db"
    relayer_topic_template: str = DEFAULT_TOPIC_TEMPLATE

    # Auth. In development an unset key becomes a random one (gunicorn.conf.py draws it once in
    # the master so that every worker shares it); production refuses to start without one.
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

    # Trading (docs/TRADING.md). Rates are exact decimals: 0.00015 is
    # 0.015%. Costs are rounded down to the whole won.
    commission_rate: Decimal = Field(Decimal("0.00015"), ge=0, lt=1)
    sell_tax_rate: Decimal = Field(Decimal("0.0020"), ge=0, lt=1)
    # DAY orders expire at this KST wall-clock time (the KRX regular session closes at 15:30).
    market_close_kst: time = time(15, 30)
    order_max_quantity: int = Field(1_000_000, gt=0)
    # Live (resting) orders one user may have at once: each is work for the fills worker.
    orders_max_open_per_user: int = Field(100, gt=0)
    # Idempotency-Key answers are kept at least this long, then purged by the fills worker.
    idempotency_key_ttl_s: int = Field(24 * 3600, ge=24 * 3600)
    # The fills worker (api.fills): stream entries per read, and how long a read blocks.
    fills_batch_size: int = Field(500, gt=0)
    fills_block_ms: int = Field(1000, gt=0)
    fills_consumer_group: str = "fills"

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

    log_level: str = "INFO"

    @field_validator("payment_products")
    @classmethod
    def _unique_products(cls, products: tuple[Product, ...]) -> tuple[Product, ...]:
        check_catalog(products)
        return products

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
        """The JWT key; in development a per-process random one when none is configured."""
        if self.jwt_secret_key is None:
            self.jwt_secret_key = SecretStr(secrets.token_urlsafe(48))
        return self.jwt_secret_key.get_secret_value()

    def serves_api_docs(self) -> bool:
        """/docs, /redoc and /openapi.json: API_DOCS_ENABLED, else development only (the
        document maps every route, admin ones included, for whoever asks)."""
        if self.api_docs_enabled is not None:
            return self.api_docs_enabled
        return self.stocking_env is not Environment.PRODUCTION
