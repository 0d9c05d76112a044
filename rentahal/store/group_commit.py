"""Group commit: writes that arrive while a transaction is being written go into the next one.

Every job writes its state several times (accepted, dispatched, finished). One transaction
per write makes the database the broker's bottleneck at a few dozen jobs a second; with one
transaction in flight at a time and everything that queued up meanwhile in the next, the
cost per job falls as load rises, and no write waits for a timer. A write's caller still
awaits its own commit, so nothing is reported before it is durable.

A write is a plain function of a synchronous connection, so that a whole batch runs as one
piece of blocking code: on SQLite in a writer thread of its own, with a connection of its own
(aiosqlite hands every cursor, statement and close to its thread and back, several hops per
statement; here a batch is one hop), and on PostgreSQL in one `run_sync` on the async
connection (one greenlet for the batch, each statement still asyncpg's round trip).

Brokers of one installation batch writes to the same rows (a user's totals, the statistics)
in different orders, and PostgreSQL then breaks the deadlock by rolling one transaction back.
That transaction is run again, whole, after a short random pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rentahal.store.outage import is_conflict

Write = Callable[[Connection], Any]
CONFLICT_ATTEMPTS = 5
CONFLICT_PAUSE = 0.01  # seconds, doubled each time: the pause is random up to it
Batch = list[tuple[Write, asyncio.Future[Any]]]


def _run_all(connection: Connection, writes: Sequence[Write]) -> list[Any]:
    return [write(connection) for write in writes]


class GroupCommitter:
    """Commits writes in batches; `writer`, when given, is a synchronous engine that a
    thread of this committer's own writes through (SQLite), else `engine` is used."""

    def __init__(self, engine: AsyncEngine, writer: Engine | None = None) -> None:
        self._engine = engine
        self._writer = writer
        self._thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
            if writer is not None
            else None
        )
        self._pending: Batch = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self, write: Write) -> Any:
        """Run `write` in the next transaction and return its result once committed."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="group-commit")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._thread is not None:  # after the batch it may be writing
            await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)

    async def _loop(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)

    async def _transaction(self, writes: Sequence[Write]) -> list[Any]:
        """Run `writes` in one transaction, committed when this returns."""
        if self._writer is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._in_writer, writes)
        async with self._engine.begin() as connection:
            return await connection.run_sync(_run_all, writes)

    async def _transaction_again_on_conflict(self, writes: Sequence[Write]) -> list[Any]:
        """`_transaction`, run again after a short random pause when it lost a race with
        another broker's (a deadlock on shared rows): the database rolled it back whole."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return await self._transaction(writes)
            except Exception as exc:
                if attempt == CONFLICT_ATTEMPTS - 1 or not is_conflict(exc):
                    raise
                await asyncio.sleep(random.uniform(0, CONFLICT_PAUSE * 2**attempt))
        raise AssertionError("unreachable")

    def _in_writer(self, writes: Sequence[Write]) -> list[Any]:
        assert self._writer is not None
        with self._writer.begin() as connection:
            return _run_all(connection, writes)

    async def _commit(self, batch: Batch) -> None:
        try:
            results = await self._transaction_again_on_conflict([write for write, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _, future = batch[0]
                if not future.done():
                    future.set_exception(exc)
                return
            # One bad write must not fail its neighbours: retry each on its own.
            for item in batch:
                await self._commit([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
