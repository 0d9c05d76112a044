"""Errors under `/v1` in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
with OpenAI's status codes: the routes' own (`OpenAIRoute`), and those raised before any route
runs (`install_error_handlers`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from rentahal.api.validation import validation_failure
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.store import Query


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code, self.message = status_code, message
        self.type, self.code, self.param, self.headers = type, code, param, headers

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(status.HTTP_400_BAD_REQUEST, message, param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        status.HTTP_404_NOT_FOUND,
        f"The model '{model}' does not exist or no live worker serves it",
        param="model",
        code="model_not_found",
    )


def refused(exc: ProtocolError, model_name: str) -> OpenAIError:
    """A query the scheduler (or the key's scopes) refused at submit."""
    code = exc.code
    if code in (ErrorCode.FORBIDDEN, ErrorCode.BANNED):
        return OpenAIError(
            status.HTTP_403_FORBIDDEN, exc.message, type="permission_error", code=code.value
        )
    if code == ErrorCode.NO_WORKER:
        if model_name:
            return model_not_found(model_name)
        return OpenAIError(
            status.HTTP_503_SERVICE_UNAVAILABLE, exc.message, type="server_error", code=code.value
        )
    if code in (
        ErrorCode.QUEUE_FULL,
        ErrorCode.USER_LIMIT,
        ErrorCode.RATE_LIMITED,
        ErrorCode.QUOTA_EXCEEDED,
    ):
        return OpenAIError(
            status.HTTP_429_TOO_MANY_REQUESTS,
            exc.message,
            type="rate_limit_error",
            code=code.value,
            headers=exc.http_headers(),
        )
    if code == ErrorCode.INSUFFICIENT_CREDIT:  # OpenAI's own answer to an empty balance
        return OpenAIError(
            status.HTTP_429_TOO_MANY_REQUESTS,
            exc.message,
            type="insufficient_quota",
            code=code.value,
        )
    if code == ErrorCode.INTERNAL:
        return OpenAIError(500, exc.message, type="server_error", code=code.value)
    return bad_request(exc.message, code=code.value)


# A finished query's error code → (status, OpenAI error type).
FAILURES: dict[str, tuple[int, str]] = {
    ErrorCode.INVALID: (status.HTTP_400_BAD_REQUEST, "invalid_request_error"),
    ErrorCode.WORKER_ERROR: (status.HTTP_502_BAD_GATEWAY, "server_error"),
    ErrorCode.TIMEOUT: (status.HTTP_504_GATEWAY_TIMEOUT, "server_error"),
    ErrorCode.EXPIRED: (status.HTTP_503_SERVICE_UNAVAILABLE, "server_error"),
    ErrorCode.NO_WORKER: (status.HTTP_503_SERVICE_UNAVAILABLE, "server_error"),
    ErrorCode.CANCELLED: (status.HTTP_409_CONFLICT, "invalid_request_error"),
}


def failed(query: Query) -> OpenAIError:
    """A query that ended without a result."""
    code = query.error_code or ErrorCode.INTERNAL.value
    status_code, kind = FAILURES.get(code, (500, "server_error"))
    return OpenAIError(status_code, query.error or f"query {query.state}", type=kind, code=code)


def from_http(exc: StarletteHTTPException) -> OpenAIError:
    detail = exc.detail
    message = detail.get("message") if isinstance(detail, dict) else detail
    code = detail.get("code") if isinstance(detail, dict) else None
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    if exc.status_code == status.HTTP_403_FORBIDDEN:
        kind = "permission_error"
    return OpenAIError(
        exc.status_code, str(message), type=kind, code=code, headers=dict(exc.headers or {})
    )


def field_path(loc: tuple[Any, ...]) -> str | None:
    """`messages.0.content.1.image_url.url` for pydantic's location of an error, without
    the names pydantic gives a union's members (`constrained-str`, `list[…]`, a tag)."""
    parts: list[str] = []
    items = [item for item in loc if item != "body"]
    index = 0
    while index < len(items):
        item = items[index]
        if isinstance(item, str) and ("[" in item or "-" in item or item == "str"):
            tagged = "tagged-union" in item
            if tagged and index + 2 < len(items) and isinstance(items[index + 1], int):
                parts.append(str(items[index + 1]))  # the list index; then skip the tag
                index += 3
                continue
            index += 1
            continue
        parts.append(str(item))
        index += 1
    return ".".join(parts) or None


def from_validation(exc: RequestValidationError) -> OpenAIError:
    """The most telling problem of a body that failed validation (of a union's members,
    the one that got furthest), with where it is as `param`."""
    errors = list(exc.errors())
    if not errors:
        return bad_request("invalid request")
    if any(error.get("type") == "json_invalid" for error in errors):
        return bad_request("the request body is not valid JSON", code="invalid_json")
    first = max(errors, key=lambda error: len(error.get("loc", ())))
    param = field_path(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    return bad_request(f"{param}: {message}" if param else message, param=param)


class OpenAIRoute(APIRoute):
    """Routes whose every error (authentication, validation, refusals) is OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()
            except RequestValidationError as exc:
                return from_validation(exc).response()
            except HTTPException as exc:
                return from_http(exc).response()
            except ProtocolError as exc:
                return refused(exc, "").response()

        return route


def on_v1(request: Request) -> bool:
    path = request.url.path
    return path == "/v1" or path.startswith("/v1/")


def install_error_handlers(app: FastAPI) -> None:
    """App-level handlers: errors under /v1 that no route of it raised (a method no route
    takes, a request refused before routing, an unexpected exception) in OpenAI's shape too,
    as `OpenAIRoute` answers its own; elsewhere FastAPI's shapes, with a 422 that can always
    be sent (`rentahal.api.validation`). FastAPI's handlers are app-wide, hence one per
    exception type that looks at the path."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if on_v1(request):
            return from_validation(exc).response()
        return validation_failure(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if on_v1(request):
            return from_http(exc).response()
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        """Starlette's ServerErrorMiddleware logs the exception and sends this."""
        if on_v1(request):
            return OpenAIError(500, "Internal Server Error", type="server_error").response()
        return PlainTextResponse("Internal Server Error", status_code=500)
