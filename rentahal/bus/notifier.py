"""The scheduler's news as bus events: the `Notifier` of `rentahal.core.ports`.

Each call becomes the event the page and the SDK read (`events`, `views`), spotting included
(the voice mode's words in a transcript), and goes out through the event fan-out: a query's
events to its owner's connections, or, for an internal query (the broker asking a worker for
itself), only to the code watching it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from rentahal.bus import events
from rentahal.bus.views import final_event, user_view
from rentahal.core.ports import EventFanout
from rentahal.store import Query, User


class BusNotifier:
    def __init__(
        self, fanout: EventFanout[events.Outbound], vocabulary: Callable[[], Iterable[str]]
    ) -> None:
        """`vocabulary` gives the words a transcript is spotted for, read when one is
        (the broker loads its intents' words after the scheduler is built)."""
        self._fanout = fanout
        self._vocabulary = vocabulary

    def _to_owner(self, query: Query, event: events.Outbound) -> None:
        if query.is_internal:
            self._fanout.send_watchers(event)
        else:
            self._fanout.send_user(query.user_id, event)

    def status(self, query: Query, state: str, worker: str | None) -> None:
        self._to_owner(query, events.QueryStatus(query_id=query.id, state=state, worker=worker))

    def chunk(self, query: Query, delta: str) -> None:
        self._to_owner(query, events.QueryChunk(query_id=query.id, delta=delta))

    def speech_chunk(self, query: Query, seq: int, text: str, audio: str) -> None:
        self._to_owner(
            query, events.SpeechChunk(query_id=query.id, seq=seq, text=text, audio=audio)
        )

    def transcript(self, query: Query, text: str) -> None:
        self._to_owner(query, events.TranscriptionResult(query_id=query.id, text=text, final=False))

    def reaches_owner(self, query: Query) -> bool:
        return query.is_internal or self._fanout.is_connected(query.user_id)

    def finished(self, query: Query) -> bool:
        event = final_event(query, self._vocabulary())
        if query.is_internal:
            self._fanout.send_watchers(event)
            return True
        return self._fanout.send_final(query.user_id, query.id, event)

    def terminated(self, query: Query) -> None:
        self._fanout.send_user(
            query.user_id, events.QueryTerminated(guid=query.user_id, query_id=query.id)
        )

    def account_changed(self, user: User) -> None:
        self._fanout.send_user(user.id, events.UserInfo(data=user_view(user)))

    def queue_depths(self, depths: Mapping[str, int], workers: int, *, changed: bool) -> None:
        self._fanout.broadcast(
            events.QueueUpdate(depth=sum(depths.values()), total=workers, realms=dict(depths)),
            sysops_only=not changed,
        )
