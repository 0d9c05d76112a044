"""The voice benchmark: how long after a person stops talking does the answer start speaking?

A spoken turn is timed as the page's voice mode makes it: the question, recorded whole, goes
over the bus as a ``speech`` query with ``options.speak``, and the broker transcribes it (STT),
has the chat worker write the answer, and has the TTS worker speak it. The questions are
everyday ones, some inviting a long answer, spoken by the realm's own TTS worker
(``text_to_speech``), so the audio is real speech and nothing is loaded from outside.

Each turn is timed from the moment the question is sent (the end of the question: its audio is
whole) to the arrival of each event on the bus: the transcript, the first text written, the
first complete sentence written, the first answer audio, each spoken chunk and the whole
answer. The first audio is the first ``speech_chunk`` when the broker speaks while it writes,
and the final ``query_result``'s audio when it speaks only once the text is complete; the
report says which it saw, so figures before and after that change read side by side.

Target (issue 19, this machine): first audio ≤ 1.5 s p50 and ≤ 2.5 s worst.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from rich.console import Console
from rich.progress import Progress
from websockets.asyncio.client import ClientConnection, connect

from rentahal.bench.console import note, progress_bars
from rentahal.bench.provenance import measured_now, this_machine
from rentahal.bench.realm import BenchmarkError, bench_broker
from rentahal.bench.speech import wav_seconds
from rentahal.bench.stats import percentile
from rentahal.testing.voice import steady_speech

QUESTIONS: tuple[str, ...] = (
    "What is the capital of France?",
    "How do I make bread?",
    "Tell me about the history of Rome.",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
    "How does a car engine work?",
    "Give me some tips for sleeping better.",
    "What is a good way to learn a new language?",
    "Tell me a story about a dragon.",
    "How far away is the moon?",
)
"""What a person asks a voice assistant; several invite a long answer (history, recipes,
how things work), where speaking only once the text is complete hurts most."""

ROLES = ("stt", "chat", "tts")
TARGET_P50 = 1.5
TARGET_WORST = 2.5
"""Issue 19's target for the first answer audio on this machine, in seconds."""
READY_WITHIN = 240.0  # seconds for the local workers to load their models
TURN_WITHIN = 240.0  # seconds for one whole turn: far beyond any healthy answer
DEFAULT_OUT = Path(tempfile.gettempdir()) / "rentahal-bench"

# A sentence is complete once its end mark is followed by a space (the next one has begun):
# "3.5" or "e.g" mid-sentence are not ends. Mirrors what a speaker-while-writing waits for.
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*\s")

Message = dict[str, Any]
_CLOSED = "bench.closed"  # not a bus type: the connection ended


@dataclass(frozen=True)
class VoiceParams:
    """What to run: the first ``questions`` of :data:`QUESTIONS`, each asked ``repeat``
    times, against a broker started for the run or the one at ``url``."""

    questions: int = len(QUESTIONS)
    repeat: int = 1
    url: str | None = None
    api_key: str | None = None
    out: Path = DEFAULT_OUT

    def __post_init__(self) -> None:
        if not 1 <= self.questions <= len(QUESTIONS):
            raise ValueError(f"questions must be between 1 and {len(QUESTIONS)}")
        if self.repeat < 1:
            raise ValueError("repeat must be at least 1")
        if self.url is not None and not self.api_key:
            raise ValueError("--url needs --api-key")

    @property
    def asked(self) -> tuple[str, ...]:
        return QUESTIONS[: self.questions]


@dataclass(frozen=True)
class Chunk:
    """One spoken piece of the answer (`speech_chunk`) as it arrived."""

    seq: int
    at: float  # seconds after the question was sent
    text: str
    seconds: float  # of speech


@dataclass(frozen=True, kw_only=True)
class Turn:
    """One question and answer, every time in seconds after the question was sent."""

    question: str
    question_seconds: float  # the spoken question's length
    transcript: str
    answer: str
    stt: float
    first_text: float
    first_sentence: float
    first_audio: float
    full_answer: float
    chunks: tuple[Chunk, ...]
    final_audio_seconds: float  # the whole answer's audio in query_result (0 if none)
    text_streamed: bool  # query_chunks came (else the text came with the first spoken chunk or
    # the final query_result)

    @property
    def audio_streamed(self) -> bool:
        """First audio from a speech_chunk (else the final query_result's audio)."""
        return bool(self.chunks)

    @property
    def spoken_seconds(self) -> float:
        return sum(c.seconds for c in self.chunks) if self.chunks else self.final_audio_seconds

    def playback(self) -> list[tuple[float, float]]:
        """(start, end) of each piece played back to back from its arrival: what a listener
        hears. Without chunks, the whole answer from the final result."""
        if not self.chunks:
            return [(self.full_answer, self.full_answer + self.final_audio_seconds)]
        spans: list[tuple[float, float]] = []
        end = 0.0
        for chunk in self.chunks:
            start = max(chunk.at, end)
            end = start + chunk.seconds
            spans.append((start, end))
        return spans

    @property
    def gaps(self) -> float:
        """Silence between pieces, when a piece arrived after the previous one ended."""
        spans = self.playback()
        return sum(b[0] - a[1] for a, b in itertools.pairwise(spans))

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "question_seconds": self.question_seconds,
            "transcript": self.transcript,
            "answer": self.answer,
            **{stage: getattr(self, stage) for stage in STAGES},
            "chunks": [vars(chunk) for chunk in self.chunks],
            "final_audio_seconds": self.final_audio_seconds,
            "spoken_seconds": self.spoken_seconds,
            "gaps": self.gaps,
            "text_streamed": self.text_streamed,
            "audio_streamed": self.audio_streamed,
        }


STAGES: dict[str, str] = {
    "stt": "transcript (STT)",
    "first_text": "first text written",
    "first_sentence": "first sentence written",
    "first_audio": "first audio",
    "full_answer": "full answer",
}
"""Each timed stage of a turn and how the report names it, in the order they happen."""


@dataclass(frozen=True)
class Spread:
    """Median, tail and worst of a stage: a voice turn is judged by its worst case too."""

    p50: float
    p90: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(percentile(values, 50), percentile(values, 90), max(values, default=math.nan))

    def as_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p90": self.p90, "max": self.max}


@dataclass(frozen=True)
class VoiceReport:
    params: VoiceParams
    turns: tuple[Turn, ...]
    timeline: Path | None  # the PNG of one turn, None if matplotlib is missing
    measured_at: str = field(default_factory=measured_now)
    machine: str = field(default_factory=this_machine)

    def stage(self, name: str) -> Spread:
        return Spread.of([getattr(turn, name) for turn in self.turns])

    @property
    def chunks(self) -> Spread:
        return Spread.of([len(turn.chunks) for turn in self.turns])

    @property
    def spoken(self) -> Spread:
        return Spread.of([turn.spoken_seconds for turn in self.turns])

    @property
    def gaps(self) -> Spread:
        return Spread.of([turn.gaps for turn in self.turns])

    @property
    def target_ratios(self) -> tuple[float, float]:
        """First audio p50 ÷ 1.5 s and worst ÷ 2.5 s: at most 1 meets the target."""
        first = self.stage("first_audio")
        return first.p50 / TARGET_P50, first.max / TARGET_WORST

    def as_dict(self) -> dict[str, Any]:
        p50_ratio, worst_ratio = self.target_ratios
        return {
            "questions": list(self.params.asked),
            "repeat": self.params.repeat,
            "broker": self.params.url or "started for the run",
            "stages": {name: self.stage(name).as_dict() for name in STAGES},
            "chunks": self.chunks.as_dict(),
            "spoken_seconds": self.spoken.as_dict(),
            "gaps": self.gaps.as_dict(),
            "audio_streamed": sum(turn.audio_streamed for turn in self.turns),
            "text_streamed": sum(turn.text_streamed for turn in self.turns),
            "target": {
                "first_audio_p50": TARGET_P50,
                "first_audio_worst": TARGET_WORST,
                "p50_ratio": p50_ratio,
                "worst_ratio": worst_ratio,
            },
            "turns": [turn.as_dict() for turn in self.turns],
            "timeline": None if self.timeline is None else str(self.timeline),
            "measured_at": self.measured_at,
            "machine": self.machine,
        }


class TimedBus:
    """A bus client that stamps every message with its arrival (``time.perf_counter``) as it
    is read, so a stage's time is when its event came in, not when the bench looked at it."""

    def __init__(self, ws_url: str, api_key: str) -> None:
        self._url = ws_url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._arrived: asyncio.Queue[tuple[float, Message]] = asyncio.Queue()
        self._held: list[tuple[float, Message]] = []  # read while awaiting a reply
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._ws = await connect(
            self._url, additional_headers=self._headers, max_size=64 * 1024 * 1024
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                at = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") == "ping":
                    await self._ws.send(json.dumps({"type": "pong"}))
                self._arrived.put_nowait((at, message))
        finally:  # wakes a `receive` waiting on a connection that is gone
            self._arrived.put_nowait((time.perf_counter(), {"type": _CLOSED}))

    async def send(self, message: Message) -> str:
        """Send with a fresh id; returns the id the reply will answer."""
        assert self._ws is not None
        message = {"id": f"v{time.monotonic_ns()}", **message}
        await self._ws.send(json.dumps(message))
        return str(message["id"])

    async def receive(self, deadline: float) -> tuple[float, Message]:
        """The next message (held ones first) with its arrival time; BenchmarkError past
        ``deadline`` (a ``time.perf_counter`` value) or if the broker hung up."""
        if self._held:
            return self._held.pop(0)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                at, message = await self._arrived.get()
        except TimeoutError:
            raise BenchmarkError("no answer from the broker in time") from None
        if message.get("type") == _CLOSED:
            self._arrived.put_nowait((at, message))  # and for any later call
            raise BenchmarkError("the broker closed the bus connection")
        return at, message

    async def request(self, message: Message, within: float = 30.0) -> Message:
        """Send and return the direct reply; what arrives meanwhile is held for `receive`."""
        request_id = await self.send(message)
        deadline = time.perf_counter() + within
        skipped: list[tuple[float, Message]] = []
        while True:
            at, reply = await self.receive(deadline)
            if reply.get("response_to") == request_id:
                self._held = skipped + self._held
                return reply
            skipped.append((at, reply))

    async def final(self, query_id: str, kinds: Sequence[str], within: float) -> Message:
        """The query's first event of one of ``kinds`` (or its error)."""
        deadline = time.perf_counter() + within
        while True:
            _, message = await self.receive(deadline)
            if message.get("query_id") != query_id:
                continue
            if message.get("type") == "error":
                raise BenchmarkError(f"the broker answered an error: {message}")
            if message.get("type") in kinds:
                return message


async def run_voice(
    params: VoiceParams | None = None, *, console: Console | None = None
) -> VoiceReport:
    """Ask every question ``repeat`` times after one untimed warm-up turn, and draw the
    timeline of the slowest full answer (the one with the most to show).

    Raises :class:`BenchmarkError` if the workers never become healthy or a turn fails.
    """
    params = params or VoiceParams()
    async with AsyncExitStack() as stack:
        if params.url is None:
            note(console, "starting a broker with the offline stt, chat and tts workers")
            broker = await stack.enter_async_context(bench_broker(_broker_env()))
            url, key = broker.process.url, broker.sysop_key
        else:
            url, key = params.url.rstrip("/"), str(params.api_key)
        progress = stack.enter_context(progress_bars(console, 34))
        await _wait_healthy(url, key, progress, console)
        bus = await stack.enter_async_context(TimedBus(_ws_url(url), key))
        task = progress.add_task("speaking the questions", total=len(params.asked))
        spoken: list[tuple[str, str]] = []
        for question in params.asked:
            spoken.append((question, await _speak(bus, question)))
            progress.advance(task)
        task = progress.add_task("warm-up turn", total=1)
        await _turn(bus, *spoken[0])  # the chat model's first answer pays for its warm-up
        progress.advance(task)
        task = progress.add_task("timed turns", total=len(spoken) * params.repeat)
        turns: list[Turn] = []
        for _ in range(params.repeat):
            for question, audio in spoken:
                turns.append(await _turn(bus, question, audio))
                progress.advance(task)
    slowest = max(turns, key=lambda t: t.full_answer)
    timeline = await asyncio.to_thread(draw_timeline, slowest, params.out)
    return VoiceReport(params=params, turns=tuple(turns), timeline=timeline)


def _broker_env() -> dict[str, str]:
    """The offline workers as `scripts/serve` starts them (without vision, not used here),
    health checked often enough to be admitted quickly, no per-key query limit, and time
    for a long answer on a busy machine (the default 30 s per step would fail the turn, and
    the bench measures how long it takes, not the limit)."""
    return {
        "RENTAHAL_QUERY_TIMEOUT": str(TURN_WITHIN),
        "RENTAHAL_LOCAL_WORKERS": ",".join(ROLES),
        "RENTAHAL_LOCAL_WORKER_PORT": "0",
        "RENTAHAL_HEALTH_CHECK_INTERVAL": "1.0",
        "RENTAHAL_QUERIES_PER_MINUTE_USER": "0",
        "RENTAHAL_QUERIES_PER_MINUTE_PER_KEY": "0",
        "RENTAHAL_QUERIES_PER_MINUTE_PER_IP": "0",
    }


def _ws_url(url: str) -> str:
    return re.sub(r"^http", "ws", url) + "/ws"


async def _wait_healthy(url: str, key: str, progress: Progress, console: Console | None) -> None:
    """Until a worker of each role has full health, as a sysop sees it (REST worker list).

    A key that may not list workers (not a sysop's) skips the wait: the warm-up turn then
    waits for the workers instead.
    """
    task = progress.add_task("workers healthy (stt, chat, tts)", total=len(ROLES))
    deadline = time.monotonic() + READY_WITHIN
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as http:
        while True:
            try:
                answer = await http.get(
                    "/api/v1/workers", headers={"Authorization": f"Bearer {key}"}
                )
            except httpx.HTTPError as exc:
                raise BenchmarkError(f"cannot reach the broker at {url}: {exc!r}") from None
            if answer.status_code in (401, 403):
                progress.remove_task(task)
                note(console, "this key cannot list workers; the warm-up turn waits for them")
                return
            if answer.status_code != 200:
                raise BenchmarkError(f"{url}/api/v1/workers answered {answer.status_code}")
            healthy = {w["type"] for w in answer.json() if w.get("health_score") == 100}
            progress.update(task, completed=len(healthy & set(ROLES)))
            if healthy >= set(ROLES):
                return
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(set(ROLES) - healthy))
                raise BenchmarkError(f"no healthy {missing} worker within {READY_WITHIN:.0f} s")
            await asyncio.sleep(0.5)


async def _speak(bus: TimedBus, text: str) -> str:
    """``text`` spoken by the realm's TTS worker: a base64 WAV."""
    accepted = await bus.request(steady_speech(text))
    if accepted.get("type") != "query_accepted":
        raise BenchmarkError(f"text_to_speech refused: {accepted}")
    spoken = await bus.final(accepted["query_id"], ("speech_result",), TURN_WITHIN)
    return str(spoken["audio"])


async def _turn(bus: TimedBus, question: str, audio: str) -> Turn:
    """Ask ``audio`` as the voice mode does and stamp each of the query's events."""
    sent = time.perf_counter()
    accepted = await bus.request(
        {
            "type": "submit_query",
            "query": {"query_type": "speech", "audio": audio, "options": {"speak": True}},
        }
    )
    if accepted.get("type") != "query_accepted":
        raise BenchmarkError(f"the speech query was refused: {accepted}")
    query_id = accepted["query_id"]
    deadline = sent + TURN_WITHIN
    stt = first_text = first_sentence = math.nan
    transcript, text = "", ""
    chunks: list[Chunk] = []
    while True:
        at, message = await bus.receive(deadline)
        if message.get("query_id") != query_id:
            continue
        since, kind = at - sent, message.get("type")
        if kind == "transcription_result":
            stt, transcript = since, str(message.get("text", ""))
        elif kind == "query_chunk":
            first_text = since if math.isnan(first_text) else first_text
            text += str(message.get("delta", ""))
            if math.isnan(first_sentence) and _SENTENCE_END.search(text):
                first_sentence = since
        elif kind == "speech_chunk":
            seconds = wav_seconds(str(message["audio"]))
            chunks.append(Chunk(int(message["seq"]), since, str(message["text"]), seconds))
        elif kind == "error":
            raise BenchmarkError(f"the speech query failed: {message}")
        elif kind == "query_result":
            return _finished(
                question, audio, message, since, stt, first_text, first_sentence, transcript, chunks
            )


def _finished(
    question: str,
    audio: str,
    result: Message,
    full_answer: float,
    stt: float,
    first_text: float,
    first_sentence: float,
    transcript: str,
    chunks: list[Chunk],
) -> Turn:
    """The turn from its final event; what was not streamed happened at the final result."""
    if math.isnan(stt):
        raise BenchmarkError("the speech query ended without a transcription_result")
    final_audio = result.get("audio")
    if not final_audio and not chunks:
        raise BenchmarkError(f"the answer was not spoken: {str(result)[:300]}")
    return Turn(
        question=question,
        question_seconds=wav_seconds(audio),
        transcript=transcript or str(result.get("transcript", "")),
        answer=str(result.get("result", "")),
        stt=stt,
        first_text=_earliest(first_text, chunks, full_answer),
        first_sentence=_earliest(first_sentence, chunks, full_answer),
        first_audio=chunks[0].at if chunks else full_answer,
        full_answer=full_answer,
        chunks=tuple(chunks),
        final_audio_seconds=wav_seconds(str(final_audio)) if final_audio else 0.0,
        text_streamed=not math.isnan(first_text),
    )


def _earliest(streamed: float, chunks: Sequence[Chunk], final: float) -> float:
    """When the client first had the text: from `query_chunk`, else the first spoken chunk
    (its text is a written sentence), else the final result. A broker that speaks while it
    writes but does not stream the text still shows the text as it speaks."""
    return min(
        streamed if not math.isnan(streamed) else math.inf, *(c.at for c in chunks[:1]), final
    )


def draw_timeline(turn: Turn, out: Path) -> Path | None:
    """A PNG of one turn: a bar per stage on a time axis from the question sent, then each
    spoken piece where a listener hears it; the target's two lines for comparison.
    None when matplotlib is not installed (the figures do not need it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows: list[tuple[str, float, float, str]] = [
        ("STT", 0.0, turn.stt, "tab:blue"),
        ("first text", turn.stt, turn.first_text, "tab:orange"),
        ("first sentence written", turn.first_text, turn.first_sentence, "tab:olive"),
        ("first audio", turn.first_sentence, turn.first_audio, "tab:red"),
        ("full answer (query_result)", turn.stt, turn.full_answer, "tab:gray"),
    ]
    source = "speech_chunk" if turn.audio_streamed else "final query_result"
    for index, (start, end) in enumerate(turn.playback()):
        label = f"chunk {index} heard" if turn.chunks else "answer heard"
        rows.append((label, start, end, "tab:green"))
    height = 1.2 + 0.35 * len(rows)
    figure, axes = plt.subplots(figsize=(10, height))
    for y, (_, start, end, colour) in enumerate(reversed(rows)):
        axes.barh(y, max(abs(end - start), 0.01), left=min(start, end), color=colour)
        axes.text(end, y, f" {end:.2f} s", va="center", fontsize=8)
    for arrival in (c.at for c in turn.chunks):
        axes.axvline(arrival, color="tab:green", linewidth=0.5, alpha=0.5)
    axes.axvline(TARGET_P50, color="black", linestyle="--", linewidth=1, label="target p50 1.5 s")
    axes.axvline(TARGET_WORST, color="black", linestyle=":", linewidth=1, label="worst 2.5 s")
    axes.set_yticks(range(len(rows)), [label for label, *_ in reversed(rows)], fontsize=8)
    axes.set_xlabel("seconds after the question was sent (the end of the question)")
    axes.set_title(f"{turn.question!r}: first audio from {source}", fontsize=10)
    axes.set_xlim(0, max(end for *_, end, _ in rows) * 1.12)  # room for the last label
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"voice-timeline-{datetime.now(UTC):%Y%m%dT%H%M%S}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
