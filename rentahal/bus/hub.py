"""The in-process bus: every open WebSocket, by user, and fan-out to them.

Each connection has its own bounded outbox drained by its own writer task, so a broadcast
never waits on a slow client, and a client that stops reading is dropped instead of growing
the broker's memory. A user may have many connections (tabs, devices); all get their events.
A broadcast goes only to the connections that hear its topic (`rentahal.bus.topics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from pydantic_core import PydanticSerializationError
from starlette.websockets import WebSocket, WebSocketState

from rentahal.bus import topics
from rentahal.bus.events import Outbound
from rentahal.bus.topics import Topic
from rentahal.store import User

log = structlog.get_logger(__name__)

OUTBOX_LIMIT = 1000
# Query ids a connection remembers having sent the final event of: a repeat comes only from
# a reconnect's replay racing the live result, so the latest suffice, and a connection that
# runs for days does not grow with every query it ever made.
FINALS_REMEMBERED = 256


def topic_of(event: Outbound | dict[str, Any]) -> Topic | None:
    """The topic a broadcast of the event goes to (a raw dict has none: everybody hears it)."""
    return event.topic if isinstance(event, Outbound) else None


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
        # The latest queries whose final event this connection got, oldest first.
        self._finished: dict[str, None] = {}
        self.close_code = 1000
        self.close_reason = ""
        # When it opened, and when the client last sent anything (`rentahal.bus.heartbeat`
        # pings it from one interval after it opened, and drops it when it falls silent).
        self.opened_at = self.last_heard = time.monotonic()
        # Called with the user's new account row when it changes (a new role, registered),
        # so the session behind this connection acts on it at once (`Hub.user_changed`).
        self.on_user_changed: Callable[[User], None] | None = None
        # Stores the connection's guest if it is not stored yet (`Hub.store_user`).
        self.store_user: Callable[[], Awaitable[None]] | None = None
        # The guest behind this connection while it is not stored: sysops see it among the
        # users (and may ban it) though it has no row yet.
        self.unstored_guest: User | None = None
        self._topics: frozenset[Topic] | None = None  # None: every topic it may see

    @property
    def topics(self) -> frozenset[Topic]:
        """The topics this connection hears: what it subscribed to, or else every topic its
        role may see (so a promotion or demotion changes the default at once)."""
        if self._topics is None:
            return topics.visible(sysop=self.is_sysop)
        return self._topics

    def subscribe(self, names: Iterable[str]) -> frozenset[Topic]:
        """Hear only these topics (and `queries`) from now on; raises `ProtocolError` for an
        unknown topic or a sysop topic asked by anyone else. Returns the topics in effect."""
        self._topics = topics.chosen(names, sysop=self.is_sysop)
        return self._topics

    def hears(self, topic: Topic | None) -> bool:
        """Whether a broadcast of this topic is for this connection (an event with no topic,
        a raw dict, is for everybody)."""
        return topic is None or topic in self.topics

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

    def send_final(self, query_id: str, event: Outbound | str) -> bool:
        """Send a query's final event once per connection: a result that finishes while the
        user reconnects is found both live and among the missed ones."""
        if query_id in self._finished:
            return True
        self._finished[query_id] = None
        if len(self._finished) > FINALS_REMEMBERED:
            del self._finished[next(iter(self._finished))]
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


class Watch:
    """One query's events as the hub sends them, typed, from the moment it is made until
    `close`: in-process readers (REST, the OpenAI API, intents) take the events themselves,
    and a socket encodes what it sends on."""

    def __init__(self, watchers: dict[str, set[Watch]], query_id: str) -> None:
        self.query_id = query_id
        self._watchers = watchers
        self._events: asyncio.Queue[Outbound] = asyncio.Queue(OUTBOX_LIMIT)
        watchers.setdefault(query_id, set()).add(self)

    def put(self, event: Outbound) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a watcher that stopped reading
            self._events.put_nowait(event)

    async def get(self) -> Outbound:
        return await self._events.get()

    def close(self) -> None:
        """Stop watching (again is harmless)."""
        watchers = self._watchers.get(self.query_id, set())
        watchers.discard(self)
        if not watchers:
            self._watchers.pop(self.query_id, None)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Hub:
    """Who is connected, and sending events to one user, the sysops, or everybody.

    Besides WebSockets, a query's events can be watched by id (`watch`: REST clients
    streaming one query's answer, the OpenAI API, intents); watchers get every event that
    names the query, as the event object."""

    def __init__(self) -> None:
        self._by_user: dict[str, set[Connection]] = {}
        self._watchers: dict[str, set[Watch]] = {}

    def watch(self, query_id: str) -> Watch:
        """The events of one query as they are sent, until the watch is closed."""
        return Watch(self._watchers, query_id)

    def send_watchers(self, event: Outbound | dict[str, Any]) -> None:
        """Only to those watching the event's query (not to its owner's connections)."""
        self._to_watchers(event)

    def _to_watchers(self, event: Outbound | dict[str, Any]) -> None:
        """A typed event that names a query, to its watchers (a raw dict names none)."""
        query_id = getattr(event, "query_id", None)
        if not isinstance(event, Outbound) or not query_id:
            return
        for watch in list(self._watchers.get(query_id, ())):
            watch.put(event)

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

    @property
    def connected_count(self) -> int:
        """How many users are connected (without listing them)."""
        return len(self._by_user)

    def connections(self) -> Iterable[Connection]:
        for connections in list(self._by_user.values()):
            yield from list(connections)

    def unstored_guests(self) -> list[User]:
        """Connected guests that have no row yet, once each."""
        guests = {
            c.unstored_guest.id: c.unstored_guest for c in self.connections() if c.unstored_guest
        }
        return list(guests.values())

    def is_connected(self, user_id: str) -> bool:
        return bool(self._by_user.get(user_id))

    def send_user(self, user_id: str, event: Outbound | dict[str, Any]) -> bool:
        """True if at least one of the user's connections took the event (encoded only if
        the user has one: most API queries' owners have none)."""
        self._to_watchers(event)
        return self.is_connected(user_id) and self.deliver(user_id, encode(event))

    def deliver(self, user_id: str, text: str) -> bool:
        """An encoded event to every connection of the user; True if one took it."""
        delivered = False
        for connection in list(self._by_user.get(user_id, ())):
            delivered = connection.send(text) or delivered
        return delivered

    def send_final(self, user_id: str, query_id: str, event: Outbound) -> bool:
        """`Connection.send_final` on each of the user's connections; True if any took it."""
        self._to_watchers(event)
        return self.is_connected(user_id) and self.deliver_final(user_id, query_id, encode(event))

    def deliver_final(self, user_id: str, query_id: str, text: str) -> bool:
        delivered = False
        for connection in list(self._by_user.get(user_id, ())):
            delivered = connection.send_final(query_id, text) or delivered
        return delivered

    def broadcast(self, event: Outbound | dict[str, Any], *, sysops_only: bool = False) -> None:
        """To every connection that hears the event's topic (only sysops', if asked)."""
        self.deliver_all(encode(event), topic_of(event), sysops_only=sysops_only)

    def deliver_all(self, text: str, topic: Topic | None, *, sysops_only: bool = False) -> None:
        for connection in self.connections():
            if (connection.is_sysop or not sysops_only) and connection.hears(topic):
                connection.send(text)

    def broadcast_by_role(
        self, *, sysops: Outbound | dict[str, Any], others: Outbound | dict[str, Any]
    ) -> None:
        """One event in two versions: the full one for sysops, a redacted one for the rest."""
        self.deliver_by_role((encode(sysops), topic_of(sysops)), (encode(others), topic_of(others)))

    def deliver_by_role(
        self, sysops: tuple[str, Topic | None], others: tuple[str, Topic | None]
    ) -> None:
        for connection in self.connections():
            text, topic = sysops if connection.is_sysop else others
            if connection.hears(topic):
                connection.send(text)

    def user_changed(self, user_id: str, user: User) -> int:
        """Hand a user's changed account to each of their connections; returns how many."""
        connections = list(self._by_user.get(user_id, ()))
        for connection in connections:
            if connection.on_user_changed is not None and not connection.closed.is_set():
                connection.on_user_changed(user)
        return len(connections)

    async def store_user(self, user_id: str) -> None:
        """Have a connected guest that is not stored yet stored, through its connection: a
        sysop's ban or new role must outlive the connection (guests are stored lazily)."""
        for connection in list(self._by_user.get(user_id, ())):
            if connection.store_user is not None:
                await connection.store_user()
                return

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close every connection of a user (a ban); returns how many were open."""
        connections = list(self._by_user.get(user_id, ()))
        for connection in connections:
            connection.close(code, reason)
        return len(connections)
