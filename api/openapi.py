"""The OpenAPI document tells what the API really answers, errors included.

A route declares only its own problem codes (`responses=problems({...})`). The answers that come
from shared mechanisms are added to every operation here, in one place, from what the route
depends on, when the document is built (`document_errors`):

    needs a bearer token (`CurrentUser`)          401 not_authenticated, invalid_token, ...
    needs the admin role (`AdminUser`)            403 admin_required
    acts on a portfolio (`AccountId`)             404 portfolio_not_found (X-Portfolio-Id)
    has parameters or a body                      422 validation_error
    reads a body                                  400 malformed_body, 413 request_too_large
    uses Redis or the database (an /api route)    503 redis_unavailable, database_unavailable
    any request                                   431 headers_too_large

and every `application/problem+json` answer gets the `Problem` schema (FastAPI's default 422,
`HTTPValidationError` as application/json, is never what the API sends). The operator routes
(/health, /ready, /metrics) document their own answers: /ready's 503 is its verdict, and neither
/health nor /metrics fails when a store does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from api.auth.deps import admin_principal, current_principal
from api.deps import get_resources
from api.errors import PROBLEM_JSON
from api.portfolios.deps import PORTFOLIO_NOT_FOUND, account_of_request

Responses = dict[int | str, dict[str, Any]]

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error, as RFC 9457 problem details. `code` is stable (match on it, not "
                   "on `title` or `detail`); some problems carry more members (`errors` for "
                   "a refused request's fields, `retry_after_s`, ...).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "with `validation_error`: each refused field",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array",
                            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

# The 401 codes of every route that needs a bearer token (api.auth.deps, api.auth.users).
AUTH_PROBLEMS = ("`not_authenticated`, `invalid_token`, `token_expired`; `user_not_found` "
                 "where the token's user (or its account) is loaded and has been deleted")

_SHARED: dict[int, str] = {
    401: AUTH_PROBLEMS,
    403: "`admin_required`: this endpoint needs the admin role",
    422: "`validation_error`: a parameter or the body does not match this document "
         "(`errors` lists each field)",
    400: "`malformed_body`: the body could not be decoded",
    413: "`request_too_large`: the body is larger than MAX_REQUEST_BODY_BYTES (api.limits)",
    431: "`headers_too_large`: the request line and headers are larger than "
         "MAX_REQUEST_HEADER_BYTES (answered by the server, api.server, and the connection "
         "closed)",
    503: "`redis_unavailable` or `database_unavailable` (whichever this operation uses): "
         "a store is unreachable or too slow; retry after `Retry-After` seconds",
}

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "integer"}}}


def problems(described: dict[int, str]) -> Responses:
    """`responses=` for a route's own error answers, by status: their problem codes, rendered
    as application/problem+json. A route lists here what is particular to it; the shared
    answers (401 for a bearer token, 403, 422, 400/413/431, 503) are added by `document_errors`
    from the route's dependencies."""
    return {status_code: {"description": text, "content": {PROBLEM_JSON: {}}}
            for status_code, text in described.items()}


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json, /docs) state the shared error answers of every
    operation. Called once by the application factory."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _complete(document, app)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(document: dict[str, Any], app: FastAPI) -> None:
    paths: dict[str, dict[str, Any]] = document.get("paths", {})
    # As FastAPI itself walks them for the document: each route as mounted (prefix and
    # router-level dependencies included).
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = paths.get(route.path_format or "", {}).get(method.lower())
            if operation is not None:
                _add_shared_answers(operation["responses"], route)
    for item in paths.values():
        for operation in item.values():
            _use_problem_schema(operation["responses"])
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    # FastAPI's default 422 body, which the API never sends (replaced above).
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _add_shared_answers(responses: dict[str, Any], route: RouteContext) -> None:
    calls = set(_calls(route.dependant))
    statuses: list[int] = []
    if current_principal in calls:
        statuses.append(401)
    if admin_principal in calls:
        statuses.append(403)
    if _has_parameters(route.dependant):
        statuses.append(422)
    if route.body_field is not None:
        statuses += [400, 413]
    elif "requestBody" in (route.openapi_extra or {}):
        statuses.append(413)  # a body the route reads raw: never parsed by FastAPI
    if (route.path_format or "").startswith("/api/") and get_resources in calls:
        statuses.append(503)
    statuses.append(431)  # any request: the server refuses the head before the app sees it
    for status in statuses:
        _merge(responses, status, _SHARED[status])
    if account_of_request in calls:
        _merge(responses, 404, PORTFOLIO_NOT_FOUND)
    for key in ("429", "503"):
        if key in responses:
            responses[key].setdefault("headers", _RETRY_AFTER)


def _merge(responses: dict[str, Any], status: int, shared: str) -> None:
    """Add a shared problem answer; a route's own description of that status stays, with the
    shared codes it does not already name."""
    key = str(status)
    answer = responses.get(key)
    if answer is None or (status == 422 and PROBLEM_JSON not in answer.get("content", {})):
        # FastAPI's own 422 (HTTPValidationError) is replaced, never merged.
        responses[key] = {"description": shared, "content": {PROBLEM_JSON: {}}}
        return
    description: str = answer.get("description", "")
    if any(f"`{code}`" not in description for code in shared.split("`")[1::2]):
        answer["description"] = f"{description}; {shared}" if description else shared
    answer.setdefault("content", {}).setdefault(PROBLEM_JSON, {})


def _use_problem_schema(responses: dict[str, Any]) -> None:
    for answer in responses.values():
        content = answer.get("content", {})
        if PROBLEM_JSON in content:
            content[PROBLEM_JSON]["schema"] = PROBLEM_REF


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    """Every dependency a route resolves, however deeply nested."""
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _has_parameters(dependant: Dependant) -> bool:
    """Whether FastAPI validates anything of the request for this route (then a 422 can be)."""
    if (dependant.path_params or dependant.query_params or dependant.header_params
            or dependant.cookie_params or dependant.body_params):
        return True
    return any(_has_parameters(sub) for sub in dependant.dependencies)
