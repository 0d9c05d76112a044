"""A store outage met while answering an HTTP request: 503, `Retry-After`, a typed code.

Any route can meet the database down (authenticating reads it, submitting writes it). Rather
than a plain-text 500 and a traceback per request, the app answers every such request the
same way: REST in its refusal shape `{"detail": {"code": "unavailable", ...}}`, `/v1` in
OpenAI's error shape, both with `Retry-After`. An exception that is not an outage goes on to
the server's 500 as before: that one is a bug.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from rentahal.api.openai.errors import OpenAIError
from rentahal.core.errors import ErrorCode
from rentahal.store import StoreUnavailable, is_outage
from rentahal.store.outage import RETRY_AFTER

MESSAGE = "the broker's database is unavailable just now; nothing was changed, try again shortly"

# What a database outage is raised as, wherever it is met (TimeoutError and ConnectionError
# are OSErrors); `is_outage` decides for each one.
OUTAGE_TYPES: tuple[type[Exception], ...] = (
    StoreUnavailable,
    SQLAlchemyError,
    asyncpg.PostgresError,
    OSError,
)


def unavailable_response(path: str) -> JSONResponse:
    headers = {"Retry-After": str(math.ceil(RETRY_AFTER))}
    if path == "/v1" or path.startswith("/v1/"):
        return OpenAIError(
            503, MESSAGE, type="server_error", code=ErrorCode.UNAVAILABLE, headers=headers
        ).response()
    detail = {"code": ErrorCode.UNAVAILABLE, "message": MESSAGE, "retry_after": RETRY_AFTER}
    return JSONResponse({"detail": detail}, status_code=503, headers=headers)


def install(app: FastAPI, on_outage: Callable[[BaseException], None]) -> None:
    """Answer outages met by any HTTP route with 503; `on_outage(exc)` is told of each."""

    async def handle(request: Request, exc: Exception) -> Response:
        if not is_outage(exc):
            raise exc
        on_outage(exc)
        return unavailable_response(request.url.path)

    for kind in OUTAGE_TYPES:
        app.add_exception_handler(kind, handle)
