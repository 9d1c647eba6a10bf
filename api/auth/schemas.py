"""Request and response bodies of the auth endpoints (what /docs shows)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, computed_field

from api.auth.passwords import MAX_PASSWORD_LENGTH
from api.models import Role

MAX_EMAIL_LENGTH = 254  # users.email, and RFC 5321's limit on a forward path


class RegisterRequest(BaseModel):
    email: EmailStr = Field(examples=["alice@example.com"])
    # The minimum length is a setting (PASSWORD_MIN_LENGTH), checked by the service.
    password: str = Field(max_length=MAX_PASSWORD_LENGTH, examples=["correct horse battery"])


class LoginRequest(BaseModel):
    # Not EmailStr: any string may be tried (the admin account may live on a reserved domain
    # such as .test), and a malformed one simply matches no account.
    email: str = Field(min_length=1, max_length=MAX_EMAIL_LENGTH,
                       examples=["alice@example.com"])
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH,
                          examples=["correct horse battery"])


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the access token expires")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    role: Role
    created_at: datetime
    premium_until: datetime | None = Field(
        description="end of the premium period bought with payments; null if never bought")

    @computed_field(description="premium status now")  # type: ignore[prop-decorator]
    @property
    def premium(self) -> bool:
        return self.premium_until is not None and self.premium_until > datetime.now(UTC)
