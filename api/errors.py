"""API errors: domain errors carry their HTTP status and a stable `code`; one set of handlers
renders every error, ours or the framework's, as RFC 9457 `application/problem+json`.

    ApiError                       4xx/5xx with a stable code
     +-- NotFound                  404
     +-- Conflict                  409
     +-- Unauthorized              401 (with WWW-Authenticate: Bearer)
     +-- Forbidden                 403
     +-- Unprocessable             422 (a well-formed request whose values we refuse)
     +-- TooManyRequests           429 (with Retry-After)
     +-- ServiceUnavailable        503

Services raise these; routes never build error responses by hand. Infrastructure faults are
mapped here too, whatever the route: Redis unreachable is 503 redis_unavailable, and a database
that is down, frozen or overloaded (api.db.is_unavailable) is 503 database_unavailable.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.db import DatabaseUnavailable, is_unavailable

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra
        self.headers: dict[str, str] = {}


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class Unauthorized(ApiError):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail, code=code, **extra)
        self.headers["WWW-Authenticate"] = "Bearer"


class Forbidden(ApiError):
    status, code, title = 403, "forbidden", "Forbidden"


class Unprocessable(ApiError):
    status, code, title = 422, "unprocessable", "Unprocessable request"


class TooManyRequests(ApiError):
    status, code, title = 429, "too_many_requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["Retry-After"] = str(retry_after_s)


class ServiceUnavailable(ApiError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


def problem_document(status: int, code: str, title: str, detail: str, instance: str,
                     **extra: Any) -> dict[str, Any]:
    """The RFC 9457 body of every error answer, whoever sends it (the handlers below, the
    body-limit middleware, the server's head limit)."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "code": code, "instance": instance, **extra}


def problem(status: int, code: str, title: str, detail: str, request: Request,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = problem_document(status, code, title, detail, request.url.path, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem(exc.status, exc.code, exc.title, exc.detail, request, exc.headers,
                   **exc.extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "request"
    return problem(422, "validation_error", "Invalid request", f"{where}: {first['msg']}",
                   request, errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # 400 is FastAPI's "There was an error parsing the body" (bytes that are not UTF-8 JSON).
    codes = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed",
             401: "unauthorized"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    return problem(exc.status_code, code, detail, detail, request,
                   dict(exc.headers) if exc.headers else None)


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("Redis unavailable during %s %s: %s", request.method, request.url.path, exc)
    return problem(503, "redis_unavailable", "Service unavailable",
                   "the quote store (Redis) is unreachable; try again shortly", request,
                   {"Retry-After": "1"})


# How long a client is asked to wait after a database fault: a restarted MariaDB answers within
# a few seconds (docs/OPERATIONS.md, "Database faults").
DATABASE_RETRY_AFTER_S = 2


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database down, frozen, unreachable or overloaded is a 503 with Retry-After, whatever
    the route; any other SQL error is a bug (500). Handled here rather than left to the
    catch-all, which re-raises to the server after its 500: Uvicorn then closes the client's
    keep-alive connection, and its next request fails too."""
    if not is_unavailable(exc):
        return await _unexpected(request, exc)
    # One line, no traceback: an outage would otherwise flood the log with identical ones.
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    logger.warning("database unavailable during %s %s: %s: %s", request.method,
                   request.url.path, type(cause).__name__, cause)
    return problem(503, "database_unavailable", "Service unavailable",
                   "the database is unreachable or not answering; try again shortly", request,
                   {"Retry-After": str(DATABASE_RETRY_AFTER_S)})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return problem(500, "internal_error", "Internal server error",
                   "an unexpected error occurred; it has been logged", request)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(DatabaseUnavailable, _database_error)
    app.add_exception_handler(Exception, _unexpected)
