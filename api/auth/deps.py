"""Who is calling: `CurrentUser` for any signed-in user, `AdminUser` for admin routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth.tokens import Principal
from api.deps import resources_of
from api.errors import Forbidden, Unauthorized

# async on purpose, though nothing here awaits: FastAPI runs a plain `def` dependency in the
# thread pool, which costs more than the HS256 check itself on every authenticated request.
# For the same reason the resources come from the request rather than from more dependencies.
_bearer = HTTPBearer(auto_error=False, description="Access token from /api/v1/auth/login")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("a bearer token is required", code="not_authenticated")
    return resources_of(request).access_tokens.verify(credentials.credentials)


async def optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """Who is calling, for routes open to anonymous callers that tell signed-in ones more
    (`/ready`): None without a token; a token that is there must be valid (401 otherwise)."""
    if credentials is None:
        return None
    return await current_principal(request, credentials)


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this endpoint needs the admin role", code="admin_required")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
OptionalUser = Annotated[Principal | None, Depends(optional_principal)]
