"""Admin subscriptions. (Filled in by the subscriptions work.)"""

from __future__ import annotations

from api.resources import Resources


async def restore_desired_subscriptions(resources: Resources) -> None:
    """Mirror the SQL subscriptions into the Redis desired set at start."""
