"""One submitted query, followed from acceptance to its final event.

A handle is keyed by the broker's `query_id` and lives in the client, not in a connection,
so it survives reconnects: the broker re-delivers final events that finished while the
client was away, and they land on the same handle.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

from rentahal.client.errors import RentahalError, error_from_event
from rentahal.client.results import Event, QueryResult, SpokenSentence, is_final
from rentahal.core.errors import ErrorCode


class QueryHandle:
    """A query in flight: its state, its streamed text, and (eventually) its result.

    `state` and `worker` follow the broker's `query_status` events; `transcript` is set
    when a speech query has heard what was said; a spoken answer's sentences come as they
    are said (`speech()`). Any number of tasks may await `result()`
    or iterate `stream()`; each stream starts from the first delta. `cancel` is the
    client's way of asking the broker to cancel it (the handle knows nothing else of the
    client, which imports it).
    """

    def __init__(
        self,
        cancel: Callable[[QueryHandle], Awaitable[None]],
        query_id: str,
        query_type: str,
        position: int = 0,
    ) -> None:
        self._cancel = cancel
        self.query_id = query_id
        self.query_type = query_type
        self.position = position
        self.state = "queued"
        self.worker: str | None = None
        self.transcript: str | None = None
        self._deltas: list[str] = []
        self._sentences: list[SpokenSentence] = []
        self._final: Event | None = None
        self._failure: RentahalError | None = None
        self._done = asyncio.Event()
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"QueryHandle({self.query_id!r}, {self.query_type!r}, state={self.state!r})"

    # --- fed by the client's reader --------------------------------------------------------

    def _feed(self, event: Event) -> None:
        if self._done.is_set():
            return  # a final event delivered twice (live and again after a reconnect)
        kind = event.get("type")
        if kind == "query_status":
            self.state = str(event.get("state", self.state))
            self.worker = event.get("worker") or self.worker
        elif kind == "query_chunk":
            self._deltas.append(str(event.get("delta", "")))
        elif kind == "speech_chunk" and event.get("seq") == len(self._sentences):
            self._sentences.append(SpokenSentence.from_event(event))
        elif kind == "transcription_result" and not is_final(event):
            self.transcript = str(event.get("text", ""))
        if is_final(event):
            self._final = event
            if kind == "error":
                code = event.get("code")
                self.state = "cancelled" if code == ErrorCode.CANCELLED else "failed"
                if code == ErrorCode.EXPIRED:
                    self.state = "expired"
            else:
                self.state = "done"
            self._done.set()
        self._notify()

    def _fail(self, error: RentahalError) -> None:
        """The client gave up on the query (closed, or lost the broker for good)."""
        if not self._done.is_set():
            self._failure = error
            self._done.set()
            self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- for callers -----------------------------------------------------------------------

    def done(self) -> bool:
        """Has the query ended (with a result or an error)?"""
        return self._done.is_set()

    def cancelled(self) -> bool:
        """Did it end cancelled?"""
        return self._final is not None and self._final.get("code") == ErrorCode.CANCELLED

    @property
    def final_event(self) -> Event | None:
        """The event that ended the query, as received (None while it runs)."""
        return self._final

    @property
    def text_so_far(self) -> str:
        """The streamed text received up to now."""
        return "".join(self._deltas)

    async def wait(self) -> None:
        """Wait until the query ends, without raising its error. (Bound the wait with
        `asyncio.timeout(...)`; the query goes on regardless.)"""
        await self._done.wait()

    async def result(self) -> QueryResult:
        """The answer, once the query ends; raises its error (`QueryFailed` and kin) if it
        failed. Bound the wait with `asyncio.timeout(...)`; the query goes on regardless
        (`cancel()` it if its answer is no longer wanted)."""
        await self._done.wait()
        return self._outcome()

    def _outcome(self) -> QueryResult:
        if self._failure is not None:
            raise self._failure
        assert self._final is not None
        if self._final.get("type") == "error":
            raise error_from_event(self._final)
        return QueryResult.from_event(self._final, worker=self.worker)

    async def stream(self) -> AsyncGenerator[str, None]:
        """The answer's text as it is generated (`query_chunk` deltas), ending with the
        query. Whatever the final text holds beyond the deltas (all of it, for a worker or a
        query that does not stream) comes as a last piece, so the pieces always join up to
        `result().text`. A failed query raises its error after the pieces that came."""
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self._deltas):
                sent += 1
                yield self._deltas[sent - 1]
            if self._done.is_set():
                break
            await changed.wait()
        result = self._outcome()
        streamed = "".join(self._deltas)
        if result.text.startswith(streamed) and len(result.text) > len(streamed):
            yield result.text[len(streamed) :]

    async def speech(self) -> AsyncGenerator[SpokenSentence, None]:
        """A spoken answer's sentences as the broker says them (`speech_chunk`), in order,
        ending with the query: play each while the next is made. A query whose answer was
        not said sentence by sentence (no TTS worker was free while it was written) yields
        none; its whole audio is in `result().audio`."""
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self._sentences):
                sent += 1
                yield self._sentences[sent - 1]
            if self._done.is_set():
                return
            await changed.wait()

    async def cancel(self) -> bool:
        """Ask the broker to cancel the query (queued or running; a running one's worker
        request is closed) and wait for it to end. True if it ended cancelled, False if it
        had finished first. Raises `RequestTimeout` if the broker does not confirm within
        the client's `timeout`."""
        if not self._done.is_set():
            await self._cancel(self)
        return self.cancelled()
