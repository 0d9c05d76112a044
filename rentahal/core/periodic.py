"""Work repeated on a timer in a task of its own: the health checks, the guest sweep and the
bus heartbeat each say only what one round does and what a failed round means."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod


class Periodic(ABC):
    """`tick` now, then every `interval` seconds, from `start` until `stop`. A round that
    raises goes to `failed` and the next one comes as usual: one bad round must not end
    the work for the rest of the process's life."""

    def __init__(self, name: str, interval: float) -> None:
        self.name = name
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @abstractmethod
    async def tick(self) -> None:
        """One round of the work."""

    @abstractmethod
    def failed(self, exc: Exception) -> None:
        """Say that a round failed (an outage said once, anything else logged)."""

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:
                self.failed(exc)
            await asyncio.sleep(self.interval)
