"""The bus endpoint `/ws`: authenticates, greets, then reads messages and answers them.

A malformed, unknown, invalid or oversized message gets an `error` reply and the connection
stays usable. Sysop message types are refused centrally for everyone else.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.websockets import WebSocket

from rentahal.admin.users import BANNED_CLOSE_CODE
from rentahal.api.connections import OVER_LIMIT, TRY_AGAIN_LATER, Refusal
from rentahal.api.security import client_address, origin_allowed, session_cookie_header
from rentahal.auth import Principal
from rentahal.auth.nicknames import TAKEN, check_nickname
from rentahal.broker import Broker
from rentahal.bus import events
from rentahal.bus import messages as m
from rentahal.bus.hub import Connection
from rentahal.bus.views import final_event, query_view, user_view
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.specs import QuerySpec
from rentahal.store import NicknameTaken, Role, User, is_outage
from rentahal.store.outage import RETRY_AFTER as STORE_RETRY_AFTER

log = structlog.get_logger(__name__)

UNAUTHORIZED_CLOSE_CODE = 4401

Reply = events.Outbound | None

# What a guest not stored yet may do and stay unstored: read, and keep the line up. Any other
# message stores it first (`BusSession._store_guest`), so a new message type needs no thought.
NEEDS_NO_ACCOUNT: frozenset[type[m.Inbound]] = frozenset(
    {m.Ping, m.Pong, m.ListIntents, m.GetPreviousQueries, m.Subscribe, m.CancelQuery}
)


async def websocket_endpoint(websocket: WebSocket) -> None:
    broker: Broker = websocket.app.state.broker
    if not origin_allowed(websocket.headers, broker.settings):
        await websocket.close(code=1008, reason="origin not allowed")
        return
    # Lazy: a guest is stored when it first acts (`BusSession._store_guest`), not for a socket.
    try:
        principal = await broker.auth.authenticate(websocket.headers, websocket.cookies, lazy=True)
    except ProtocolError as refusal:  # banned: said on an open socket, so the page can show it
        await websocket.accept()
        await websocket.send_json(events.Error(code=refusal.code, message=refusal.message).wire())
        await websocket.close(BANNED_CLOSE_CODE, "banned")
        return
    except Exception as exc:
        if not is_outage(exc):
            raise
        broker.store.health.failed(exc)
        await UNAVAILABLE_AT_HANDSHAKE.send(websocket)
        return
    if principal is not None and principal.is_peer_key:
        await refuse(websocket, "a peer key is for the federation routes")
        return
    over_limit: Refusal | None = websocket.scope.get(OVER_LIMIT)
    if over_limit is not None and (principal is None or not principal.is_sysop):
        await over_limit.send(websocket)  # a sysop gets in over the limits, nobody else
        return
    accept_headers: list[tuple[bytes, bytes]] = []
    if principal is None:
        if "authorization" in websocket.headers:
            await refuse(websocket, "invalid API key")
            return
        guest = broker.auth.new_guest()
        principal = guest.principal
        cookie = session_cookie_header(guest.cookie, broker.settings, websocket.url.scheme)
        accept_headers.append((b"set-cookie", cookie.encode("latin-1")))
    await websocket.accept(headers=accept_headers)
    await BusSession(broker, websocket, principal.seen_at(client_address(websocket))).run()


async def refuse(websocket: WebSocket, message: str) -> None:
    """A credential that is no good: HTTP 401 at the handshake, so a client can tell it from a
    refused origin (403); close code 4401 where the server cannot answer the handshake."""
    refusal = Refusal(
        401, ErrorCode.UNAUTHORIZED, message, close_code=UNAUTHORIZED_CLOSE_CODE, retry_after=None
    )
    await refusal.send(websocket)


VOCABULARY = events.Vocabulary()
STORE_DOWN = "the broker's database is unavailable just now; try again shortly"
# Who is connecting is in the store: with the store down, the handshake itself is refused.
UNAVAILABLE_AT_HANDSHAKE = Refusal(
    503, ErrorCode.UNAVAILABLE, STORE_DOWN, retry_after=math.ceil(STORE_RETRY_AFTER)
)


def unavailable_error(response_to: str | int | None) -> events.Error:
    """The reply to a message the broker could not handle because its store is down; the
    socket stays open, and the same message later may succeed."""
    return events.Error(
        code=ErrorCode.UNAVAILABLE,
        message=STORE_DOWN,
        response_to=response_to,
        retry_after=STORE_RETRY_AFTER,
    )


class BusSession:
    """One client connection's conversation with the broker."""

    def __init__(self, broker: Broker, websocket: WebSocket, principal: Principal) -> None:
        self.broker = broker
        self.websocket = websocket
        self.user = principal.user
        self.principal = principal
        self.connection = Connection(websocket, self.user.id, is_sysop=principal.is_sysop)
        self.connection.on_user_changed = self._user_changed
        self.connection.store_user = self._store_guest
        self.connection.unstored_guest = None if principal.is_stored else self.user

    @property
    def is_sysop(self) -> bool:
        return self.connection.is_sysop

    def send(self, event: events.Outbound) -> None:
        self.connection.send(event)

    async def run(self) -> None:
        hub = self.broker.hub
        self.connection.start()
        hub.add(self.connection)
        try:
            try:
                await self._connected()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                # Greeting needs the store: say why, and let the client come back later.
                self.broker.store.health.failed(exc)
                self.send(unavailable_error(None))
                self.connection.close(TRY_AGAIN_LATER, "the database is unavailable")
                return
            await self._read_loop()
        finally:
            hub.remove(self.connection)
            self.connection.close(self.connection.close_code, self.connection.close_reason)
            await self.connection.wait_written()
            self.broker.dashboard.users_changed()
            self.broker.metrics.connected_users.set(hub.connected_count)

    async def _connected(self) -> None:
        broker = self.broker
        if self.principal.is_stored:
            await broker.store.users.touch(self.user.id)
        await broker.store.stats.record_connected_users(broker.hub.connected_count)
        self.send(VOCABULARY)
        self.send(events.UserInfo(data=user_view(self.user)))
        self.send(await self._previous_queries(10))
        self.send(events.QueueUpdate(depth=broker.scheduler.depth, total=len(broker.registry)))
        self.send(broker.workers_event(for_sysop=self.is_sysop))
        self.send(broker.pools_event())
        self.send(await broker.huggingface.update_event())
        self.send(broker.intents.menu())
        if self.is_sysop:
            self.send(await broker.dashboard.system_stats())
            self.send(await broker.dashboard.user_stats())
            self.send(broker.dashboard.worker_health())
            self.send(broker.dashboard.active_users())
        broker.dashboard.users_changed()
        broker.metrics.connected_users.set(broker.hub.connected_count)
        await self._deliver_missed_results()

    async def _deliver_missed_results(self) -> None:
        """Results that finished while the user was away (SPEC §3: nothing is lost). They
        are marked delivered before they are sent, as a live result is when its owner is
        connected: a connection opened just after this one's greeting must not be sent them
        again (it would, if it read the store before the mark was committed)."""
        if not self.principal.is_stored:
            return  # a guest not stored yet has asked nothing
        missed = await self.broker.store.queries.undelivered(self.user.id)
        if not missed:
            return
        await self.broker.store.queries.mark_delivered([q.id for q in missed])
        vocabulary = self.broker.scheduler.vocabulary
        for query in missed:
            self.connection.send_final(query.id, final_event(query, vocabulary))

    async def _read_loop(self) -> None:
        limit = self.broker.settings.max_message_size
        while True:
            frame = await self.websocket.receive()
            # Closed by the broker (a ban, missed heartbeats, a slow reader): its writer's
            # close makes `receive` answer a disconnect; frames read before it go unheard.
            if frame["type"] == "websocket.disconnect" or self.connection.closed.is_set():
                return
            self.connection.last_heard = time.monotonic()
            raw = frame.get("text") if frame.get("text") is not None else frame.get("bytes")
            if raw is None:
                continue
            # The limit is in bytes; a text frame may hold up to 4 bytes per character.
            size = len(raw.encode()) if isinstance(raw, str) and len(raw) * 4 > limit else len(raw)
            if size > limit:
                self.send(
                    events.Error(
                        code=ErrorCode.TOO_LARGE,
                        message=f"message of {size} bytes is over the {limit}-byte limit; "
                        "send large images and audio in chunks or by HTTP upload",
                    )
                )
                continue
            await self._handle(raw)

    async def _handle(self, raw: str | bytes) -> None:
        message_id: str | int | None = None
        try:
            message = m.parse_message(raw, sysop=self.is_sysop)
            message_id = message.id
            if type(message) not in NEEDS_NO_ACCOUNT:
                await self._store_guest()
            reply = await HANDLERS[type(message)](self, message)
            if reply is not None:
                self.send(reply.model_copy(update={"response_to": message_id}))
        except ProtocolError as exc:
            self.send(
                events.Error(
                    code=exc.code,
                    message=exc.message,
                    response_to=exc.response_to if exc.response_to is not None else message_id,
                    retry_after=exc.retry_after,
                )
            )
        except Exception as exc:
            if is_outage(exc):
                self.broker.store.health.failed(exc)
                self.send(unavailable_error(message_id))
                return
            log.exception("ws.handler_failed", user_id=self.user.id)
            self.send(
                events.Error(
                    code=ErrorCode.INTERNAL, message="internal error", response_to=message_id
                )
            )

    # --- user messages ---------------------------------------------------------------------

    async def on_set_nickname(self, message: m.SetNickname) -> Reply:
        nickname = message.nickname
        check_nickname(
            nickname, self.broker.settings.max_nickname_chars, current=self.user.nickname
        )
        existing = await self.broker.store.users.get_by_nickname(nickname)
        if existing is not None and existing.id != self.user.id:
            raise ProtocolError(ErrorCode.CONFLICT, TAKEN)
        try:
            await self.broker.store.users.set_nickname(self.user.id, nickname)
        except NicknameTaken:
            raise ProtocolError(ErrorCode.CONFLICT, TAKEN) from None
        self.user = await self.broker.store.users.get(self.user.id) or self.user
        return events.UserInfo(data=user_view(self.user))

    async def on_submit_query(self, message: m.SubmitQuery) -> Reply:
        return await self._submit(message.query)

    async def on_shorthand_query(
        self, message: m.Chat | m.Vision | m.SpeechToText | m.TextToSpeech
    ) -> Reply:
        return await self._submit(message.to_query())

    async def _submit(self, spec: QuerySpec) -> Reply:
        # A ban closes this connection at once, and a promotion updates the connection's
        # role, so the session's user is current without a read per query.
        if self.connection.closed.is_set():
            raise ProtocolError(ErrorCode.BANNED, "You are banned from submitting queries")
        query, position = await self.broker.queries.submit(self.principal, spec)
        if self.connection.closed.is_set() and self.connection.close_code == BANNED_CLOSE_CODE:
            # Banned while this query was being accepted, after the ban collected the
            # user's jobs (`Sysop.ban`): it must not run.
            await self.broker.queries.cancel(query.id, reason="user banned", by_sysop=True)
            raise ProtocolError(ErrorCode.BANNED, "You are banned from submitting queries")
        return events.QueryAccepted(query_id=query.id, position=position)

    async def _store_guest(self) -> None:
        """Store a guest not stored yet: it is about to do something that needs its rows."""
        if self.principal.is_stored:
            return
        shown = self.user.nickname
        self.principal = await self.broker.auth.save(self.principal)
        self.user = self.principal.user
        self.connection.unstored_guest = None
        if self.user.nickname != shown:  # the rare clash of short nicknames (`save_guest`)
            self.send(events.UserInfo(data=user_view(self.user)))

    def _user_changed(self, user: User) -> None:
        """The account changed (registered, promoted, demoted): act as it is now, without a
        reconnect, and tell the client. Called by `Hub.user_changed`."""
        was_sysop = self.is_sysop
        self.user = user
        self.principal = dataclasses.replace(self.principal, user=user)
        self.connection.is_sysop = self.principal.is_sysop
        self.send(events.UserInfo(data=user_view(user)))
        if self.is_sysop != was_sysop:
            # The worker list with or without addresses; a new sysop's panel also gets health.
            self.send(self.broker.workers_event(for_sysop=self.is_sysop))
            if self.is_sysop:
                self.send(self.broker.dashboard.worker_health())

    async def on_vision_chunk(self, message: m.VisionChunk) -> Reply:
        self.principal.check_query_scope(message.query_type)
        progress = self.broker.uploads.add(self.user.id, message)
        if progress.query is None:
            return events.VisionChunkReceived(
                image_id=message.image_id,
                chunk_id=message.chunk_id,
                received=progress.received,
                total_chunks=progress.total,
            )
        self.send(events.VisionUploadComplete(image_id=message.image_id, response_to=message.id))
        return await self._submit(progress.query)

    async def on_intent(self, message: m.Intent) -> Reply:
        if self.connection.closed.is_set():
            raise ProtocolError(ErrorCode.BANNED, "You are banned from submitting queries")
        await self.broker.admission.check(self.principal)
        return await self.broker.intents.run(self.principal, message)

    async def on_list_intents(self, message: m.ListIntents) -> Reply:
        return self.broker.intents.menu()

    async def on_subscribe(self, message: m.Subscribe) -> Reply:
        topics = self.connection.subscribe(message.topics)
        return events.Subscribed(topics=sorted(topics))

    async def on_get_previous_queries(self, message: m.GetPreviousQueries) -> Reply:
        return await self._previous_queries(message.limit)

    async def _previous_queries(self, limit: int) -> events.PreviousQueries:
        if not self.principal.is_stored:
            return events.PreviousQueries(data=[])  # a guest not stored yet has asked nothing
        history = await self.broker.queries.history(self.user.id, limit)
        return events.PreviousQueries(data=[query_view(q) for q in history])

    async def on_cancel_query(self, message: m.CancelQuery) -> Reply:
        query = await self.broker.queries.get(message.query_id)
        if query is None or query.user_id != self.user.id:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such query of yours")
        if not await self.broker.queries.cancel(query.id, reason="cancelled by its owner"):
            raise ProtocolError(ErrorCode.CONFLICT, f"the query is already {query.state}")
        # The query's own events follow as usual: query_status, then error(cancelled).
        return events.Ack(message=f"Cancelled query {query.id}")

    async def on_pong(self, message: m.Pong) -> Reply:
        return None

    async def on_ping(self, message: m.Ping) -> Reply:
        return events.Pong()

    # --- sysop messages (gated in _handle) --------------------------------------------------

    async def on_get_stats(self, message: m.GetStats) -> Reply:
        dashboard = self.broker.dashboard
        self.send(await dashboard.user_stats())
        self.send(dashboard.worker_health())
        self.send(dashboard.active_users())
        self.send(await dashboard.running_queries())
        self.send(await dashboard.stats_timeline())
        return await dashboard.system_stats()

    async def on_add_worker(self, message: m.AddWorker) -> Reply:
        await self.broker.catalog.add_worker(self.user, message.worker, owner_id=self.user.id)
        return events.Ack(message=f"Added worker: {message.worker.name}")

    async def on_remove_worker(self, message: m.RemoveWorker) -> Reply:
        await self.broker.catalog.remove_worker(self.user, message.worker_name)
        return events.Ack(message=f"Removed worker: {message.worker_name}")

    async def on_add_huggingface_model(self, message: m.AddHuggingfaceModel) -> Reply:
        await self.broker.huggingface.add(self.user, message.model)
        return events.Ack(message=f"Added Hugging Face model: {message.model.name}")

    async def on_remove_huggingface_model(self, message: m.RemoveHuggingfaceModel) -> Reply:
        await self.broker.huggingface.remove(self.user, message.model_name)
        return events.Ack(message=f"Removed Hugging Face model: {message.model_name}")

    async def on_ban_user(self, message: m.BanUser) -> Reply:
        await self.broker.user_admin.ban(self.user, message.user_guid)
        return events.Ack(message="User banned")

    async def on_unban_user(self, message: m.UnbanUser) -> Reply:
        await self.broker.user_admin.unban(self.user, message.user_guid)
        return events.Ack(message="User unbanned")

    async def on_set_role(self, message: m.SetRole) -> Reply:
        user = await self.broker.user_admin.set_role(
            self.user, message.user_guid, Role(message.role)
        )
        return events.Ack(message=f"{user.nickname} is now {user.role}")

    async def on_terminate_query(self, message: m.TerminateQuery) -> Reply:
        count = await self.broker.user_admin.terminate(
            self.user, user_id=message.user_guid, query_id=message.query_id
        )
        return events.Ack(message=f"Terminated {count} quer{'y' if count == 1 else 'ies'}")

    async def on_clear_queue(self, message: m.ClearQueue) -> Reply:
        count = await self.broker.queue_admin.clear(
            self.user, realm=message.realm, user_id=message.user_guid
        )
        return events.QueueCleared(
            cleared=count, message=f"Cleared {count} waiting quer{'y' if count == 1 else 'ies'}"
        )

    async def on_add_pool(self, message: m.AddPool) -> Reply:
        await self.broker.routing_admin.save_pool(self.user, message.pool, create=True)
        return events.Ack(message=f"Created pool {message.pool.name}")

    async def on_update_pool(self, message: m.UpdatePool) -> Reply:
        await self.broker.routing_admin.save_pool(self.user, message.pool, create=False)
        return events.Ack(message=f"Updated pool {message.pool.name}")

    async def on_remove_pool(self, message: m.RemovePool) -> Reply:
        await self.broker.routing_admin.remove_pool(self.user, message.name)
        return events.Ack(message=f"Removed pool {message.name}")

    async def on_sysop_message(self, message: m.SysopMessage) -> Reply:
        await self.broker.broadcaster.broadcast(self.user, message.message)
        return events.Ack(message="Message sent")


# The handler of each message type (one table for every session).
HANDLERS: dict[type[m.Inbound], Callable[[BusSession, Any], Awaitable[Reply]]] = {
    m.SetNickname: BusSession.on_set_nickname,
    m.SubmitQuery: BusSession.on_submit_query,
    m.Chat: BusSession.on_shorthand_query,
    m.Vision: BusSession.on_shorthand_query,
    m.SpeechToText: BusSession.on_shorthand_query,
    m.TextToSpeech: BusSession.on_shorthand_query,
    m.VisionChunk: BusSession.on_vision_chunk,
    m.Intent: BusSession.on_intent,
    m.ListIntents: BusSession.on_list_intents,
    m.Subscribe: BusSession.on_subscribe,
    m.GetPreviousQueries: BusSession.on_get_previous_queries,
    m.CancelQuery: BusSession.on_cancel_query,
    m.Pong: BusSession.on_pong,
    m.Ping: BusSession.on_ping,
    m.GetStats: BusSession.on_get_stats,
    m.AddWorker: BusSession.on_add_worker,
    m.RemoveWorker: BusSession.on_remove_worker,
    m.AddHuggingfaceModel: BusSession.on_add_huggingface_model,
    m.RemoveHuggingfaceModel: BusSession.on_remove_huggingface_model,
    m.BanUser: BusSession.on_ban_user,
    m.UnbanUser: BusSession.on_unban_user,
    m.SetRole: BusSession.on_set_role,
    m.TerminateQuery: BusSession.on_terminate_query,
    m.ClearQueue: BusSession.on_clear_queue,
    m.AddPool: BusSession.on_add_pool,
    m.UpdatePool: BusSession.on_update_pool,
    m.RemovePool: BusSession.on_remove_pool,
    m.SysopMessage: BusSession.on_sysop_message,
}
