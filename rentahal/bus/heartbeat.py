"""The bus heartbeat: one task pings every socket and drops the silent ones.

Every `interval` seconds each connection open for at least that long gets a `ping` (so its
greeting always comes first); one that has sent nothing (a `pong` counts) for two intervals is
closed with 1001. One sweep over all sockets, rather than a timer and a task per socket, keeps
an idle connection cheap: a broker holds thousands.
"""

from __future__ import annotations

import time

import structlog

from rentahal.bus import events
from rentahal.bus.hub import Hub, encode
from rentahal.core.periodic import Periodic

log = structlog.get_logger(__name__)

MISSED_HEARTBEATS_CLOSE = (1001, "missed heartbeats")


class Heartbeat(Periodic):
    def __init__(self, hub: Hub, interval: float) -> None:
        super().__init__("bus-heartbeat", interval)
        self._hub = hub

    def beat(self) -> int:
        """Ping every connection heard from lately and close the others; returns how many
        were closed."""
        ping = encode(events.Ping())
        now = time.monotonic()
        silent_since, opened_before = now - 2 * self.interval, now - self.interval
        dropped = 0
        for connection in self._hub.connections():
            if connection.last_heard < silent_since:
                log.info("ws.heartbeat_lost", user_id=connection.user_id)
                connection.close(*MISSED_HEARTBEATS_CLOSE)
                dropped += 1
            elif connection.opened_at <= opened_before:
                connection.send(ping)
        return dropped

    async def tick(self) -> None:
        self.beat()

    def failed(self, exc: Exception) -> None:
        log.error("ws.heartbeat_failed", exc_info=exc)
