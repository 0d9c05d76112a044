"""How many WebSockets the broker holds open: the bus, and outbound workers, each in its room.

`ConnectionLimits` wraps the whole ASGI application (`rentahal serve` installs it) and counts
the open sockets of each room from their handshake to their end:

- `/ws`, the bus: `max_connections` in all and `max_connections_per_ip` from one client
  address (as `client_address` sees it: behind a trusted proxy, the forwarded one).
- `/ws/worker`, outbound workers: `max_worker_connections`, counted apart so that users
  filling the bus cannot lock the workers out (nor the other way round).

A socket over its room's limit is refused at the handshake with an HTTP denial response: 503
`unavailable` when the room is full, 429 `rate_limited` when its address has its share, both
with `Retry-After` and a JSON body `{code, message}` (close code 1013 where the server cannot
send a denial response). The bus defers that refusal to its endpoint, which lets a sysop in
anyway (the sysop is whom an operator needs during a flood) and refuses everyone else; the
count holds whoever is let in, so the room never forgets a socket.

Plain HTTP is bounded by uvicorn's `limit_concurrency` (see `http_concurrency_limit`).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from rentahal.api.security import client_address
from rentahal.config import Settings
from rentahal.core.errors import ErrorCode
from rentahal.limits import ConnectionSlots, Over

BUS_PATH = "/ws"
WORKER_PATH = "/ws/worker"
# The scope key under which a bus socket over its limit carries its refusal to the endpoint.
OVER_LIMIT = "rentahal.over_limit"
RETRY_AFTER = 10  # seconds: a guess at when some socket will have closed
TRY_AGAIN_LATER = 1013  # RFC 6455's close code for a server that cannot serve just now


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a WebSocket is turned away at its handshake, and how to say it."""

    status: int
    code: ErrorCode
    message: str
    close_code: int = TRY_AGAIN_LATER  # when the server cannot answer the handshake itself
    retry_after: int | None = RETRY_AFTER

    async def send(self, websocket: WebSocket) -> None:
        """An HTTP denial response to the handshake, so a client sees the status and the
        reason; a close code where the server cannot send one."""
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
            body = {"code": self.code, "message": self.message}
            response = JSONResponse(body, status_code=self.status, headers=headers)
            await websocket.send_denial_response(response)
        else:
            await websocket.close(code=self.close_code, reason=self.message[:120])


def refusal_for(over: Over, room: str, slots: ConnectionSlots) -> Refusal:
    if over == "key":
        return Refusal(
            429,
            ErrorCode.RATE_LIMITED,
            f"too many {room} connections from your address (at most {slots.per_key}); "
            "close one and try again",
        )
    return Refusal(
        503,
        ErrorCode.UNAVAILABLE,
        f"the broker has as many {room} connections as it takes ({slots.limit}); try again later",
    )


class ConnectionLimits:
    """The ASGI middleware that keeps the rooms (see the module's docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        bus = ConnectionSlots(settings.max_connections, per_key=settings.max_connections_per_ip)
        self.rooms = {
            BUS_PATH: ("bus", bus),
            WORKER_PATH: ("worker", ConnectionSlots(settings.max_worker_connections)),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        room = self.rooms.get(scope["path"]) if scope["type"] == "websocket" else None
        if room is None:
            await self.app(scope, receive, send)
            return
        name, slots = room
        address = client_address(HTTPConnection(scope))
        over = slots.take(address)
        try:
            if over is None:
                await self.app(scope, receive, send)
            elif scope["path"] == BUS_PATH:
                await self.app({**scope, OVER_LIMIT: refusal_for(over, name, slots)}, receive, send)
            else:
                await refusal_for(over, name, slots).send(WebSocket(scope, receive, send))
        finally:
            slots.release(address)


def http_concurrency_limit(settings: Settings) -> int:
    """uvicorn's `limit_concurrency`: over it, a new HTTP request is answered 503 at once.

    uvicorn counts every connection it holds, the WebSockets included (though it never refuses
    a WebSocket handshake itself), so the limit is both rooms plus `max_http_connections`: a
    full bus leaves HTTP its share, and the process as a whole stays bounded."""
    rooms = settings.max_connections + settings.max_worker_connections
    return rooms + settings.max_http_connections
