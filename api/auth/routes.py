"""HTTP routes of api.auth: register, login, refresh, logout, and the current user."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from api.auth import service
from api.auth.deps import CurrentUser
from api.auth.rate_limit import client_address
from api.auth.schemas import LoginRequest, RefreshRequest, RegisterRequest, TokenPair, UserOut
from api.deps import ResourcesDep
from api.openapi import problems

router = APIRouter()


@router.post(
    "/auth/register", status_code=status.HTTP_201_CREATED, tags=["auth"],
    responses=problems({
        409: "`email_taken`",
        422: "`validation_error`, `password_too_short`, `password_too_long`",
        429: "`too_many_registrations` (see Retry-After)",
    }),
)
async def register(body: RegisterRequest, request: Request,
                   resources: ResourcesDep) -> UserOut:
    """Create a user account (role `user`). Emails are compared case-insensitively; an email
    that has an account is told so (409). Rate limited per client address."""
    address = client_address(request, resources.settings.trust_forwarded_for)
    return await service.register_from(resources, body.email, body.password, address)


@router.post(
    "/auth/login", tags=["auth"],
    responses=problems({
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
    responses=problems({401: "`invalid_token`, `token_expired`, `refresh_token_reused` (the "
                              "session is revoked), `token_revoked`, `user_not_found`"}),
)
async def refresh(body: RefreshRequest, resources: ResourcesDep) -> TokenPair:
    """Exchange the newest refresh token of a session for a new pair, carrying the account's
    current role. The token given is used up: presenting it again revokes the session."""
    return await service.refresh(resources, body.refresh_token)


@router.post(
    "/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"],
    responses=problems({401: "`invalid_token`, `token_expired`"}),
)
async def logout(body: RefreshRequest, resources: ResourcesDep) -> None:
    """End the session of this refresh token: no token of it refreshes any more. Access
    tokens already issued stay valid until they expire (at most `JWT_ACCESS_TTL_S`)."""
    await service.logout(resources, body.refresh_token)


@router.get(
    "/users/me", tags=["users"],
    responses=problems({401: "`not_authenticated`, `invalid_token`, `token_expired`, "
                              "`user_not_found`"}),
)
async def me(principal: CurrentUser, resources: ResourcesDep) -> UserOut:
    """The signed-in user's account."""
    return await service.me(resources, principal.user_id)
