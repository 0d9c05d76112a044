"""The bus heartbeat (`bus/heartbeat.py`): one sweep pings every connection heard from lately
and closes the silent ones. The end-to-end behaviour, a real client dropped after two silent
intervals, is in `test_bus_protocol.py`."""

from __future__ import annotations

import json
import time
from typing import cast

from starlette.websockets import WebSocket

from rentahal.bus.heartbeat import Heartbeat
from rentahal.bus.hub import Connection, Hub

INTERVAL = 10.0


def connected(hub: Hub, user_id: str, opened_at: float, last_heard: float) -> Connection:
    connection = Connection(cast(WebSocket, object()), user_id, is_sysop=False)
    connection.opened_at, connection.last_heard = opened_at, last_heard
    hub.add(connection)
    return connection


async def test_a_beat_pings_the_lively_and_closes_the_silent() -> None:
    hub = Hub()
    now = time.monotonic()
    long_ago = now - 10 * INTERVAL
    lively = connected(hub, "lively", long_ago, now - INTERVAL)  # one interval quiet: fine
    silent = connected(hub, "silent", long_ago, now - 2 * INTERVAL - 1)
    # Opened just now, and not greeted yet maybe: its first ping waits for the next beat.
    new = connected(hub, "new", now, now)

    assert Heartbeat(hub, INTERVAL).beat() == 1

    assert not lively.closed.is_set()
    assert json.loads(lively._outbox.get_nowait() or "")["type"] == "ping"
    assert not new.closed.is_set() and new._outbox.empty()
    assert silent.closed.is_set()
    assert (silent.close_code, silent.close_reason) == (1001, "missed heartbeats")
    assert silent._outbox.get_nowait() is None  # the close, and no ping before it
