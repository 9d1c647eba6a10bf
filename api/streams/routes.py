"""The live stream's endpoints (mounted under /api/v1): the WebSocket `/stream` and the SSE
`/stream/sse`. Thin: they hand the connection to api.streams.ws or api.streams.sse with the
worker's hub (`app.state.stream_hub`, started in the app's lifespan). Protocol:
docs/api/STREAMS.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.requests import HTTPConnection

from api.deps import resources_of
from api.ids import MAX_ROW_ID
from api.portfolios.deps import PORTFOLIO_HEADER
from api.resources import Resources
from api.streams import sse, ws
from api.streams.fanout import Hub

router = APIRouter(tags=["streams"])


def _resources(connection: HTTPConnection) -> Resources:
    resources: Resources = connection.app.state.resources
    return resources


def _hub(connection: HTTPConnection) -> Hub:
    hub: Hub = connection.app.state.stream_hub
    return hub


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """Quotes, the user's order events and the market's sessions over one WebSocket."""
    await ws.serve(websocket, _resources(websocket), _hub(websocket))


# Out of the OpenAPI document, like the WebSocket: an endless event stream has no response
# schema to check, and a contract test that reads whole answers would wait on it forever. Its
# protocol is in docs/api/STREAMS.md.
@router.get("/stream/sse", include_in_schema=False)
async def stream_sse(
    request: Request,
    quotes: Annotated[str | None, Query(description="instrument codes, comma-separated")] = None,
    orders: Annotated[bool, Query(description="your order, fill and cash events")] = False,
    market: Annotated[bool, Query(description="the market's session changes")] = False,
    since: Annotated[str | None, Query(description="resume the orders events after this "
                                                   "offset (Last-Event-ID wins)")] = None,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
    portfolio_id: Annotated[int | None, Header(
        alias=PORTFOLIO_HEADER, ge=1, le=MAX_ROW_ID,
        description="the portfolio whose orders events are sent (an id from GET "
                    "/api/v1/portfolios); none: the default portfolio")] = None,
) -> StreamingResponse:
    return await sse.open_stream(resources_of(request), _hub(request), request.receive,
                                 authorization, quotes, orders, market, last_event_id or since,
                                 portfolio_id)
