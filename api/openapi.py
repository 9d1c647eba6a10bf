"""OpenAPI documentation shared by the routers: the problem answers a route declares in
`responses=`, so that /docs lists each status with its stable problem codes."""

from __future__ import annotations

from typing import Any

from api.errors import PROBLEM_JSON

# The 401 codes of every route that needs a bearer token (api.auth.deps).
AUTH_PROBLEMS = "`not_authenticated`, `invalid_token`, `token_expired`"


def problems(described: dict[int, str], *,
             authenticated: bool = True) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route's error answers, by status: their problem codes, rendered as
    application/problem+json. A route that needs a bearer token also answers 401."""
    codes = {401: AUTH_PROBLEMS, **described} if authenticated else described
    return {status_code: {"description": text, "content": {PROBLEM_JSON: {}}}
            for status_code, text in codes.items()}
