"""The application factory: `create_app(settings)` builds a FastAPI app whose resources (SQL
engine, Redis pool) live in its lifespan. Tests build their own app with their own settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api.auth.routes import router as auth_router
from api.auth.service import ensure_admin_account
from api.errors import install_error_handlers
from api.executions.routes import router as executions_router
from api.instruments.catalog import load_instruments
from api.instruments.routes import router as instruments_router
from api.ledger.routes import router as ledger_router
from api.ledger.service import open_missing_accounts
from api.limits import RequestBodyLimit
from api.market.routes import router as market_router
from api.openapi import document_errors
from api.orders.routes import router as orders_router
from api.payments.routes import router as payments_router
from api.performance.routes import router as performance_router
from api.portfolio.routes import router as portfolio_router
from api.portfolios.routes import router as portfolios_router
from api.quotes.routes import router as quotes_router
from api.resources import Resources
from api.settings import ApiSettings
from api.startup import startup_hooks
from api.stats.routes import router as stats_router
from api.stopping import SERVER_STOPPING
from api.streams.fanout import Hub
from api.streams.routes import router as streams_router
from api.subscriptions.restore import keep_desired_set_restored, restore_desired_subscriptions
from api.subscriptions.routes import router as subscriptions_router
from api.system.metrics import MetricsMiddleware
from api.system.routes import router as system_router
from api.watchlists.routes import router as watchlists_router

logger = logging.getLogger(__name__)

# Work to do once the resources exist, in order, in every worker (each one is idempotent).
StartupHook = Callable[[Resources], Awaitable[None]]
STARTUP: tuple[StartupHook, ...] = (ensure_admin_account, open_missing_accounts,
                                     restore_desired_subscriptions, load_instruments)
# Work every worker does in the background for as long as it serves (each one never returns).
BackgroundJob = Callable[[Resources], Coroutine[Any, Any, None]]
BACKGROUND: tuple[BackgroundJob, ...] = (keep_desired_set_restored,)


# How long a worker's shutdown waits for its background work to end once cancelled: a task
# stuck on a dead connection must not keep a stopping worker (or a test's app) alive.
SHUTDOWN_WAIT_S = 5.0


async def _bounded(what: str, *tasks: asyncio.Task[None]) -> None:
    """Wait up to SHUTDOWN_WAIT_S for `tasks`, then go on without them, naming any still
    running (asyncio.wait does not wait for a cancellation to be honoured, as gather does)."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("shutdown: %s: %s failed: %r", what, task.get_name(), error)
    for task in pending:
        task.cancel()
        logger.error("shutdown: %s: %s did not end within %.0f s; left behind", what,
                     task.get_name(), SHUTDOWN_WAIT_S)


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        resources = Resources.open(settings)
        app.state.resources = resources
        stopping = asyncio.Event()  # set by the server as it begins to stop (api.stopping)
        # The worker's one Redis pub/sub connection for every stream client (api.streams).
        hub = app.state.stream_hub = Hub(resources, stopping)
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(hub.run(), name="stream-hub")]
        try:
            # A database outage does not stop the start (api.startup).
            async with startup_hooks(STARTUP, resources):
                background += [asyncio.create_task(job(resources), name=job.__name__)
                               for job in BACKGROUND]
                yield {SERVER_STOPPING: stopping}
        finally:
            for task in background:
                task.cancel()
            await _bounded("background tasks", *background)
            await _bounded("closing the resources", asyncio.create_task(resources.close()))

    docs = settings.serves_api_docs()
    app = FastAPI(
        title="StocKing API",
        version="1.0.0",
        summary="Virtual stock trading on the Korean market",
        lifespan=lifespan,
        # Off in production unless API_DOCS_ENABLED (docs/OPERATIONS.md, "What is exposed").
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    install_error_handlers(app)
    document_errors(app)
    # Added before the metrics middleware, so it runs inside it and its 413s are counted.
    app.add_middleware(RequestBodyLimit, max_body_bytes=settings.max_request_body_bytes)
    app.add_middleware(MetricsMiddleware)
    app.include_router(system_router)
    # The hottest route's router first: FastAPI tries routes in order, a few microseconds each,
    # and after the 50 routes before it the quote read spent ~40% of its time finding itself
    # (docs/BENCHMARKS.md, "API"). Its paths overlap no other router's.
    app.include_router(quotes_router, prefix="/api/v1/trading/realtime")
    app.include_router(auth_router, prefix="/api/v1")
    app.include_router(ledger_router, prefix="/api/v1")
    app.include_router(portfolio_router, prefix="/api/v1")
    app.include_router(portfolios_router, prefix="/api/v1")
    app.include_router(stats_router, prefix="/api/v1")
    app.include_router(performance_router, prefix="/api/v1")
    app.include_router(orders_router, prefix="/api/v1")
    app.include_router(executions_router, prefix="/api/v1")
    app.include_router(watchlists_router, prefix="/api/v1")
    app.include_router(instruments_router, prefix="/api/v1")
    app.include_router(payments_router, prefix="/api/v1")
    app.include_router(market_router, prefix="/api/v1")
    app.include_router(streams_router, prefix="/api/v1")
    app.include_router(subscriptions_router, prefix="/api/v1/admin/websocket/subscriptions")
    return app
