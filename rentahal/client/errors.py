"""The SDK's exceptions: one class per kind of trouble, so callers can `except` what they
can act on, with the broker's wire code kept on every instance for the rest.

The broker reports problems as `error {code, message, response_to?, query_id?}`. An error
that answers a request (`response_to`, no `query_id`) means the request was refused and
nothing ran; an error that names a `query_id` is the final event of an accepted query that
ended without a result. The two families are kept apart (`Refused`/`InvalidRequest`/… versus
`QueryFailed`), because "try something else" and "it ran and failed" need different handling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rentahal.core.errors import ErrorCode


class RentahalError(Exception):
    """Anything the broker or this client reports as failed.

    `code` is the broker's machine-readable code (`rentahal.core.errors.ErrorCode`) or one of
    the client's own (`connection_lost`, `timeout`, `circuit_open`); `message` is for people.
    """

    default_code = "error"

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        *,
        query_id: str | None = None,
        response_to: str | int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message
        self.query_id = query_id
        self.response_to = response_to
        self.retry_after = retry_after  # seconds until a limit lifts, when the broker says
        super().__init__(f"{self.code}: {message}" if message else self.code)


class ConnectionLost(RentahalError, ConnectionError):
    """The connection to the broker is gone, or could not be made.

    `request_sent` tells whether the request in hand had already been written to the
    socket: if it had, the broker may have acted on it (a submitted query may be running),
    so re-sending it blindly could run and charge it twice. `final` says the client has
    given up for good (it was closed, or the broker stayed away too long): retrying cannot
    help then. Otherwise it is transient, and a `ConnectionError` for generic retry code.
    """

    default_code = "connection_lost"

    def __init__(
        self,
        message: str = "the connection to the broker was lost",
        *,
        request_sent: bool = False,
        code: str | None = None,
    ) -> None:
        super().__init__(code, message)
        self.request_sent = request_sent
        self.final = False


class RequestTimeout(RentahalError, TimeoutError):
    """No answer came in time. A `TimeoutError`, so generic retry code sees it as transient;
    `request_sent` has the same meaning as on `ConnectionLost`."""

    default_code = "timeout"

    def __init__(self, message: str = "no answer in time", *, request_sent: bool = True) -> None:
        super().__init__(None, message)
        self.request_sent = request_sent


class CircuitOpen(RentahalError):
    """The client's circuit breaker refused the call without trying: recent calls failed,
    and it is giving the broker `retry_after` seconds to recover."""

    default_code = "circuit_open"

    def __init__(self, retry_after: float) -> None:
        message = f"the circuit is open; try again in {retry_after:.1f} s"
        super().__init__(None, message, retry_after=retry_after)


class Unauthorized(RentahalError):
    """The API key was refused (unknown or revoked). Retrying with the same key cannot help."""

    default_code = ErrorCode.UNAUTHORIZED.value


class Forbidden(RentahalError):
    """The key is valid but may not do this (a sysop command, a query type outside its scopes)."""

    default_code = ErrorCode.FORBIDDEN.value


class Banned(Forbidden):
    """The sysop banned this user; the broker closes the connection."""

    default_code = ErrorCode.BANNED.value


class InvalidRequest(RentahalError):
    """The broker could not take the message as sent (malformed, invalid field, too large)."""

    default_code = ErrorCode.INVALID.value


class NotFound(RentahalError):
    """No such thing, or not one of yours (e.g. cancelling another user's query)."""

    default_code = ErrorCode.NOT_FOUND.value


class Conflict(RentahalError):
    """The request clashes with the current state (a nickname taken, a query already over)."""

    default_code = ErrorCode.CONFLICT.value


class Refused(RentahalError):
    """The broker declined to queue the query: no worker can serve it, the queue is full,
    the user has too much waiting or too little credit, a limit was hit, or the realm lacks
    what it needs. Nothing ran and nothing was charged; it may succeed later (queue_full,
    user_limit, rate_limited) or elsewhere (no_worker)."""

    default_code = ErrorCode.NO_WORKER.value


class RateLimited(Refused):
    """Too many queries just now (`rate_limited`), or the day's quota is used up
    (`quota_exceeded`): `retry_after` says in how many seconds one will be let through."""

    default_code = ErrorCode.RATE_LIMITED.value


class ServerError(RentahalError):
    """The broker failed internally while handling a request."""

    default_code = ErrorCode.INTERNAL.value


class QueryFailed(RentahalError):
    """An accepted query ended without a result (the worker failed, timed out, refused the
    input…). `code` says why; `query_id` names the query."""

    default_code = ErrorCode.WORKER_ERROR.value


class QueryCancelled(QueryFailed):
    """The query was cancelled, by its owner or by the sysop."""

    default_code = ErrorCode.CANCELLED.value


class QueryExpired(QueryFailed):
    """The query waited in the queue longer than the broker's `queue_timeout`."""

    default_code = ErrorCode.EXPIRED.value


_REPLY_ERRORS: dict[str, type[RentahalError]] = {
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.BANNED: Banned,
    ErrorCode.MALFORMED: InvalidRequest,
    ErrorCode.UNKNOWN_TYPE: InvalidRequest,
    ErrorCode.INVALID: InvalidRequest,
    ErrorCode.TOO_LARGE: InvalidRequest,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.NO_WORKER: Refused,
    ErrorCode.QUEUE_FULL: Refused,
    ErrorCode.USER_LIMIT: Refused,
    ErrorCode.UNSUPPORTED: Refused,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.QUOTA_EXCEEDED: RateLimited,
    ErrorCode.INSUFFICIENT_CREDIT: Refused,
    ErrorCode.NOT_CONFIGURED: Refused,
    ErrorCode.NOT_CONNECTED: Refused,
    ErrorCode.UPSTREAM_ERROR: ServerError,
    ErrorCode.INTERNAL: ServerError,
    ErrorCode.TIMEOUT: ServerError,
    ErrorCode.WORKER_ERROR: ServerError,
}

_QUERY_ERRORS: dict[str, type[QueryFailed]] = {
    ErrorCode.CANCELLED: QueryCancelled,
    ErrorCode.EXPIRED: QueryExpired,
}

# Codes that say the service, not the caller, is in trouble: the circuit breaker counts these.
SERVICE_FAILURE_CODES = frozenset(
    {
        ErrorCode.INTERNAL.value,
        ErrorCode.WORKER_ERROR.value,
        ErrorCode.TIMEOUT.value,
        ErrorCode.EXPIRED.value,
        ErrorCode.QUEUE_FULL.value,
        ErrorCode.UPSTREAM_ERROR.value,
    }
)


def error_from_event(event: Mapping[str, Any]) -> RentahalError:
    """The exception for a broker `error` event: a `QueryFailed` family member when the
    event ends a query (it names `query_id`), otherwise the class for its code."""
    code = str(event.get("code") or ErrorCode.INTERNAL.value)
    message = str(event.get("message") or "")
    query_id = event.get("query_id")
    response_to = event.get("response_to")
    retry_after = event.get("retry_after")
    cls: type[RentahalError]
    if query_id:
        cls = _QUERY_ERRORS.get(code, QueryFailed)
    else:
        cls = _REPLY_ERRORS.get(code, RentahalError)
    return cls(
        code,
        message,
        query_id=query_id,
        response_to=response_to,
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
    )


def is_transient(exc: BaseException) -> bool:
    """Worth trying again as it was: the connection failed or an answer did not come
    (but not once the client has given up its connection for good)."""
    return isinstance(exc, ConnectionError | TimeoutError) and not getattr(exc, "final", False)


def is_safe_to_resend(exc: BaseException) -> bool:
    """Transient, and the broker cannot have acted on the request (it was never sent)."""
    return is_transient(exc) and not getattr(exc, "request_sent", False)


def counts_as_failure(exc: BaseException) -> bool:
    """Does this outcome count against the service in a circuit breaker? Connection trouble,
    timeouts and the broker's service-side codes do; the caller's own mistakes (invalid input,
    missing scopes, cancellations) do not: the service answered them correctly."""
    if is_transient(exc):
        return True
    return isinstance(exc, RentahalError) and exc.code in SERVICE_FAILURE_CODES
