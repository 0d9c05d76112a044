"""When the database is unreachable: how to tell, whom to tell, and when it is back.

A store outage (PostgreSQL restarting, a network blip, SQLite's lock held past its timeout)
is an expected event, not a bug: callers answer it with a typed `unavailable` refusal and no
traceback, the scheduler holds its writes until the store returns, and the operator finds one
warning when it starts and one when it ends. `StoreHealth` is that one place; `/readyz` asks
it for the store's state as it is now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

T = TypeVar("T")

RETRY_AFTER = 5.0  # seconds a refused client is asked to wait
CHECK_TIMEOUT = 2.0  # a store that does not answer `SELECT 1` in this long is unavailable
RECOVERY_INTERVAL = 0.5  # how often a store known to be down is tried again
MAX_WRITE_BACKOFF = 5.0


class StoreUnavailable(Exception):
    """The database cannot be reached right now; the same request later may succeed."""


# PostgreSQL's SQLSTATEs for "not now": connection exceptions (class 08), the server shutting
# down or starting up (57P01-57P03), and no connection slot free (53300).
_OUTAGE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def sqlstates(exc: BaseException) -> Iterator[str]:
    """The PostgreSQL SQLSTATEs `exc` carries: its own, its driver error's, its causes'."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        for carrier in (error, getattr(error, "orig", None)):
            sqlstate = getattr(carrier, "sqlstate", None)
            if isinstance(sqlstate, str):
                yield sqlstate
        error = error.__cause__


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database is unreachable (rather than that a statement is wrong)."""
    if isinstance(exc, StoreUnavailable | PoolTimeout | OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # Connecting fails below SQLAlchemy's wrapping (a refused socket, asyncpg's own errors).
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if any(state.startswith(_OUTAGE_SQLSTATES) for state in sqlstates(exc)):
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_outage(cause)


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` says the transaction lost a race with another (a deadlock, a
    serialization failure): the database rolled it back, and the same transaction again
    may well succeed. Brokers of one installation meet them on shared rows (a user's
    totals, the statistics)."""
    return any(state in ("40P01", "40001") for state in sqlstates(exc))


class StoreHealth:
    """Whether the store answers, with one warning when it stops and one when it returns.

    Anything that meets an outage calls `failed`; a watcher then tries the store every
    `RECOVERY_INTERVAL` until it answers, logs the recovery and calls the listeners (the
    scheduler resumes dispatching).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._down_since: float | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def available(self) -> bool:
        return self._down_since is None

    def on_recovered(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def failed(self, exc: BaseException) -> None:
        """Record an outage met by a caller (logged once per outage)."""
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        log.warning("store.unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
        self._watcher = asyncio.create_task(self._watch(), name="store-recovery")

    async def _ping(self) -> None:
        async with asyncio.timeout(CHECK_TIMEOUT), self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def check(self) -> bool:
        """Ask the store now (`SELECT 1`); True when it answered."""
        try:
            await self._ping()
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.failed(exc)
            return False
        return True

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RECOVERY_INTERVAL)
            try:
                await self._ping()
            except Exception as exc:
                if not is_outage(exc):
                    log.warning("store.check_failed", error=str(exc)[:300])
                continue
            down_for = time.monotonic() - (self._down_since or time.monotonic())
            self._down_since = None
            self._watcher = None
            log.warning("store.recovered", down_for=round(down_for, 1))
            for listener in self._listeners:
                listener()
            return

    async def persist(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a write that must not be lost, retrying through an outage until it succeeds.

        Used where the caller has already promised the outcome (a job the worker finished);
        errors that are not outages are raised at once.
        """
        delay = RECOVERY_INTERVAL
        while True:
            try:
                return await write()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self.failed(exc)
            await asyncio.sleep(delay)
            delay = min(MAX_WRITE_BACKOFF, delay * 2)
