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


def connected(hub: Hub, user_id: str, last_heard: float) -> Connection:
    connection = Connection(cast(WebSocket, object()), user_id, is_sysop=False)
    connection.last_heard = last_heard
    hub.add(connection)
    return connection


async def test_a_beat_pings_the_lively_and_closes_the_silent() -> None:
    hub = Hub()
    now = time.monotonic()
    lively = connected(hub, "lively", now - INTERVAL)  # one interval quiet: still fine
    silent = connected(hub, "silent", now - 2 * INTERVAL - 1)

    assert Heartbeat(hub, INTERVAL).beat() == 1

    assert not lively.closed.is_set()
    assert json.loads(lively._outbox.get_nowait() or "")["type"] == "ping"
    assert silent.closed.is_set()
    assert (silent.close_code, silent.close_reason) == (1001, "missed heartbeats")
    assert silent._outbox.get_nowait() is None  # the close, and no ping before it
