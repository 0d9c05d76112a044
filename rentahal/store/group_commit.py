"""Group commit: writes that arrive while a transaction is being written go into the next one.

Every job writes its state several times (accepted, dispatched, finished). One transaction
per write makes the database the broker's bottleneck at a few dozen jobs a second; with one
transaction in flight at a time and everything that queued up meanwhile in the next, the
cost per job falls as load rises, and no write waits for a timer. A write's caller still
awaits its own commit, so nothing is reported before it is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

Write = Callable[[AsyncConnection], Awaitable[Any]]


class GroupCommitter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
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

    async def _loop(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Write, asyncio.Future[Any]]]) -> None:
        try:
            results = []
            async with self._engine.begin() as connection:
                for write, _ in batch:
                    results.append(await write(connection))
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
