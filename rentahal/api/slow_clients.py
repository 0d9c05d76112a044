"""Slow clients: a request must arrive in good time, or its connection is closed.

A client that opens a connection and then trickles its request in (slowloris: one header line
every few seconds; or a body a byte at a time) would hold a connection, and a place under
`limit_concurrency`, for as long as it likes: uvicorn times out only idle keep-alive
connections (`timeout_keep_alive`), not a request being read. So:

- `header_timeout_protocol` is uvicorn's httptools protocol with one timer more: a request's
  headers must be complete within `header_timeout` seconds of its first byte (of the
  connection's opening, for the first request, so a connection that never sends anything is
  closed too). A late one gets `408` and the connection is closed, lingering: the broker
  stops writing, then reads and discards what the client still sends for up to
  `LINGER_SECONDS` before it closes. A socket closed with unread bytes in it answers with a
  reset, which can destroy the 408 before the client reads it (nginx's `lingering_close`,
  Apache's lingering close).
- `BodyTimeout` is an ASGI middleware that gives the body `body_timeout` seconds, plus a second
  for every KiB received (so a large upload on a slow line still goes through, as Apache's
  mod_reqtimeout does it), counted from when the application first asks for it (a body that
  arrived while the application was busy is not late). A late body: the application sees the
  client disconnect, and the client gets `408` and a closed connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rentahal.core.errors import ErrorCode

log = structlog.get_logger(__name__)

# A body may take a second longer for each KiB that arrived (a slow line, not a stalled one).
BODY_BYTES_PER_EXTRA_SECOND = 1024
# How long a connection cut off for being late is drained before it is closed.
LINGER_SECONDS = 2.0

TIMED_OUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 16\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request Timeout\n"
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers are late.

    The timer is armed when the connection opens and when a request's first byte arrives
    (whichever comes first and is not armed already: waiting before the first byte of a later
    request is the keep-alive timeout's business), and disarmed when the headers are complete.
    """

    header_timeout: ClassVar[float] = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is None:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        log.info("http.headers_timed_out", client=self.client, timeout=self.header_timeout)
        if self.cycle is None or self.cycle.response_complete:  # no response is being written
            self.transport.write(TIMED_OUT_RESPONSE)
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Half-close, discard what still arrives, close once the client has gone or after
        `LINGER_SECONDS` (see the module's docstring)."""
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        if self.transport.can_write_eof():
            self.transport.write_eof()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class to pass as uvicorn's `http=`, with its header timeout set (uvicorn
    builds the protocol itself, from its own config, so the timeout travels on the class)."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})


class BodyTimeout:
    """Closes an HTTP request whose body does not arrive in time (see the module's docstring).

    Only reading the body is timed: once it is complete, `receive()` waits for the client's
    disconnect as long as the application likes (a streamed answer listens for it).
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        body_complete = False
        timed_out = False
        response_started = False

        async def timed_receive() -> Message:
            nonlocal body_complete, deadline, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if body_complete:
                return await receive()
            if deadline is None:
                deadline = time.monotonic() + self.timeout
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                log.info("http.body_timed_out", client=scope.get("client"), path=scope["path"])
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                deadline += len(message.get("body", b"")) / BODY_BYTES_PER_EXTRA_SECOND
                body_complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if timed_out and not response_started:
                return  # the answer is our 408, whatever the application makes of it
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
        if timed_out and not response_started:
            await _send_timed_out(send)


async def _send_timed_out(send: Send) -> None:
    body: dict[str, Any] = {
        "code": ErrorCode.TIMEOUT,
        "message": "the request's body did not arrive in time",
    }
    encoded = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(encoded)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": encoded})
