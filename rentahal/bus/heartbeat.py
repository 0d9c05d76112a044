"""The bus heartbeat: one task pings every socket and drops the silent ones.

Every `interval` seconds each connection open for at least that long gets a `ping` (so its
greeting always comes first); one that has sent nothing (a `pong` counts) for two intervals is
closed with 1001. One sweep over all sockets, rather than a timer and a task per socket, keeps
an idle connection cheap: a broker holds thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from rentahal.bus import events
from rentahal.bus.hub import Hub, encode

log = structlog.get_logger(__name__)

MISSED_HEARTBEATS_CLOSE = (1001, "missed heartbeats")


class Heartbeat:
    def __init__(self, hub: Hub, interval: float) -> None:
        self._hub = hub
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bus-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def beat(self) -> int:
        """Ping every connection heard from lately and close the others; returns how many
        were closed."""
        ping = encode(events.Ping())
        now = time.monotonic()
        silent_since, opened_before = now - 2 * self._interval, now - self._interval
        dropped = 0
        for connection in self._hub.connections():
            if connection.last_heard < silent_since:
                log.info("ws.heartbeat_lost", user_id=connection.user_id)
                connection.close(*MISSED_HEARTBEATS_CLOSE)
                dropped += 1
            elif connection.opened_at <= opened_before:
                connection.send(ping)
        return dropped

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.beat()
