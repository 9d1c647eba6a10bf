"""`python -m relayer`: the relayer daemon's entry point.

Builds the settings, logging, Redis clients and the upstream adapter, runs the daemon until
SIGTERM or SIGINT, and exits 0 after a graceful stop (2 for a configuration error).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import httpx
from pydantic import ValidationError
from redis.asyncio import Redis

from relayer.adapters import build_connector
from relayer.daemon import Relayer
from relayer.settings import RelayerSettings

logger = logging.getLogger("relayer")


async def serve(settings: RelayerSettings) -> None:
    timeout = settings.relayer_redis_timeout_s
    redis = Redis.from_url(
        settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    # Pub/sub blocks on reads by design: no read timeout, a health check instead.
    pubsub_redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=timeout, health_check_interval=10
    )
    async with httpx.AsyncClient(timeout=settings.relayer_connect_timeout_s) as http:
        relayer = Relayer(settings, redis, pubsub_redis, build_connector(settings, http))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, relayer.request_stop)
        try:
            await relayer.run()
        finally:
            await redis.aclose()
            await pubsub_redis.aclose()


def main() -> int:
    try:
        settings = RelayerSettings()
    except ValidationError as exc:
        print(f"relayer: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(settings))
    except ValueError as exc:  # adapter configuration (e.g. kis without credentials)
        logger.error("invalid configuration: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
