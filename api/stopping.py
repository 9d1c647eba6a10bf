"""How the server tells the app that it has begun to stop.

The app's lifespan puts an `asyncio.Event` in the lifespan state under `SERVER_STOPPING`
(api.app); the HTTP protocol of Gunicorn's workers sets it when Uvicorn asks each connection
to shut down (api.server), before Uvicorn waits for the open connections to finish. Endless
responses (the SSE stream, api.streams.sse) end then, instead of holding the worker until
Gunicorn's graceful timeout kills it. A module of its own so that the Gunicorn master, which
imports the worker class, does not import the whole app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

SERVER_STOPPING = "server_stopping"


def signal_stopping(state: Mapping[str, Any]) -> None:
    """Set the app's event, if this lifespan state has one."""
    stopping = state.get(SERVER_STOPPING)
    if isinstance(stopping, asyncio.Event):
        stopping.set()
