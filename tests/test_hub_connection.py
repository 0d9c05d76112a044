"""One bus connection's outbox (`bus/hub.py`): a query's final event goes out once, and what
the connection remembers for that stays bounded however long it lives."""

from __future__ import annotations

from typing import cast

from starlette.websockets import WebSocket

from rentahal.bus.events import Error
from rentahal.bus.hub import FINALS_REMEMBERED, Connection


def final(query_id: str) -> Error:
    return Error(code="worker_failed", message="it ended", query_id=query_id)


async def test_a_final_event_is_sent_once_and_only_the_latest_are_remembered() -> None:
    connection = Connection(cast(WebSocket, object()), "u1", is_sysop=False)
    for n in range(FINALS_REMEMBERED + 1):
        assert connection.send_final(f"q{n}", final(f"q{n}"))
    queued = connection._outbox.qsize()
    assert queued == FINALS_REMEMBERED + 1

    latest = f"q{FINALS_REMEMBERED}"
    assert connection.send_final(latest, final(latest))
    assert connection._outbox.qsize() == queued  # a repeat of a recent one: not sent again
    # The oldest was forgotten (a long-lived connection does not grow with every query).
    assert connection.send_final("q0", final("q0"))
    assert connection._outbox.qsize() == queued + 1
