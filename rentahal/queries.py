"""A query's life as every transport sees it: submit, wait for the outcome, stream the events.

The bus, REST, the OpenAI API and intents differ in how they speak, not in what a query is, so
they share this one service: a query goes in through admission (`rentahal.admission`), its
outcome is the scheduler's own object, and its events are the hub's typed events, encoded to
JSON only by whichever socket sends them on.

The scheduler updates the `Query` it returned from `submit` in place as the query moves on, so
an outcome read from that object needs no store read — a read that a store outage could fail
after the job ran, telling the client it failed when it did not. The service keeps a weak
reference to each query it submitted for that, and reads the store only for queries it no
longer holds (submitted before a restart, or by a caller that let the object go).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Sequence
from functools import partial
from typing import Protocol

from rentahal.admission import Admission
from rentahal.auth import Principal
from rentahal.bus.events import Outbound
from rentahal.bus.hub import Hub, Watch
from rentahal.bus.views import final_event
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.ports import Cancelling
from rentahal.core.specs import QuerySpec
from rentahal.core.vocabulary import UNFINISHED_STATES
from rentahal.scheduler.scheduler import Scheduler
from rentahal.store import Query, Store


class Queries:
    """Submit, wait, stream, cancel and list queries, for any transport."""

    def __init__(
        self,
        admission: Admission,
        scheduler: Scheduler,
        store: Store,
        hub: Hub,
        *,
        cancelling: Cancelling | None = None,
        shared: bool = False,
    ) -> None:
        """`cancelling`: who stops a query (default: the scheduler, in this process).
        `shared`: the realms' lines are shared between brokers (`rentahal.cluster`), so
        a query may run on another broker; its outcome is then read from the store, once its
        final event has come (the hub hands on other brokers' events)."""
        self._admission = admission
        self._scheduler = scheduler
        self._store = store
        self._hub = hub
        self._shared = shared
        self._cancelling = cancelling or scheduler
        self._live: weakref.WeakValueDictionary[str, Query] = weakref.WeakValueDictionary()

    async def submit(
        self,
        principal: Principal,
        spec: QuerySpec,
        *,
        counted: bool = False,
        hops: Sequence[str] = (),
    ) -> tuple[Query, int]:
        """Queue the query as the caller, if admission lets them; returns it and its place in
        line. `counted`: the request was already counted against the caller's limits (an
        intent that goes on to queue a query); the key's scopes still apply. `hops`: the
        installations a query forwarded by federation has been through.

        Nothing awaits between the scheduler accepting the query and the return, so a
        caller that calls `stream` right after misses none of its events."""
        admit = self._admission.queue_counted if counted else self._admission.submit
        query, position = await admit(principal, spec, hops=hops)
        if not self._shared:
            self._live[query.id] = query
        return query, position

    async def get(self, query_id: str, *, with_media: bool = False) -> Query | None:
        """The query as it is now: the scheduler's own object while this service holds it,
        else the stored row (its images and audio loaded if `with_media`)."""
        if (query := self._live.get(query_id)) is not None:
            return query
        return await self._store.queries.get(query_id, with_media=with_media)

    async def outcome(self, query_id: str, within: float) -> Query:
        """The query once it has finished, or as it is when `within` seconds have passed
        (then still unfinished: the caller decides whether to cancel it)."""
        if self._shared:
            await self._final_event(query_id, within)
        else:
            await self._scheduler.wait_finished(query_id, within)
        query = await self.get(query_id, with_media=self._shared)
        if query is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such query")
        return query

    async def _final_event(self, query_id: str, within: float) -> None:
        """Wait for the query's final event, from whichever broker runs it (or the time)."""
        with self._hub.watch(query_id) as watch:
            if await self._ended(query_id, read_store=True) is not None:
                return
            deadline = asyncio.get_running_loop().time() + within
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    if (await asyncio.wait_for(watch.get(), left)).is_final:
                        return
                except TimeoutError:
                    return

    def stream(self, query_id: str, *, idle: float) -> QueryEvents:
        """The query's events from now to its final event (see `QueryEvents`)."""
        return QueryEvents(self._hub.watch(query_id), partial(self._ended, query_id), idle)

    async def cancel(self, query_id: str, *, reason: str, by_sysop: bool = False) -> bool:
        """Cancel the query if it is queued or running; False if it had already ended."""
        return await self._cancelling.cancel(query_id, reason=reason, by_sysop=by_sysop)

    async def history(self, user_id: str, limit: int) -> Sequence[Query]:
        """The user's latest queries, newest first."""
        return await self._store.queries.history(user_id, limit)

    async def _ended(self, query_id: str, *, read_store: bool) -> Outbound | None:
        """The final event of a query that has ended, or None while it runs. Without
        `read_store`, only a query this service holds is looked at (a stream's quiet
        moments: no store read that an outage could fail mid-stream)."""
        if read_store:
            query = await self.get(query_id, with_media=True)
        else:
            query = self._live.get(query_id)
        if query is None or query.state in UNFINISHED_STATES:
            return None
        return final_event(query, self._scheduler.vocabulary)


class Ended(Protocol):
    """The final event of a query that has ended, or None (`Queries._ended`)."""

    def __call__(self, *, read_store: bool) -> Awaitable[Outbound | None]: ...


class QueryEvents:
    """One query's events as the hub sends them, typed, ending with its final event.

    The watch starts when this is made, so an event sent after `Queries.stream` returns is
    not missed; a query that has already ended gives its final event at once. After `idle`
    seconds of quiet the iteration yields None, so a transport can keep its connection
    alive (and, having waited long enough, cancel the query). A final event the hub could
    not hand over (a watcher far behind) is found then too, from the scheduler's object.

    Iterate once. The watch ends with the final event, or at `close`: call it when the
    iteration may be abandoned before that (a client gone mid-stream)."""

    def __init__(self, watch: Watch, ended: Ended, idle: float) -> None:
        self._watch = watch
        self._ended = ended
        self._idle = idle

    def __aiter__(self) -> AsyncIterator[Outbound | None]:
        return self._events()

    def close(self) -> None:
        self._watch.close()

    async def _events(self) -> AsyncIterator[Outbound | None]:
        try:
            if (final := await self._ended(read_store=True)) is not None:
                yield final
                return
            while True:
                try:
                    event = await asyncio.wait_for(self._watch.get(), self._idle)
                except TimeoutError:
                    if (final := await self._ended(read_store=False)) is not None:
                        yield final
                        return
                    yield None
                    continue
                yield event
                if event.is_final:
                    return
        finally:
            self.close()
