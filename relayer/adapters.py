"""Builds the upstream adapter that RELAYER_UPSTREAM names, from the settings: the one place
where settings become an adapter's options (`StompOptions`, `KisOptions`) and credentials."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from relayer.credentials import (
    ConnectHeaderSource,
    StaticHeaders,
    TossGuestKey,
    static_connect_headers,
)
from relayer.kis_session import KisConnector, KisCredentials, KisOptions
from relayer.settings import RelayerSettings, TossAuth, UpstreamKind
from relayer.stomp_session import StompConnector, StompOptions
from relayer.upstream import Connector

TOSS_ORIGIN = "https://www.tossinvest.com"


def build_connector(settings: RelayerSettings, http: httpx.AsyncClient) -> Connector:
    if settings.relayer_upstream is UpstreamKind.KIS:
        return _kis_connector(settings, http)
    return _stomp_connector(settings, http)


def _kis_connector(settings: RelayerSettings, http: httpx.AsyncClient) -> KisConnector:
    options = KisOptions(
        url=settings.upstream_url,
        topics=settings.topics,
        rest_url=settings.kis_rest_url,
        tr_id=settings.kis_tr_id,
        custtype=settings.kis_custtype,
        ack_timeout_s=settings.relayer_receipt_timeout_s,
        connect_timeout_s=settings.relayer_connect_timeout_s,
        ws_ping_interval_s=settings.relayer_ws_ping_interval_s,
        ws_ping_timeout_s=settings.relayer_ws_ping_timeout_s,
    )
    credentials = KisCredentials(app_key=_secret(settings.kis_app_key),
                                 app_secret=_secret(settings.kis_app_secret),
                                 approval_key=_secret(settings.kis_approval_key))
    return KisConnector(options, credentials, http)


def _stomp_connector(settings: RelayerSettings, http: httpx.AsyncClient) -> StompConnector:
    kind = settings.relayer_upstream
    static = static_connect_headers(settings)
    credentials: ConnectHeaderSource = StaticHeaders(static)
    if kind is UpstreamKind.TOSS and settings.relayer_toss_auth is TossAuth.GUEST:
        credentials = TossGuestKey(http, settings.relayer_toss_token_url, static)
    origin = settings.relayer_ws_origin
    if origin is None and kind is UpstreamKind.TOSS:
        origin = TOSS_ORIGIN
    options = StompOptions(
        url=settings.upstream_url,
        heartbeat_ms=settings.relayer_heartbeat_ms,
        heartbeat_grace=settings.relayer_heartbeat_grace,
        receipt_timeout_s=settings.relayer_receipt_timeout_s,
        connect_timeout_s=settings.relayer_connect_timeout_s,
        disconnect_timeout_s=settings.relayer_disconnect_timeout_s,
        ws_ping_interval_s=settings.relayer_ws_ping_interval_s,
        ws_ping_timeout_s=settings.relayer_ws_ping_timeout_s,
        max_frame_bytes=settings.relayer_max_frame_bytes,
        compression=settings.relayer_ws_compression,
        origin=origin,
        toss_identity=kind in (UpstreamKind.TOSS, UpstreamKind.SIM),
    )
    return StompConnector(options, credentials)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
