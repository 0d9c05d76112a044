"""Speaking an answer while it is being written.

A spoken answer used to wait for the whole text, then be synthesized in one piece: seconds of
silence a person notices. Instead, while the chat worker streams, each sentence is made
speakable (`rentahal.speech`) and sent to a TTS worker as soon as it is complete; its audio
goes to the owner at once as `speech_chunk`, in order. Sentence n+1 is synthesized while the
client plays sentence n, one request at a time on one TTS worker slot, so a query holds at
most one TTS slot and its chunks cannot overtake each other.

The query's last step (speak the answer) then has nothing left to do: the chunks, joined,
are its audio. When no TTS slot is free as the first sentence is ready, or the TTS worker
fails, nothing more is spoken here and the answer is spoken by that step as before, through
the fair queue.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from rentahal.core.ports import Notifier
from rentahal.speech.sentences import SentenceStream
from rentahal.speech.speakable import CODE_NOTE, SILENT_NOTE, TABLE_NOTE, capped, speakable
from rentahal.store import Query, User

log = structlog.get_logger(__name__)

# Says `text` (one sentence, `seq`) and returns its audio, a base64 WAV.
Synthesize = Callable[[str, int], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Spoken:
    """A whole answer said while it was written: its audio (base64 WAV), which TTS worker
    said it in how many seconds (its owner's earnings, the query's time), and how long the
    answering step waited for the last sentences once the text was whole (not the answering
    worker's time)."""

    audio: str
    worker: str
    owner_id: str | None
    seconds: float
    waited: float


class SpokenAnswer:
    """The sentences of one answer, spoken as they are written (see the module docstring).

    `feed` takes the chat worker's deltas; `finish` says the rest (or `SILENT_NOTE`, when
    nothing in the answer could be said) and returns the whole answer's audio, or None when
    it could not all be said here (then the query's speaking step says it); `abort` stops at
    once (the query was cancelled or its worker failed)."""

    def __init__(
        self,
        query: Query,
        notifier: Notifier[Query, User],
        synthesize: Synthesize,
        *,
        worker: str,
        owner_id: str | None,
        max_sentences: int,
        max_seconds: float,
    ) -> None:
        self._query = query
        self._notifier = notifier
        self._synthesize = synthesize
        self._worker, self._owner_id = worker, owner_id
        self._max_sentences = max_sentences
        self._max_seconds = max_seconds
        self._sentences = SentenceStream()
        self._said: list[str] = []  # what was queued to be said, capped
        self._capped = False
        self._pending: asyncio.Queue[str | None] = asyncio.Queue()
        self._clips: list[bytes] = []
        self._failed = False
        self._seconds = 0.0  # the TTS worker's time
        self._speaker = asyncio.create_task(self._speak(), name=f"speak-{query.id}")

    def feed(self, delta: str) -> None:
        for sentence in self._sentences.feed(delta):
            self._queue(sentence)

    async def finish(self, within: float) -> Spoken | None:
        """Say the rest, in `within` seconds; the whole answer's audio, or None when
        it could not all be said here."""
        started = time.perf_counter()
        for sentence in self._sentences.close():
            self._queue(sentence)
        if not self._said:
            self._queue(SILENT_NOTE)
        self._pending.put_nowait(None)
        try:
            async with asyncio.timeout(within):
                await self._speaker
        except TimeoutError:
            log.warning("speech.chunks_timed_out", query_id=self._query.id, worker=self._worker)
            self._failed = True
        if self._failed or not self._clips:
            return None
        audio = base64.b64encode(joined_wav(self._clips)).decode()
        waited = time.perf_counter() - started
        return Spoken(audio, self._worker, self._owner_id, self._seconds, waited)

    def abort(self) -> None:
        self._speaker.cancel()

    @property
    def failed(self) -> bool:
        """The TTS worker failed a sentence (its circuit breaker hears of it)."""
        return self._failed

    def _queue(self, sentence: str) -> None:
        """Queue what the sentence is said as, while the cap allows (a code block or a table
        is mentioned once, not each time)."""
        spoken = speakable(sentence)
        mentioned = spoken in (CODE_NOTE, TABLE_NOTE) and spoken in self._said
        if self._capped or self._failed or not spoken or mentioned:
            return
        kept = capped([*self._said, spoken], self._max_sentences, self._max_seconds)
        if len(kept) <= len(self._said):
            self._capped = True
            return
        self._said.append(kept[-1])
        self._capped = kept[-1] != spoken  # the first sentence, cut to fit
        self._pending.put_nowait(kept[-1])

    async def _speak(self) -> None:
        seq = 0
        while (text := await self._pending.get()) is not None:
            started = time.perf_counter()
            try:
                audio = await self._synthesize(text, seq)
                clip = base64.b64decode(audio, validate=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The answer is then spoken by the query's own step, on any TTS worker.
                log.warning("speech.chunk_failed", query_id=self._query.id, error=str(exc))
                self._failed = True
                return
            finally:
                self._seconds += time.perf_counter() - started
            self._clips.append(clip)
            self._notifier.speech_chunk(self._query, seq, text, audio)
            seq += 1


def joined_wav(clips: list[bytes]) -> bytes:
    """One WAV of the clips in order (a TTS worker's clips share one format)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as joined:
        for index, clip in enumerate(clips):
            with wave.open(io.BytesIO(clip)) as part:
                if index == 0:
                    joined.setparams(part.getparams())
                joined.writeframes(part.readframes(part.getnframes()))
    return out.getvalue()
