"""Accounts: registration, password checks, the admin account. (Filled in by the auth work.)"""

from __future__ import annotations

from api.resources import Resources


async def ensure_admin_account(resources: Resources) -> None:
    """Create or promote the STOCKING_ADMIN_EMAIL account at start (when both settings are set)."""
