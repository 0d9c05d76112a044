"""What a finished query gives back, decoded from whichever final event the broker sent.

The broker ends a query with one of several events depending on its type (see
`rentahal.bus.views.final_event`): `query_result` (chat, vision, imagine, speech),
`transcription_result` with `final: true` (stt), `speech_result` (tts), or `error`; each
carries `is_final: true`. Media travels base64 inside them; `QueryResult` hands it over as
bytes so callers never decode.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]
"""A broker event as received: a JSON object with a `type` field (SPEC §3)."""


def is_final(event: Event) -> bool:
    """Does this event end its query? The broker says so in the event (`is_final`), so the
    client keeps no list of its own (a `transcription_result` with `final: false`, the first
    step of a speech query, is not final)."""
    return event.get("is_final") is True


def _decode(data: object) -> bytes | None:
    if not isinstance(data, str) or not data:
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A query's answer.

    `text` is the answer as text (a chat reply, a transcript, a description of an image);
    it is empty for a picture or a spoken text. `image` (imagine) and `audio` (tts, or a
    speech query asked to answer aloud) are the decoded bytes. `transcript` is what the user
    said, for speech queries. `event` keeps the whole final event for anything else.
    """

    query_id: str
    text: str
    result_type: str
    processing_time: float = 0.0
    cost: float = 0.0
    queue_wait: float = 0.0
    worker: str | None = None
    image: bytes | None = None
    audio: bytes | None = None
    transcript: str | None = None
    event: Event = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_event(cls, event: Event, *, worker: str | None = None) -> QueryResult:
        """Build from a successful final event; `worker` fills in for events that lack it."""
        kind = event.get("type")
        common: dict[str, Any] = {
            "query_id": str(event.get("query_id", "")),
            "processing_time": float(event.get("processing_time") or 0.0),
            "cost": float(event.get("cost") or 0.0),
            "queue_wait": float(event.get("queue_wait") or 0.0),
            "worker": event.get("worker") or worker,
            "event": event,
        }
        if kind == "transcription_result":
            return cls(text=str(event.get("text", "")), result_type="text", **common)
        if kind == "speech_result":
            return cls(text="", result_type="audio", audio=_decode(event.get("audio")), **common)
        if kind != "query_result":
            raise ValueError(f"not a result event: {kind!r}")
        result_type = str(event.get("result_type") or "text")
        result = str(event.get("result") or "")
        image = _decode(result) if result_type == "image" else None
        audio = _decode(result) if result_type == "audio" else _decode(event.get("audio"))
        return cls(
            text=result if result_type == "text" else "",
            result_type=result_type,
            image=image,
            audio=audio,
            transcript=event.get("transcript"),
            **common,
        )


@dataclass(frozen=True, slots=True)
class SpokenSentence:
    """One sentence of a spoken answer, said while the rest was being written
    (`speech_chunk`): `seq` counts from 0, `audio` is a WAV file's bytes."""

    seq: int
    text: str
    audio: bytes

    @classmethod
    def from_event(cls, event: Event) -> SpokenSentence:
        return cls(
            seq=int(event.get("seq", 0)),
            text=str(event.get("text", "")),
            audio=_decode(event.get("audio")) or b"",
        )
