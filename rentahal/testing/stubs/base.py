"""Plumbing shared by the stub apps: request tracking, disconnect detection and pacing.

A stub is only useful for cancellation tests if it notices, like a real inference server,
that the broker hung up. :class:`TrackingMiddleware` owns the connection's ``receive``
channel, so it sees the ``http.disconnect`` as soon as it arrives, and handlers wait through
:func:`pause`, which wakes up early when that happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from http import HTTPStatus
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rentahal.testing.stubs.state import CONTROL_PREFIX, StubState, control_routes

T = TypeVar("T")

_GONE_KEY = "rentahal.stub.client_gone"


class ClientGone(Exception):
    """The client closed the connection; the handler abandons its work."""


class StubCrash(Exception):
    """Raised mid-stream on purpose: uvicorn then drops the connection without finishing."""


def build_app(state: StubState, routes: Sequence[BaseRoute]) -> Starlette:
    """Assemble a protocol's routes with the ``/_stub`` control API and request tracking."""
    return Starlette(
        routes=[*routes, control_routes(state)],
        middleware=[Middleware(TrackingMiddleware, state=state)],
    )


async def json_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or ``None`` if it is not one."""
    try:
        payload = await request.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


async def pause(request: Request, seconds: float) -> None:
    """Sleep like a busy model would, raising :class:`ClientGone` if the client leaves."""
    if seconds <= 0:
        return
    gone: asyncio.Event = request.scope[_GONE_KEY]
    try:
        await asyncio.wait_for(gone.wait(), seconds)
    except TimeoutError:
        return
    raise ClientGone


async def probe_failure(request: Request, state: StubState) -> int | None:
    """Apply the health behaviour to a liveness/listing route: the status to fail with, if any."""
    await pause(request, state.behaviour.health_delay)
    status = state.behaviour.health_status
    return None if status == HTTPStatus.OK else status


def reason_phrase(status: int) -> str:
    """Standard reason phrase for an error body; configured statuses may be non-standard."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def last_user_text(messages: object) -> str:
    """Text of the last user message in a chat, whatever the content shape.

    Content is a string (Ollama, simple OpenAI calls) or a list of typed parts (OpenAI
    multimodal calls), of which only the text parts count.
    """
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def content_text(content: object) -> str:
    """Plain text of one message's content (a string or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and "text" in part
        )
    return ""


def word_count(messages: object) -> int:
    """Rough prompt token count for the usage figures real servers report."""
    if not isinstance(messages, list):
        return 0
    return sum(len(content_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


def truncate(chunks: list[str], limit: object) -> tuple[list[str], str]:
    """Cut the reply at a token limit, returning the finish reason both protocols use."""
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < len(chunks):
        return chunks[:limit], "length"
    return chunks, "stop"


async def paced(request: Request, state: StubState, chunks: Sequence[T]) -> AsyncIterator[T]:
    """Yield stream chunks ``chunk_delay`` apart, crashing after ``crash_after_chunks``."""
    for index, chunk in enumerate(chunks):
        crash_after = state.behaviour.crash_after_chunks
        if crash_after is not None and index >= crash_after:
            raise StubCrash(f"configured to crash after {crash_after} chunks")
        if index:
            await pause(request, state.behaviour.chunk_delay)
        yield chunk


class _Exchange:
    """One request/response seen by the middleware.

    The app gets a ``receive`` that replays the already-read body and then only reports
    the disconnect, and a ``send`` that notes when the response completed, so the
    middleware is the single reader of the real connection.
    """

    def __init__(
        self, body: bytes, receive: Receive, send: Send, answering: Callable[[], None]
    ) -> None:
        """`answering` is called once, just before the response's last bytes go out."""
        self.gone = asyncio.Event()
        self.finished = False
        self._body: bytes | None = body
        self._receive = receive
        self._send = send
        self._answering: Callable[[], None] | None = answering

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone.is_set():
            # uvicorn silently drops writes to a closed connection; stop the app instead
            # so a finished-looking stream is never counted as delivered.
            raise ClientGone
        last = message["type"] == "http.response.body" and not message.get("more_body", False)
        if last and self._answering is not None:
            # Before the bytes go: the client may send its next call as soon as they arrive,
            # and that call must not find this one still counted in flight.
            self._answering()
            self._answering = None
        await self._send(message)
        if last:
            self.finished = True

    async def watch(self) -> None:
        """Set ``gone`` when the server reports the connection closed.

        After the response is complete uvicorn reports a disconnect immediately; that case
        is told apart by ``finished``.
        """
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone.set()


async def _read_body(receive: Receive) -> bytes | None:
    """Read the whole request body, or ``None`` if the client left while sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class TrackingMiddleware:
    """Record protocol requests and count how each one ended (completed or abandoned)."""

    def __init__(self, app: ASGIApp, state: StubState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path == CONTROL_PREFIX
            or path.startswith(f"{CONTROL_PREFIX}/")
        ):
            await self.app(scope, receive, send)
            return
        state = self.state
        body = await _read_body(receive)
        if body is None:
            state.disconnected += 1
            return
        entry = state.record(scope, body)
        # Every protocol's inference routes are POSTs; probes and listings are GET/HEAD.
        inference = scope["method"] == "POST"
        answered = False

        def answering() -> None:
            nonlocal answered
            answered = True
            state.answering(inference=inference)

        exchange = _Exchange(body, receive, send, answering)
        scope[_GONE_KEY] = exchange.gone
        watcher = asyncio.create_task(exchange.watch())
        state.started(inference=inference)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except ClientGone:
            pass
        finally:
            watcher.cancel()
            state.finished(
                entry,
                inference=inference and not answered,
                completed=exchange.finished,
                disconnected=exchange.gone.is_set(),
            )
