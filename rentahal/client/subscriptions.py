"""Fan-out of broker events to the program: callbacks (`subscribe`) and async iterators
(`events()`), so a program can watch the realm (queue depth, workers, sysop messages…).

Each iterator has its own bounded buffer: a consumer that stops reading loses its oldest
events (and is told how many) instead of growing the client's memory without end. A failing
callback is logged and never stops the reader that feeds every other consumer.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Self

from rentahal.client.errors import RentahalError
from rentahal.client.results import Event

log = logging.getLogger("rentahal.client")

Handler = Callable[[Event], Awaitable[None] | None]
ALL = "*"


class EventStream:
    """An async iterator over the events the broker sends from now on (optionally only some
    types). Use it in `async with` or call `close()` when done, so it stops buffering."""

    def __init__(self, hub: Subscriptions, types: Iterable[str], maxsize: int) -> None:
        self._hub = hub
        self.types = frozenset(types)
        self._buffer: collections.deque[Event] = collections.deque()
        self._maxsize = maxsize
        self._arrived = asyncio.Event()
        self._ended = False
        self._error: RentahalError | None = None
        self.dropped = 0  # events discarded because the consumer fell behind

    def wants(self, event: Event) -> bool:
        return not self.types or event.get("type") in self.types

    def _put(self, event: Event) -> None:
        if len(self._buffer) >= self._maxsize:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "rentahal.client: an event stream fell behind; %d dropped", self.dropped
                )
        self._buffer.append(event)
        self._arrived.set()

    def _end(self, error: RentahalError | None = None) -> None:
        self._ended = True
        self._error = error
        self._arrived.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._arrived.clear()
            await self._arrived.wait()
        return self._buffer.popleft()

    def close(self) -> None:
        self._hub.remove(self)
        self._end()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Subscriptions:
    """Who wants which events; `publish` hands each event to them."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._streams: set[EventStream] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._ended: tuple[RentahalError | None] | None = None  # set once the client ends

    def subscribe(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(event)` for every event of `event_type` (`"*"`: every event).
        Coroutine handlers run as tasks, so a slow one does not hold up the others.
        Returns a function that unsubscribes."""
        self._handlers.setdefault(event_type, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(event_type, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe

    def stream(self, types: Iterable[str] = (), maxsize: int = 1000) -> EventStream:
        stream = EventStream(self, types, maxsize)
        if self._ended is not None:  # the client is over: nothing more will come
            stream._end(self._ended[0])
        else:
            self._streams.add(stream)
        return stream

    def remove(self, stream: EventStream) -> None:
        self._streams.discard(stream)

    def publish(self, event: Event) -> None:
        kind = str(event.get("type", ""))
        for handler in [*self._handlers.get(kind, ()), *self._handlers.get(ALL, ())]:
            self._call(handler, event)
        for stream in list(self._streams):
            if stream.wants(event):
                stream._put(event)

    def _call(self, handler: Handler, event: Event) -> None:
        try:
            outcome = handler(event)
        except Exception:
            log.exception("rentahal.client: event handler %r failed", handler)
            return
        if inspect.isawaitable(outcome):
            task = asyncio.ensure_future(outcome)
            self._tasks.add(task)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("rentahal.client: event handler failed", exc_info=task.exception())

    def end(self, error: RentahalError | None = None) -> None:
        """The client closed (or failed for good): finish every stream."""
        self._ended = (error,)
        for stream in list(self._streams):
            stream._end(error)
        self._streams.clear()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
