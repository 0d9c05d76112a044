"""How a refusal becomes an HTTP answer: one status table, one app-level handler.

Routes raise the broker's one refusal, `ProtocolError`, and this handler answers it
`{"detail": {"code", "message", "retry_after"?}}` with the status `HTTP_STATUS` gives its code
and `Retry-After` when it will lift (Starlette's pattern: the route says what went wrong, the
app says how that looks). The OpenAI API answers the same refusals in OpenAI's shape through
its own route class, with the same statuses. FastAPI refuses input its schema forbids with
`{"detail": [{"loc", "msg", "type"}]}`; both shapes are declared in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from rentahal.core.errors import ErrorCode, ProtocolError

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.MALFORMED: status.HTTP_400_BAD_REQUEST,
    ErrorCode.INVALID: status.HTTP_422_UNPROCESSABLE_CONTENT,
    ErrorCode.TOO_LARGE: status.HTTP_413_CONTENT_TOO_LARGE,
    ErrorCode.UNAUTHORIZED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.FORBIDDEN: status.HTTP_403_FORBIDDEN,
    ErrorCode.BANNED: status.HTTP_403_FORBIDDEN,
    ErrorCode.NOT_FOUND: status.HTTP_404_NOT_FOUND,
    ErrorCode.CONFLICT: status.HTTP_409_CONFLICT,
    ErrorCode.INSUFFICIENT_CREDIT: status.HTTP_402_PAYMENT_REQUIRED,
    ErrorCode.NO_WORKER: status.HTTP_503_SERVICE_UNAVAILABLE,
    ErrorCode.UNAVAILABLE: status.HTTP_503_SERVICE_UNAVAILABLE,
    ErrorCode.QUEUE_FULL: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.USER_LIMIT: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.RATE_LIMITED: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.QUOTA_EXCEEDED: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.UNSUPPORTED: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


def http_status(code: ErrorCode) -> int:
    return HTTP_STATUS.get(code, status.HTTP_400_BAD_REQUEST)


def refusal_response(exc: ProtocolError) -> JSONResponse:
    detail: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.retry_after is not None:
        detail["retry_after"] = exc.retry_after
    return JSONResponse(
        {"detail": detail}, status_code=http_status(exc.code), headers=exc.http_headers()
    )


def install(app: FastAPI) -> None:
    """Answer every `ProtocolError` a route raises (see the module's docstring)."""

    async def refused(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProtocolError)
        return refusal_response(exc)

    app.add_exception_handler(ProtocolError, refused)


class Refusal(BaseModel):
    code: str  # an ErrorCode
    message: str
    retry_after: float | None = None


class RefusalBody(BaseModel):
    detail: Refusal


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationFailure(BaseModel):
    detail: list[FieldError]


REFUSED: dict[int | str, dict[str, Any]] = {
    422: {
        "model": RefusalBody | ValidationFailure,
        "description": "The input breaks a rule (`code`, `message`) or the schema (`loc`, `msg`)",
    }
}
