"""Bearer tokens for API tests, minted with the app's own signing key (no login round trip)."""

from __future__ import annotations

from api.auth.tokens import Principal, TokenType, issue
from api.models import Role
from api.settings import ApiSettings


def bearer(settings: ApiSettings, role: Role = Role.USER, user_id: int = 1) -> dict[str, str]:
    """An Authorization header for a user (or admin) of this id, valid for 15 minutes."""
    principal = Principal(user_id, f"user{user_id}@stocking.test", role)
    token = issue(principal, TokenType.ACCESS, settings.signing_key(), 900)
    return {"Authorization": f"Bearer {token}"}
