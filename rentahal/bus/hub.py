"""The in-process bus: every open WebSocket, by user, and fan-out to them.

Each connection has its own bounded outbox drained by its own writer task, so a broadcast
never waits on a slow client, and a client that stops reading is dropped instead of growing
the broker's memory. A user may have many connections (tabs, devices); all get their events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import structlog
from pydantic_core import PydanticSerializationError
from starlette.websockets import WebSocket, WebSocketState

from rentahal.bus.events import Outbound
from rentahal.store import User

log = structlog.get_logger(__name__)

OUTBOX_LIMIT = 1000


def encode(event: Outbound | dict[str, Any]) -> str:
    """The event as JSON text. Text with a lone surrogate (a worker may send one, escaped in
    its JSON) has no UTF-8 form: it goes out escaped, as JSON allows, instead of failing."""
    if isinstance(event, Outbound):
        try:
            return event.wire_json()
        except PydanticSerializationError:
            return json.dumps(event.wire(), separators=(",", ":"))
    return json.dumps(event, separators=(",", ":"))


class Connection:
    """One client WebSocket and its outbox."""

    def __init__(self, websocket: WebSocket, user_id: str, *, is_sysop: bool) -> None:
        self.websocket = websocket
        self.user_id = user_id
        self.is_sysop = is_sysop
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue(OUTBOX_LIMIT)
        self._writer: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self._finished: set[str] = set()  # queries whose final event this connection got
        self.close_code = 1000
        self.close_reason = ""
        # Called with the user's new account row when it changes (a new role, registered),
        # so the session behind this connection acts on it at once (`Hub.user_changed`).
        self.on_user_changed: Callable[[User], None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.user_id}")

    def send(self, event: Outbound | dict[str, Any] | str) -> bool:
        """Queue an event; False if the connection is closed or too far behind (then closed)."""
        if self.closed.is_set():
            return False
        text = event if isinstance(event, str) else encode(event)
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("ws.slow_consumer_dropped", user_id=self.user_id)
            self.close(1013, "too slow: outbox full")
            return False
        return True

    def send_final(self, query_id: str, event: Outbound) -> bool:
        """Send a query's final event once per connection: a result that finishes while the
        user reconnects is found both live and among the missed ones."""
        if query_id in self._finished:
            return True
        self._finished.add(query_id)
        return self.send(event)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close after the events already queued have been written."""
        if self.closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self.closed.set()
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(None)
        if self._outbox.full() and self._writer is not None:
            self._writer.cancel()

    async def _write_loop(self) -> None:
        try:
            while (text := await self._outbox.get()) is not None:
                await self.websocket.send_text(text)
        except Exception:  # the socket went away under us; the reader will notice too
            self.closed.set()
        finally:
            if self.websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.websocket.close(self.close_code, self.close_reason)

    async def wait_written(self) -> None:
        """Wait for the writer to finish (after `close`)."""
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer


class Hub:
    """Who is connected, and sending events to one user, the sysops, or everybody.

    Besides WebSockets, a query's events can be watched by id (REST clients streaming one
    query's answer); watchers get a copy of every event that names the query."""

    def __init__(self) -> None:
        self._by_user: dict[str, set[Connection]] = {}
        self._watchers: dict[str, set[asyncio.Queue[str]]] = {}

    @contextlib.contextmanager
    def watch(self, query_id: str) -> Iterator[asyncio.Queue[str]]:
        """The events of one query, encoded, as they are sent, while the block runs."""
        events: asyncio.Queue[str] = asyncio.Queue(OUTBOX_LIMIT)
        self._watchers.setdefault(query_id, set()).add(events)
        try:
            yield events
        finally:
            watchers = self._watchers.get(query_id, set())
            watchers.discard(events)
            if not watchers:
                self._watchers.pop(query_id, None)

    def send_watchers(self, event: Outbound | dict[str, Any]) -> None:
        """Only to those watching the event's query (not to its owner's connections)."""
        self._to_watchers(event, encode(event))

    def _to_watchers(self, event: Outbound | dict[str, Any], text: str) -> None:
        query_id = (
            event.get("query_id") if isinstance(event, dict) else getattr(event, "query_id", None)
        )
        for events in self._watchers.get(str(query_id), ()) if query_id else ():
            with contextlib.suppress(asyncio.QueueFull):  # a watcher that stopped reading
                events.put_nowait(text)

    def add(self, connection: Connection) -> None:
        self._by_user.setdefault(connection.user_id, set()).add(connection)

    def remove(self, connection: Connection) -> None:
        connections = self._by_user.get(connection.user_id)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self._by_user[connection.user_id]

    @property
    def connected_users(self) -> list[str]:
        return list(self._by_user)

    def connections(self) -> Iterable[Connection]:
        for connections in list(self._by_user.values()):
            yield from list(connections)

    def is_connected(self, user_id: str) -> bool:
        return bool(self._by_user.get(user_id))

    def send_user(self, user_id: str, event: Outbound | dict[str, Any]) -> bool:
        """True if at least one of the user's connections took the event."""
        text = encode(event)
        self._to_watchers(event, text)
        delivered = False
        for connection in list(self._by_user.get(user_id, ())):
            delivered = connection.send(text) or delivered
        return delivered

    def send_final(self, user_id: str, query_id: str, event: Outbound) -> bool:
        """`Connection.send_final` on each of the user's connections; True if any took it."""
        self._to_watchers(event, encode(event))
        delivered = False
        for connection in list(self._by_user.get(user_id, ())):
            delivered = connection.send_final(query_id, event) or delivered
        return delivered

    def broadcast(self, event: Outbound | dict[str, Any], *, sysops_only: bool = False) -> None:
        text = encode(event)
        for connection in self.connections():
            if connection.is_sysop or not sysops_only:
                connection.send(text)

    def broadcast_by_role(
        self, *, sysops: Outbound | dict[str, Any], others: Outbound | dict[str, Any]
    ) -> None:
        """One event in two versions: the full one for sysops, a redacted one for the rest."""
        sysop_text, other_text = encode(sysops), encode(others)
        for connection in self.connections():
            connection.send(sysop_text if connection.is_sysop else other_text)

    def user_changed(self, user_id: str, user: User) -> int:
        """Hand a user's changed account to each of their connections; returns how many."""
        connections = list(self._by_user.get(user_id, ()))
        for connection in connections:
            if connection.on_user_changed is not None and not connection.closed.is_set():
                connection.on_user_changed(user)
        return len(connections)

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close every connection of a user (a ban); returns how many were open."""
        connections = list(self._by_user.get(user_id, ()))
        for connection in connections:
            connection.close(code, reason)
        return len(connections)
