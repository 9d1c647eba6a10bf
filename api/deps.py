"""Dependencies for routes, as `Annotated` aliases so that signatures stay short.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, and
that hop (~50-100 us with its context switches) per dependency per request was most of the cost
of a quote read (measured in-process: ~1 ms for GET /stock/{code} with sync dependencies). A
dependency that does blocking work must stay `def`; these only read attributes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.resources import Resources
from api.settings import ApiSettings


def resources_of(request: Request) -> Resources:
    """The process's resources, for code that has the request (no dependency resolution)."""
    resources: Resources = request.app.state.resources
    return resources


async def get_resources(request: Request) -> Resources:
    return resources_of(request)


async def get_settings(request: Request) -> ApiSettings:
    return resources_of(request).settings


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
