"""The request id: one name for one piece of work in every log it passes through.

A request keeps the `X-Request-ID` its client (or the proxy in front) sent, when that is a
short token, or gets a new one; the id is answered in the response's header and bound to
structlog's context, so every line the broker logs while serving it carries `request_id`.
A query keeps the id of the request that submitted it: its job, which runs later in the
scheduler's own task, binds it again (`bound`), and the broker's HTTP client sends it to
the worker (`send_to_workers`), whose node logs it too.

The id lives in structlog's context variables alone: there is no second copy to keep in step.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
KEY = "request_id"  # its name in the log context
# What a client may name its request: a bounded token that cannot break a log line or a
# header (no spaces, quotes or control characters).
ACCEPTED = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


# A new id is this process's random half and a count (32 hex digits, as a UUID's): unique
# across brokers and restarts without asking the OS for randomness on every request. A forked
# child (a pre-forking server, the tests' fork server) draws a half of its own.
_PROCESS_HALF = uuid.uuid4().hex[:16]
_made = itertools.count()


def _new_process_half() -> None:
    global _PROCESS_HALF
    _PROCESS_HALF = uuid.uuid4().hex[:16]


os.register_at_fork(after_in_child=_new_process_half)


def accepted_or_new(value: str | None) -> str:
    """The client's id when it is an acceptable token, else a new one."""
    if value is not None and ACCEPTED.fullmatch(value):
        return value
    return f"{_PROCESS_HALF}{next(_made):016x}"


def current() -> str | None:
    """The id of the request being served in this context, if any."""
    value = structlog.contextvars.get_contextvars().get(KEY)
    return value if isinstance(value, str) else None


@contextmanager
def bound(request_id: str | None) -> Iterator[None]:
    """Serve a piece of work under `request_id` (a job run long after its request)."""
    if request_id is None:
        yield
        return
    with structlog.contextvars.bound_contextvars(**{KEY: request_id}):
        yield


async def send_to_workers(request: httpx.Request) -> None:
    """An httpx request hook: the worker hears the id of the request it is working for."""
    if (request_id := current()) is not None:
        request.headers.setdefault(HEADER, request_id)


class RequestIdMiddleware:
    """Take or make the id of each HTTP request and WebSocket, bind it for the logs, and
    answer it in the `X-Request-ID` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = accepted_or_new(sent.decode("latin-1") if sent is not None else None)

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                headers[HEADER] = request_id
            await send(message)

        with bound(request_id):
            await self.app(scope, receive, send_with_id)
