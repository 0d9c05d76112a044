"""The scheduler's news as bus events (`bus/notifier.py`), through a fan-out that records
what it is asked to send: who gets each event, a transcript spotted, the final once."""

from __future__ import annotations

from typing import Any

from rentahal.bus import events
from rentahal.bus.notifier import BusNotifier
from rentahal.store import Query, QueryState
from rentahal.store.models import INTERNAL_MODEL_TYPE


class RecordingFanout:
    def __init__(self, connected: set[str]) -> None:
        self.connected = connected
        self.sent: list[tuple[str, Any]] = []

    def is_connected(self, user_id: str) -> bool:
        return user_id in self.connected

    def send_user(self, user_id: str, event: events.Outbound) -> bool:
        self.sent.append((f"user:{user_id}", event))
        return user_id in self.connected

    def send_final(self, user_id: str, query_id: str, event: events.Outbound) -> bool:
        self.sent.append((f"final:{user_id}:{query_id}", event))
        return user_id in self.connected

    def send_watchers(self, event: events.Outbound) -> None:
        self.sent.append(("watchers", event))

    def broadcast(self, event: events.Outbound, *, sysops_only: bool = False) -> None:
        self.sent.append(("sysops" if sysops_only else "everybody", event))


def _query(**fields: Any) -> Query:
    values: dict[str, Any] = {
        "id": "q1",
        "user_id": "alice",
        "query_type": "chat",
        "model_type": "",
        "stage": 0,
        "options": {},
    }
    return Query(**(values | fields))


def test_a_querys_events_go_to_its_owner_and_an_internal_ones_only_to_its_watchers() -> None:
    fanout = RecordingFanout({"alice"})
    notifier = BusNotifier(fanout, lambda: ())
    notifier.status(_query(), QueryState.RUNNING, "gpu-1")
    notifier.chunk(_query(model_type=INTERNAL_MODEL_TYPE), "Hel")
    assert fanout.sent == [
        ("user:alice", events.QueryStatus(query_id="q1", state="running", worker="gpu-1")),
        ("watchers", events.QueryChunk(query_id="q1", delta="Hel")),
    ]
    assert notifier.reaches_owner(_query(user_id="bob", model_type=INTERNAL_MODEL_TYPE))
    assert not notifier.reaches_owner(_query(user_id="bob"))


def test_the_final_event_is_sent_once_per_connection_and_spots_the_vocabulary() -> None:
    fanout = RecordingFanout(set())
    notifier = BusNotifier(fanout, lambda: ("chat", "vision"))
    done = _query(query_type="stt", state="done", result="vision please", options={"spot": True})
    assert notifier.finished(done) is False  # alice is away: it waits for her next connection
    [(to, event)] = fanout.sent
    assert to == "final:alice:q1"
    assert isinstance(event, events.TranscriptionResult)
    assert event.spotted == ["vision"]


def test_queue_depths_go_to_everybody_when_changed_else_to_the_sysops() -> None:
    fanout = RecordingFanout(set())
    notifier = BusNotifier(fanout, lambda: ())
    notifier.queue_depths({"a": 2, "b": 1}, workers=3, changed=True)
    notifier.queue_depths({"a": 2, "b": 1}, workers=3, changed=False)
    update = events.QueueUpdate(depth=3, total=3, realms={"a": 2, "b": 1})
    assert fanout.sent == [("everybody", update), ("sysops", update)]
