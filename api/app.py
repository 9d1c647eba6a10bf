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
from api.ledger.routes import router as ledger_router
from api.ledger.service import open_missing_accounts
from api.limits import RequestBodyLimit
from api.openapi import document_errors
from api.orders.routes import router as orders_router
from api.payments.routes import router as payments_router
from api.portfolio.routes import router as portfolio_router
from api.quotes.routes import router as quotes_router
from api.resources import Resources
from api.settings import ApiSettings
from api.startup import startup_hooks
from api.subscriptions.restore import keep_desired_set_restored, restore_desired_subscriptions
from api.subscriptions.routes import router as subscriptions_router
from api.system.metrics import MetricsMiddleware
from api.system.routes import router as system_router
from api.watchlists.routes import router as watchlists_router

logger = logging.getLogger(__name__)

# Work to do once the resources exist, in order, in every worker (each one is idempotent).
StartupHook = Callable[[Resources], Awaitable[None]]
STARTUP: tuple[StartupHook, ...] = (ensure_admin_account, open_missing_accounts,
                                     restore_desired_subscriptions)
# Work every worker does in the background for as long as it serves (each one never returns).
BackgroundJob = Callable[[Resources], Coroutine[Any, Any, None]]
BACKGROUND: tuple[BackgroundJob, ...] = (keep_desired_set_restored,)


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = Resources.open(settings)
        app.state.resources = resources
        background: list[asyncio.Task[None]] = []
        try:
            # A database outage does not stop the start (api.startup).
            async with startup_hooks(STARTUP, resources):
                background += [asyncio.create_task(job(resources), name=job.__name__)
                               for job in BACKGROUND]
                yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await resources.close()

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
    app.include_router(auth_router, prefix="/api/v1")
    app.include_router(ledger_router, prefix="/api/v1")
    app.include_router(portfolio_router, prefix="/api/v1")
    app.include_router(orders_router, prefix="/api/v1")
    app.include_router(watchlists_router, prefix="/api/v1")
    app.include_router(payments_router, prefix="/api/v1")
    app.include_router(quotes_router, prefix="/api/v1/trading/realtime")
    app.include_router(subscriptions_router, prefix="/api/v1/admin/websocket/subscriptions")
    return app
