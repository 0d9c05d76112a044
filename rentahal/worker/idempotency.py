"""`Idempotency-Key` on `/predict`: a job sent again is answered from its first run.

The broker records every attempt before it dispatches it, and a broker that restarts sends
the jobs it had in flight again. Without a key the worker would run a job twice that it had
already finished (or was still running) for the broker that died. With the key the broker
sends (its job id and step), a repeat joins the run in progress or gets its answer, for
`TTL` seconds. A run that failed is forgotten, so it can be tried again. The header is the
IETF's (draft-ietf-httpapi-idempotency-key-header), as payment APIs use it.

One record (`Run`) serves answers in one piece and streamed ones alike: a run keeps the
pieces of text it has written (`write`) beside its answer, so a streamed repeat replays what
was written so far and then follows the rest (`follow`), and a repeat in one piece waits for
the answer (`answer`). A streamed run stops when its last reader leaves (`abandoned`: the
engine stops at its next token and frees its slot), as a client that hangs up wants the
worker free; it then counts as failed, and is forgotten. A run in one piece goes on without
its caller, as today, since a repeat may want its answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 128
TTL = 15 * 60.0  # seconds an answer is kept for a repeat
MAX_KEPT = 1024  # answers kept at most (the oldest go first)


class Run(Generic[T]):
    """One run of a job: the text it has written so far, then its answer (or its error)."""

    def __init__(self, work: Callable[[Run[T]], Awaitable[T]], *, stops: bool = False) -> None:
        self.started = time.monotonic()
        self.parts: list[str] = []
        # With `stops`, set once nobody reads the run any more, and the work stops on it (the
        # engine checks it between tokens); a run without goes on for a repeat's sake.
        self.stops = stops
        self.abandoned = threading.Event()
        self._readers = 0
        self._grew = asyncio.Event()
        self.future: asyncio.Future[T] = asyncio.ensure_future(work(self))
        self.future.add_done_callback(self._finished)

    def write(self, part: str) -> None:
        """The next piece of the answer's text (called by the run's work, on the loop)."""
        if part:
            self.parts.append(part)
            self._wake()

    async def answer(self) -> T:
        """The run's answer, once it has one; raises the run's error."""
        self._readers += 1
        try:
            # A caller that leaves does not cancel the run: a repeat may want its answer.
            return await asyncio.shield(self.future)
        finally:
            self._leave()

    async def follow(self) -> AsyncGenerator[str]:
        """What the run has written so far (as one piece), then each piece as it comes; ends
        when the run ends, raising its error if it failed. Close it when leaving early."""
        self._readers += 1
        try:
            sent = 0
            while True:
                grew = self._grew
                if sent < len(self.parts):
                    written, sent = "".join(self.parts[sent:]), len(self.parts)
                    yield written
                elif self.future.done():
                    self.future.result()
                    return
                else:
                    await grew.wait()
        finally:
            self._leave()

    def _leave(self) -> None:
        self._readers -= 1
        if self.stops and not self._readers and not self.future.done():
            self.abandoned.set()

    def _wake(self) -> None:
        self._grew.set()
        self._grew = asyncio.Event()

    def _finished(self, future: asyncio.Future[T]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved here: a run nobody waits for fails quietly
        self._wake()

    @property
    def failed(self) -> bool:
        return self.future.done() and (self.future.cancelled() or bool(self.future.exception()))


class IdempotentRuns(Generic[T]):
    def __init__(self, ttl: float = TTL, max_kept: int = MAX_KEPT) -> None:
        self._ttl = ttl
        self._max_kept = max_kept
        self._runs: OrderedDict[str, Run[T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def start(
        self, key: str | None, work: Callable[[Run[T]], Awaitable[T]], *, stops: bool = False
    ) -> Run[T]:
        """The run under `key` (in progress or finished), or else a new run of `work` (see
        `Run` for `stops`); an abandoned run is stopping, so it counts as none. Without a
        key, always a new run."""
        if key is None:
            return Run(work, stops=stops)
        self._forget_expired()
        kept = self._runs.get(key)
        if kept is not None and not kept.abandoned.is_set():
            return kept
        run = Run(work, stops=stops)
        self._runs[key] = run
        self._runs.move_to_end(key)
        run.future.add_done_callback(lambda _: self._forget_failed(key, run))
        while len(self._runs) > self._max_kept:
            self._runs.popitem(last=False)
        return run

    async def run(self, key: str, start: Callable[[], Awaitable[T]]) -> T:
        """The answer of the first run under `key`, starting it if there is none."""
        return await self.start(key, lambda _: start()).answer()

    def _forget_failed(self, key: str, run: Run[T]) -> None:
        if self._runs.get(key) is run and run.failed:
            del self._runs[key]

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._runs:
            run = next(iter(self._runs.values()))
            if now - run.started < self._ttl or not run.future.done():
                return
            self._runs.popitem(last=False)
