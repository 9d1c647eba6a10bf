"""Prometheus metrics of the live stream (scraped with the rest at `GET /metrics`,
api.system.metrics). Gauges are `livesum` in multiprocess mode: a scrape sees the sum over the
Gunicorn workers alive now, and a dead worker's clients stop counting.

Labels are bounded: a channel name, a transport, a reason from a fixed list.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLIENTS = Gauge("stocking_stream_clients", "Stream clients connected (WebSocket and SSE)",
                multiprocess_mode="livesum")
SUBSCRIPTIONS = Gauge("stocking_stream_subscriptions",
                      "Client subscriptions: quotes (one per code per client), orders, market",
                      ["channel"], multiprocess_mode="livesum")
REDIS_CHANNELS = Gauge("stocking_stream_redis_channels",
                       "Redis pub/sub channels the workers' hubs subscribe (one per code or user "
                       "any client of the worker watches)", multiprocess_mode="livesum")
MESSAGES = Counter("stocking_stream_messages_total", "Messages sent to stream clients",
                   ["channel"])
QUOTES_SENT = MESSAGES.labels("quotes")  # the hot one, resolved once
TICKS_SUPERSEDED = Counter(
    "stocking_stream_ticks_superseded_total",
    "Ticks a worker's hub skipped because a newer one of the same code had arrived with it "
    "(the hub was behind: every client got the newer one)")
NOTIFICATIONS = Counter(
    "stocking_user_event_notifications_total",
    "Notifications that a user has new events (api.streams.events.EventPublisher, in the API "
    "workers and the fills worker), by outcome: published, or failed (Redis away; the streams "
    "catch up on their periodic re-read of SQL)", ["outcome"])
CLOSED = Counter("stocking_stream_closed_total",
                 "Stream connections the server closed, by reason (slow_client, idle, "
                 "unauthorized)", ["reason"])
GAPS = Counter("stocking_stream_gaps_total",
               "Gaps announced to clients: the relayer reconnected upstream, or the worker's "
               "Redis pub/sub connection came back", ["cause"])
# From the relayer's `received_at` to the update's send: the delivery latency a client sees
# (the target: p99 under 100 ms), the relayer's write and Redis included. Updates
# written directly are observed once per tick and worker, after the write to the last client
# (api.streams.fanout); those sent by a client's sender, once per message.
FANOUT_LATENCY = Histogram(
    "stocking_stream_fanout_latency_seconds",
    "Seconds from the relayer reading a tick (received_at) to its update being sent",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
