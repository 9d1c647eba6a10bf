"""HTTP routes of api.auth: register, login, refresh, and the current user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from api.auth import service
from api.auth.deps import CurrentUser
from api.auth.rate_limit import client_address
from api.auth.schemas import LoginRequest, RefreshRequest, RegisterRequest, TokenPair, UserOut
from api.deps import DatabaseDep, ResourcesDep, SettingsDep
from api.errors import PROBLEM_JSON

router = APIRouter()


def _problems(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers of a route, by status: their problem codes."""
    return {status_code: {"description": codes, "content": {PROBLEM_JSON: {}}}
            for status_code, codes in described.items()}


@router.post(
    "/auth/register", status_code=status.HTTP_201_CREATED, tags=["auth"],
    responses=_problems({
        409: "`email_taken`",
        422: "`validation_error`, `password_too_short`, `password_too_long`",
    }),
)
async def register(body: RegisterRequest, db: DatabaseDep, settings: SettingsDep) -> UserOut:
    """Create a user account (role `user`). Emails are compared case-insensitively."""
    user = await db.run(service.register, body.email, body.password,
                        min_password_length=settings.password_min_length,
                        initial_cash=settings.initial_cash)
    return UserOut.model_validate(user)


@router.post(
    "/auth/login", tags=["auth"],
    responses=_problems({
        401: "`invalid_credentials`",
        429: "`too_many_login_attempts` (see Retry-After)",
    }),
)
async def login(body: LoginRequest, request: Request, resources: ResourcesDep) -> TokenPair:
    """Exchange email and password for an access token and a refresh token."""
    address = client_address(request, resources.settings.trust_forwarded_for)
    return await service.login(resources, body.email, body.password, address)


@router.post(
    "/auth/refresh", tags=["auth"],
    responses=_problems({401: "`invalid_token`, `token_expired`"}),
)
async def refresh(body: RefreshRequest, resources: ResourcesDep) -> TokenPair:
    """Exchange a refresh token for a new pair, carrying the account's current role."""
    return await service.refresh(resources, body.refresh_token)


@router.get(
    "/users/me", tags=["users"],
    responses=_problems({401: "`not_authenticated`, `invalid_token`, `token_expired`"}),
)
async def me(principal: CurrentUser, db: DatabaseDep) -> UserOut:
    """The signed-in user's account."""
    user = await db.run(service.get_user, principal.user_id)
    return UserOut.model_validate(user)
