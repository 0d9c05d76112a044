"""Error codes the broker puts in `error {code, message}` replies."""

from __future__ import annotations

import enum
import math


class ErrorCode(enum.StrEnum):
    MALFORMED = "malformed"  # not JSON, or not a JSON object
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"  # a field is missing or out of bounds
    TOO_LARGE = "too_large"  # frame over max_message_size
    FORBIDDEN = "forbidden"  # needs a role the sender does not have
    UNAUTHORIZED = "unauthorized"
    BANNED = "banned"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # e.g. nickname taken, worker name taken
    NO_WORKER = "no_worker"  # no live worker could ever serve this query
    QUEUE_FULL = "queue_full"
    USER_LIMIT = "user_limit"  # the user has as many queries waiting as they may
    RATE_LIMITED = "rate_limited"  # too many requests just now: `retry_after` seconds
    QUOTA_EXCEEDED = "quota_exceeded"  # the role's queries a day are used up
    INSUFFICIENT_CREDIT = "insufficient_credit"  # a budget-enforced user's balance is too low
    UNSUPPORTED = "unsupported"  # a feature this broker does not offer (yet)
    WORKER_ERROR = "worker_error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # waited in the queue longer than queue_timeout
    NOT_CONFIGURED = "not_configured"  # the realm lacks what this needs (an API key…)
    NOT_CONNECTED = "not_connected"  # the user has not linked the account (or it lapsed)
    UPSTREAM_ERROR = "upstream_error"  # a web API an intent called failed
    UNAVAILABLE = "unavailable"  # the store (or another service the broker needs) is down
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A message the broker refuses; becomes an `error` reply on the same connection."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        response_to: str | int | None = None,
        *,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.response_to = response_to
        self.retry_after = retry_after  # seconds, for a limit that will lift

    def http_headers(self) -> dict[str, str] | None:
        """`Retry-After` (whole seconds, rounded up) when the refusal will lift."""
        if self.retry_after is None:
            return None
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}
