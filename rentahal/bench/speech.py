"""The speech benchmark: how fast do this machine's STT and TTS engines run, and what does the
worker's HTTP hop add?

For every installed TTS engine, one run loads it and times the synthesis of a fixed set of
short English sentences; every installed STT engine then transcribes the clips each TTS engine
made in the same run, so the audio is real speech and the transcripts can be checked against
the sentences. Each engine is measured twice, side by side:

1. **in process**: the engine called directly (in a thread, as the worker app calls it), the
   best this machine can do;
2. **through a worker**: the same requests POSTed to ``/predict`` of a real ``rentahal worker``
   process serving the same engine with the same settings.

The report gives seconds per request (median and p90), the real-time factor (processing
time ÷ audio duration: below 1 is faster than real time), STT accuracy per source voice, and
the worker's overhead as through-worker ÷ in-process seconds.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
import wave
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import Progress

from rentahal.bench.console import note, progress_bars
from rentahal.bench.provenance import measured_now, this_machine
from rentahal.bench.realm import BenchmarkError
from rentahal.bench.stats import percentile
from rentahal.testing.worker import WorkerProcess
from rentahal.worker.engines import ENGINES, Engine, EngineOptions, engine_class
from rentahal.worker.protocol import SttRequest, SttResponse, TtsRequest, TtsResponse

SENTENCES: tuple[str, ...] = (
    "What is the weather today?",
    "Computer, read my new mail.",
    "Please turn off the lights in the kitchen.",
    "Tell me a story about a dragon.",
    "What time does the library close?",
    "How far away is the moon?",
    "Remind me to call my mother tomorrow.",
    "Play some quiet music in the living room.",
)
"""What a voice assistant hears and says: short, everyday, no numbers or abbreviations, so an
exact word-for-word match is a fair test of a transcript (a model may write "10" for "ten")."""

REQUEST_TIMEOUT = 120.0
"""Seconds a worker may take per request: far beyond any healthy answer on a slow CPU."""

Response = TypeVar("Response", bound=BaseModel)
Call = Callable[[BaseModel], Awaitable[Response]]


class NoSpeechEngines(BenchmarkError):
    """No STT or no TTS engine can run here, so there is nothing to transcribe or speak."""


@dataclass(frozen=True)
class SpeechParams:
    """What to run. ``worker_passes`` is separate from ``repeat`` because the HTTP hop costs
    milliseconds against transcriptions of half a second: one pass over every request
    measures it well, while ``repeat`` passes would double the run."""

    repeat: int = 3
    """Timed passes over the requests in process, after one warm-up request."""
    worker_passes: int = 1
    """Timed passes over the same requests through the worker, after one warm-up request."""
    sentences: tuple[str, ...] = SENTENCES

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.worker_passes < 1:
            raise ValueError("repeat and worker_passes must be at least 1")
        if not self.sentences:
            raise ValueError("there must be at least one sentence")


@dataclass(frozen=True)
class Spread:
    """The median and the tail (p90) of a sample; p90 rather than p99 because a run has
    tens of samples per engine, not hundreds."""

    p50: float
    p90: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(p50=percentile(values, 50), p90=percentile(values, 90))

    def as_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p90": self.p90}


@dataclass(frozen=True)
class Timing:
    """One way of serving the requests: seconds per request and the real-time factor."""

    samples: int
    seconds: Spread
    """Per request, as the caller sees it."""
    rtf: Spread
    """Processing seconds ÷ audio seconds, per request: below 1 is faster than real time."""
    engine_seconds: Spread | None = None
    """Through a worker, the engine's own time as the worker reports it (STT answers carry
    ``processing_time``), which splits the overhead into HTTP and the engine itself."""

    @classmethod
    def of(
        cls,
        seconds: Sequence[float],
        audio_seconds: Sequence[float],
        engine_seconds: Sequence[float] | None = None,
    ) -> Timing:
        rtf = [s / audio for s, audio in zip(seconds, audio_seconds, strict=True)]
        return cls(
            samples=len(seconds),
            seconds=Spread.of(seconds),
            rtf=Spread.of(rtf),
            engine_seconds=None if engine_seconds is None else Spread.of(engine_seconds),
        )

    def as_dict(self) -> dict[str, Any]:
        figures = {
            "samples": self.samples,
            "seconds": self.seconds.as_dict(),
            "rtf": self.rtf.as_dict(),
        }
        if self.engine_seconds is not None:
            figures["engine_seconds"] = self.engine_seconds.as_dict()
        return figures


@dataclass(frozen=True, kw_only=True)
class EngineFigures:
    """What one engine did in process and through its worker."""

    engine: str
    model: str
    load_seconds: float
    """Loading the model in process (the worker loaded its own copy before the run)."""
    in_process: Timing
    through_worker: Timing

    @property
    def worker_overhead(self) -> float:
        """Through-worker ÷ in-process median seconds: what the HTTP hop costs."""
        return self.through_worker.seconds.p50 / self.in_process.seconds.p50

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "model": self.model,
            "load_seconds": self.load_seconds,
            "in_process": self.in_process.as_dict(),
            "through_worker": self.through_worker.as_dict(),
            "worker_overhead": self.worker_overhead,
        }


@dataclass(frozen=True, kw_only=True)
class TtsFigures(EngineFigures):
    audio_seconds: Spread
    """Seconds of speech produced per sentence."""

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {"audio_seconds": self.audio_seconds.as_dict()}


@dataclass(frozen=True)
class Miss:
    """A clip whose transcript was not the sentence, kept so a reader can judge the miss."""

    source: str
    sentence: str
    transcript: str


@dataclass(frozen=True, kw_only=True)
class SttFigures(EngineFigures):
    clips: dict[str, int]
    """Clips transcribed per source TTS engine."""
    matched: dict[str, int]
    """Clips whose transcript equals the sentence, word for word, per source TTS engine."""
    misses: tuple[Miss, ...]

    @property
    def accuracy(self) -> dict[str, float]:
        """Fraction of each source's clips transcribed exactly (see :func:`words`)."""
        return {source: self.matched[source] / n for source, n in self.clips.items()}

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {
            "accuracy": self.accuracy,
            "clips": self.clips,
            "matched": self.matched,
            "misses": [vars(miss) for miss in self.misses],
        }


@dataclass(frozen=True)
class SpeechReport:
    params: SpeechParams
    tts: tuple[TtsFigures, ...]
    stt: tuple[SttFigures, ...]
    measured_at: str = field(default_factory=measured_now)
    machine: str = field(default_factory=this_machine)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures (overheads, accuracies) included."""
        return {
            "repeat": self.params.repeat,
            "worker_passes": self.params.worker_passes,
            "sentences": list(self.params.sentences),
            "tts": [figures.as_dict() for figures in self.tts],
            "stt": [figures.as_dict() for figures in self.stt],
            "measured_at": self.measured_at,
            "machine": self.machine,
        }


@dataclass(frozen=True)
class Clip:
    """A sentence as one TTS engine spoke it: what the STT engines transcribe."""

    source: str
    sentence: str
    audio: str  # base64 WAV, as the worker protocol carries it
    seconds: float


def words(text: str) -> str:
    """Lower case, punctuation gone, single spaces: "Computer, read my mail." and
    "computer read my mail" compare equal, so only the words themselves count."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def wav_seconds(audio_b64: str) -> float:
    """Duration of a base64 WAV, from its header."""
    with wave.open(io.BytesIO(base64.b64decode(audio_b64))) as audio:
        return audio.getnframes() / audio.getframerate()


def installed(role: str) -> list[str]:
    """The role's engines that can run here with their offline defaults, best first."""
    options = EngineOptions()
    return [name for name, _ in ENGINES[role] if engine_class(role, name).available(options)]


async def run_speech(
    params: SpeechParams | None = None, *, console: Console | None = None
) -> SpeechReport:
    """Measure every installed TTS engine, then every installed STT engine on their clips.

    ``console`` shows progress (pass one writing to stderr to keep stdout clean for
    ``--json``). The worker processes are stopped when this returns or raises.

    Raises :class:`NoSpeechEngines` if there is no STT or no TTS engine, and
    :class:`BenchmarkError` if an engine fails to load or to answer.
    """
    params = params or SpeechParams()
    tts_names, stt_names = installed("tts"), installed("stt")
    for role, names in (("tts", tts_names), ("stt", stt_names)):
        if not names:
            known = ", ".join(name for name, _ in ENGINES[role])
            raise NoSpeechEngines(
                f"no {role.upper()} engine can run here; install one of: {known} "
                "(faster-whisper and piper: pip install 'rentahal[worker]'; "
                "espeak-ng: apt-get install espeak-ng)"
            )
    async with AsyncExitStack() as stack:
        note(console, f"starting workers: {', '.join([*tts_names, *stt_names])}")
        # All at once and before any timing, so their loading competes with nothing
        # measured; once loaded they sit idle until their turn.
        workers = await _start_workers(
            stack, [("tts", name) for name in tts_names] + [("stt", name) for name in stt_names]
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=REQUEST_TIMEOUT, trust_env=False)
        )
        progress = stack.enter_context(progress_bars(console, 28))
        tts: list[TtsFigures] = []
        clips: list[Clip] = []
        for name in tts_names:
            figures, made = await _bench_tts(
                name, _Phase(workers["tts", name], client, progress, params)
            )
            tts.append(figures)
            clips += made
        stt = [
            await _bench_stt(name, clips, _Phase(workers["stt", name], client, progress, params))
            for name in stt_names
        ]
    return SpeechReport(params=params, tts=tuple(tts), stt=tuple(stt))


async def _start_workers(
    stack: AsyncExitStack, wanted: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], WorkerProcess]:
    """A `rentahal worker` per (role, engine), up (model loaded), stopped when ``stack``
    closes. Started and stopped all at once: one by one, each costs the run a second more."""
    workers = {(role, name): WorkerProcess(role, "--engine", name) for role, name in wanted}
    stack.push_async_callback(_stop_all, list(workers.values()))
    try:
        async with asyncio.TaskGroup() as group:  # a failed start cancels the others
            for worker in workers.values():
                group.create_task(worker.start())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return workers


async def _stop_all(workers: Sequence[WorkerProcess]) -> None:
    """Stop every worker, even if stopping one fails (a worker never started is a no-op)."""
    await asyncio.gather(*(worker.stop() for worker in workers), return_exceptions=True)


@dataclass(frozen=True)
class _Phase:
    """What measuring one engine needs besides the engine: its worker, an HTTP client, the
    progress display and the parameters."""

    worker: WorkerProcess
    client: httpx.AsyncClient
    progress: Progress
    params: SpeechParams

    async def measure(
        self,
        label: str,
        call: Call[Response],
        requests: Sequence[BaseModel],
        *,
        passes: int,
    ) -> list[tuple[int, float, Response]]:
        """Time ``passes`` passes of ``call`` over ``requests`` after one untimed warm-up
        (first calls pay for lazy initialisation: thread pools, caches, connections).

        Returns (index into ``requests``, seconds, response), pass after pass.
        """
        task = self.progress.add_task(label, total=1 + passes * len(requests))
        await call(requests[0])
        self.progress.advance(task)
        samples: list[tuple[int, float, Response]] = []
        for _ in range(passes):
            for index, request in enumerate(requests):
                started = time.perf_counter()
                response = await call(request)
                samples.append((index, time.perf_counter() - started, response))
                self.progress.advance(task)
        return samples

    def in_process(self, engine: Engine, kind: type[Response]) -> Call[Response]:
        """Calls ``engine`` in a thread, as the worker app does (without HTTP)."""

        async def call(request: BaseModel) -> Response:
            try:
                response = await asyncio.to_thread(engine.run, request)
            except Exception as exc:
                raise BenchmarkError(f"{engine.name} failed in process: {exc}") from exc
            if not isinstance(response, kind):
                raise BenchmarkError(f"{engine.name} answered a {type(response).__name__}")
            return response

        return call

    def through_worker(self, kind: type[Response]) -> Call[Response]:
        """POSTs to the worker's ``/predict`` and parses the answer, as a broker does."""
        url = f"{self.worker.url}/predict"

        async def call(request: BaseModel) -> Response:
            try:
                answer = await self.client.post(url, json=request.model_dump(exclude_none=True))
            except httpx.HTTPError as exc:
                raise BenchmarkError(f"{url} failed: {exc!r}") from exc
            if answer.status_code != 200:
                raise BenchmarkError(f"{url} answered {answer.status_code}: {answer.text[:300]}")
            try:
                return kind.model_validate_json(answer.content)
            except ValidationError as exc:
                raise BenchmarkError(f"{url} answered an unexpected body: {exc}") from None

        return call


async def _load(role: str, name: str) -> tuple[Engine, float]:
    """The engine with its offline default, loaded (in a thread, as the worker loads it),
    and how long loading took."""
    engine = engine_class(role, name)(EngineOptions())
    started = time.perf_counter()
    try:
        await asyncio.to_thread(engine.load)
    except Exception as exc:
        raise BenchmarkError(f"loading the {role} engine {name} failed: {exc}") from exc
    return engine, time.perf_counter() - started


async def _bench_tts(name: str, phase: _Phase) -> tuple[TtsFigures, list[Clip]]:
    """Time one TTS engine on the sentences; its clips are those of the first timed pass."""
    engine, load_seconds = await _load("tts", name)
    sentences = phase.params.sentences
    requests = [TtsRequest(prompt=sentence) for sentence in sentences]
    local = await phase.measure(
        f"{name} in process",
        phase.in_process(engine, TtsResponse),
        requests,
        passes=phase.params.repeat,
    )
    remote = await phase.measure(
        f"{name} through worker",
        phase.through_worker(TtsResponse),
        requests,
        passes=phase.params.worker_passes,
    )
    local_audio = [wav_seconds(response.audio_base64) for _, _, response in local]
    clips = [
        Clip(name, sentences[index], response.audio_base64, seconds)
        for (index, _, response), seconds in zip(local, local_audio, strict=True)
    ][: len(sentences)]
    figures = TtsFigures(
        engine=name,
        model=", ".join(engine.models),
        load_seconds=load_seconds,
        in_process=_timing(local, local_audio),
        through_worker=_timing(remote, [wav_seconds(r.audio_base64) for _, _, r in remote]),
        audio_seconds=Spread.of(local_audio),
    )
    return figures, clips


async def _bench_stt(name: str, clips: Sequence[Clip], phase: _Phase) -> SttFigures:
    """Time one STT engine on every clip and check its first-pass transcripts."""
    engine, load_seconds = await _load("stt", name)
    requests = [SttRequest(audio=clip.audio) for clip in clips]
    local = await phase.measure(
        f"{name} in process",
        phase.in_process(engine, SttResponse),
        requests,
        passes=phase.params.repeat,
    )
    remote = await phase.measure(
        f"{name} through worker",
        phase.through_worker(SttResponse),
        requests,
        passes=phase.params.worker_passes,
    )
    clips_by_source: dict[str, int] = {}
    matched: dict[str, int] = {}
    misses: list[Miss] = []
    for index, _, response in local[: len(clips)]:
        clip = clips[index]
        clips_by_source[clip.source] = clips_by_source.get(clip.source, 0) + 1
        hit = words(response.text) == words(clip.sentence)
        matched[clip.source] = matched.get(clip.source, 0) + hit
        if not hit:
            misses.append(Miss(clip.source, clip.sentence, response.text))
    return SttFigures(
        engine=name,
        model=", ".join(engine.models),
        load_seconds=load_seconds,
        in_process=_timing(local, [clips[index].seconds for index, _, _ in local]),
        through_worker=_timing(
            remote,
            [clips[index].seconds for index, _, _ in remote],
            [response.processing_time for _, _, response in remote],
        ),
        clips=clips_by_source,
        matched=matched,
        misses=tuple(misses),
    )


def _timing(
    samples: Sequence[tuple[int, float, BaseModel]],
    audio: Sequence[float],
    engine: Sequence[float] | None = None,
) -> Timing:
    """The samples' seconds against ``audio``, the seconds of speech in each one's clip."""
    return Timing.of([seconds for _, seconds, _ in samples], audio, engine)
