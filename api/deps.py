"""Dependencies for routes, as `Annotated` aliases so that signatures stay short."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from api.db import Database
from api.resources import Resources
from api.settings import ApiSettings


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def get_settings(request: Request) -> ApiSettings:
    return get_resources(request).settings


def get_db(request: Request) -> Database:
    return get_resources(request).db


def get_redis(request: Request) -> Redis:
    return get_resources(request).redis


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
RedisDep = Annotated[Redis, Depends(get_redis)]
