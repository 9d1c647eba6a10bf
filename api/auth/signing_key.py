"""The development JWT signing key: drawn here and nowhere else.

In development an unset JWT_SECRET_KEY becomes a random key. Who draws it depends on who must
share it: a lone process draws its own when its settings are built (api.settings); a parent
draws one for the API processes it starts, so that a token issued by one is accepted by all:
Gunicorn's master for its workers (gunicorn.conf.py), the supervisor for Gunicorn
(scripts/supervise.py, so that tokens survive its restarts of Gunicorn). Production never gets
one: it must be configured (api.settings refuses to start without it).

Standard library only: Gunicorn's master imports it before any worker exists, and must not load
the app's modules (prometheus-client, for one, must first see PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

PRODUCTION = "production"  # the STOCKING_ENV value (api.settings.Environment)


def development_key_wanted(stocking_env: object, configured: bool) -> bool:
    """Whether a development key must be drawn: no key configured, and not in production."""
    return not configured and str(stocking_env or "").lower() != PRODUCTION


def draw_development_key() -> str:
    """A new development key: 48 random bytes, comfortably over the 32 that JWT needs."""
    return secrets.token_urlsafe(48)


def development_key_for_children(environ: Mapping[str, str]) -> str | None:
    """The key a parent process hands to the API processes it starts with `environ`, or None
    when JWT_SECRET_KEY is set there (kept) or STOCKING_ENV is production."""
    if development_key_wanted(environ.get("STOCKING_ENV"), bool(environ.get("JWT_SECRET_KEY"))):
        return draw_development_key()
    return None
