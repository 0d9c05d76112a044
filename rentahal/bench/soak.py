"""The soak benchmark: a mixed load on one broker for a while, its workers killed under it.

Issue 16 asks for a run that shows two things a short benchmark cannot: that no job is ever
lost when workers crash mid-run, and that the broker's memory stays flat under a steady load.
One run:

- starts four worker stubs as real processes: two RENT A HAL worker stubs, each registered as
  a `chat` and a `vision` worker, and two OpenAI-compatible stubs, each registered as an
  `stt` and a `tts` worker (the RENT A HAL worker stub answers only chat-shaped `/predict`
  bodies; the OpenAI stub transcribes and speaks), so every type has two workers on two
  processes;
- connects C guests to the bus, each keeping D jobs in flight in a closed loop, every job a
  random type of the mix (:data:`MIX`: chat, vision with a small JPEG, speech to text with a
  short WAV, text to speech) for ``seconds``;
- meanwhile, at random intervals (exponential, mean ``kill_every``; the first within the
  first third of the run), SIGKILLs one of the stub processes, as a crash would, and starts
  it again on the same port after 0.5–3 s, so the broker must retry the jobs it had there on
  the other process or after the restart;
- samples the broker's RSS every second, and after the load stops waits up to ``drain``
  seconds for every accepted job to end.

Every job submitted is then exactly one of: **finished** (its result came), **failed** (an
`error` naming it, with the broker's explanation), **refused** (an `error` answering the
submission: it was never accepted), **lost** (accepted, but no final event ever came) or
**unanswered** (the broker never answered the submission). Lost and unanswered must be 0;
the command exits 1 otherwise. The memory figures are RSS at the start, the end and its
maximum, and the least-squares slope in KiB per minute, over the whole run and over its second
half (after warm-up): a leak shows as a slope that does not fall to about 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import random
import secrets
import time
import wave
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, TextColumn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from rentahal.bench.console import note, progress_bars
from rentahal.bench.fanout import Spread, rss_kib, slope
from rentahal.bench.overhead import json_safe
from rentahal.bench.provenance import measured_now, this_machine
from rentahal.bench.realm import (
    BenchBroker,
    BenchmarkError,
    bench_broker,
    limits_out_of_the_way,
    process_cpu_seconds,
)
from rentahal.bench.voice import DEFAULT_OUT
from rentahal.testing.process import StubServer

DEFAULT_SECONDS = 300.0
QUICK_SECONDS = 20.0
DEFAULT_KILL_EVERY = 30.0
QUICK_KILL_EVERY = 5.0
"""``--quick``'s run and kill interval unless given: a smoke run (CI) with a few kills."""
QUICK_CIRCUIT_OPEN = 5.0
"""``--quick`` also shortens how long a worker's circuit breaker stays open after a crash
(the broker's default is 30 s, `RENTAHAL_CIRCUIT_OPEN_SECONDS`), so that a smoke run drains
in seconds; a full run keeps the broker's default, whose cost it is meant to show."""

MIX: dict[str, float] = {"chat": 0.5, "vision": 0.2, "stt": 0.15, "tts": 0.15}
"""The share of each query type among the jobs."""
DOWNTIME = (0.5, 3.0)
"""Seconds a killed stub stays down before it is started again (uniform)."""
OPENAI_MODELS = ["whisper-1", "tts-1"]
SAMPLE_EVERY = 1.0
"""Seconds between two readings of the broker's RSS."""
FAILURE_SAMPLES = 5


@dataclass(frozen=True)
class SoakParams:
    """What to run: C clients × D jobs in flight for ``seconds``, a stub killed every
    ``kill_every`` seconds on average, stubs answering after ``latency``; ``quick`` marks a
    smoke run. ``seed`` makes the mix and the kills repeatable (None: a random one, reported)."""

    seconds: float = DEFAULT_SECONDS
    clients: int = 8
    in_flight: int = 2
    kill_every: float = DEFAULT_KILL_EVERY
    latency: float = 0.05
    drain: float = 60.0
    seed: int | None = None
    quick: bool = False
    out: Path = DEFAULT_OUT

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.kill_every <= 0 or self.drain <= 0:
            raise ValueError("seconds, kill_every and drain must be positive")
        if self.clients < 1 or self.in_flight < 1:
            raise ValueError("clients and in_flight must be at least 1")
        if self.latency < 0:
            raise ValueError("latency must not be negative")

    def broker_env(self) -> dict[str, str]:
        """The broker's limits out of the way for the clients (and the sysop); for a quick
        run, circuits open for :data:`QUICK_CIRCUIT_OPEN` seconds only."""
        env = limits_out_of_the_way(self.clients + 1)
        if self.quick:
            env["RENTAHAL_CIRCUIT_OPEN_SECONDS"] = str(QUICK_CIRCUIT_OPEN)
        return env


@dataclass(frozen=True)
class Kill:
    """One crash: which stub, and when it died and came back (seconds from the start)."""

    stub: str
    killed_at: float
    restarted_at: float


@dataclass(frozen=True)
class MemorySample:
    at: float
    """Seconds from the start of the load."""
    rss_kib: int


@dataclass(frozen=True)
class TypeFigures:
    """The jobs of one query type."""

    query_type: str
    submitted: int
    finished: int
    failed: int
    latency: Spread
    """Submission → result, over the finished jobs."""


@dataclass(frozen=True)
class SoakReport:
    """Everything one run measured; derived figures are computed, never stored."""

    params: SoakParams
    seed: int
    submitted: int
    finished: int
    failed: int
    refused: int
    lost: int
    unanswered: int
    failures: dict[str, int]
    """How many jobs failed or were refused with each error code."""
    failure_samples: tuple[str, ...]
    by_type: tuple[TypeFigures, ...]
    kills: tuple[Kill, ...]
    memory: tuple[MemorySample, ...]
    load_seconds: float
    drain_seconds: float
    """From the end of the load until the last job ended (or the drain gave up)."""
    broker_cpu_seconds: float | None
    finished_per_second: tuple[int, ...]
    """Jobs finished in each second from the start: the plot's throughput."""
    connection_losses: tuple[str, ...] = ()
    """Clients whose socket closed under them, and why (should be none)."""
    lost_samples: tuple[str, ...] = ()
    plot: Path | None = None
    report_file: Path | None = None
    measured_at: str = field(default_factory=measured_now)
    machine: str = field(default_factory=this_machine)

    @property
    def missing(self) -> int:
        """Jobs with no outcome: lost plus unanswered (must be 0)."""
        return self.lost + self.unanswered

    @property
    def rss_start_kib(self) -> int:
        return self.memory[0].rss_kib if self.memory else 0

    @property
    def rss_end_kib(self) -> int:
        return self.memory[-1].rss_kib if self.memory else 0

    @property
    def rss_max_kib(self) -> int:
        return max((s.rss_kib for s in self.memory), default=0)

    @property
    def slope_kib_per_minute(self) -> float:
        """RSS growth over the whole run (least squares)."""
        return _slope_per_minute(self.memory)

    @property
    def late_slope_kib_per_minute(self) -> float:
        """RSS growth over the second half, after the caches and pools have warmed up: a
        leak keeps this well above 0."""
        half = self.memory[-1].at / 2 if self.memory else 0.0
        return _slope_per_minute([s for s in self.memory if s.at >= half])

    @property
    def throughput(self) -> float:
        """Jobs finished per second of load."""
        return self.finished / self.load_seconds if self.load_seconds > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures included."""
        data = asdict(self)
        data["params"]["out"] = str(self.params.out)
        data["plot"] = str(self.plot) if self.plot else None
        data["report_file"] = str(self.report_file) if self.report_file else None
        return data | {
            "missing": self.missing,
            "rss_start_kib": self.rss_start_kib,
            "rss_end_kib": self.rss_end_kib,
            "rss_max_kib": self.rss_max_kib,
            "slope_kib_per_minute": self.slope_kib_per_minute,
            "late_slope_kib_per_minute": self.late_slope_kib_per_minute,
            "throughput": self.throughput,
        }


def _slope_per_minute(samples: Sequence[MemorySample]) -> float:
    return slope((s.at / 60, s.rss_kib) for s in samples)


# --- running it --------------------------------------------------------------------------


async def run_soak(
    params: SoakParams | None = None, *, console: Console | None = None
) -> SoakReport:
    """Start the stubs and the broker, run the load with the kills, drain, report.

    ``console`` gets the steps and progress bars (stderr). Every process and temporary file
    is gone when this returns or raises, including on Ctrl+C.
    """
    params = params or SoakParams()
    seed = params.seed if params.seed is not None else secrets.randbits(32)
    async with AsyncExitStack() as stack:
        note(console, "starting four worker stubs and the broker")
        broker, stubs = await _start(stack, params)
        await _register(broker, stubs)
        note(console, f"broker pid {broker.process.pid}; load for {params.seconds:g} s")
        try:
            report = await _soak(broker, stubs, params, seed, console)
        except BenchmarkError as exc:
            tail = broker.process.output[-4000:]
            raise BenchmarkError(f"{exc}\n--- broker output (tail) ---\n{tail}") from None
    note(console, "writing the report")
    return await asyncio.to_thread(_write_files, report)


@dataclass(frozen=True)
class _Stub:
    """A stub process and the workers it is registered as."""

    label: str
    server: StubServer
    types: tuple[str, ...]
    models: tuple[str, ...] = ()


async def _start(stack: AsyncExitStack, params: SoakParams) -> tuple[BenchBroker, list[_Stub]]:
    """The broker and the four stubs, started side by side (a task group, so a failed
    start stops the others, which are then on ``stack``)."""
    stubs = [
        _Stub(f"rentahal-{i}", StubServer("rentahal", latency=params.latency), ("chat", "vision"))
        for i in (1, 2)
    ] + [
        _Stub(
            f"openai-{i}",
            StubServer("openai", latency=params.latency, models=OPENAI_MODELS),
            ("stt", "tts"),
            tuple(OPENAI_MODELS),
        )
        for i in (1, 2)
    ]
    try:
        async with asyncio.TaskGroup() as group:
            broker_task = group.create_task(
                stack.enter_async_context(bench_broker(params.broker_env()))
            )
            for stub in stubs:
                group.create_task(stack.enter_async_context(stub.server))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return broker_task.result(), stubs


async def _register(broker: BenchBroker, stubs: Sequence[_Stub]) -> None:
    """Each stub as a worker of each of its types, `<type>-<stub>`, added by the sysop."""
    async with broker.process.bus(api_key=broker.sysop_key) as sysop:
        for stub in stubs:
            for query_type in stub.types:
                worker = {
                    "name": f"{query_type}-{stub.label}",
                    "address": stub.server.address,
                    "kind": stub.server.protocol,
                    "type": query_type,
                    "models": list(stub.models),
                    "max_concurrency": 8,
                }
                reply = await sysop.request({"type": "add_worker", "worker": worker}, within=30)
                if reply.get("type") != "ok":
                    raise BenchmarkError(f"the broker refused worker {worker}: {reply}")


async def _soak(
    broker: BenchBroker,
    stubs: Sequence[_Stub],
    params: SoakParams,
    seed: int,
    console: Console | None,
) -> SoakReport:
    """Connect the clients, then run the load, the killer and the sampler together."""
    rng = random.Random(seed)
    ledger = _Ledger()
    payloads = _Payloads.make()
    clients = [
        _Client(i, broker.process.ws_url, ledger, random.Random(rng.random()), payloads)
        for i in range(params.clients)
    ]
    pid = broker.process.pid
    try:
        try:
            await asyncio.gather(*(client.connect() for client in clients))
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise BenchmarkError(f"connecting {params.clients} clients failed: {exc!r}") from exc
        with _progress(console) as progress:
            bar = _Bar(progress, params, ledger)
            started = time.monotonic()
            ledger.started = started
            end = started + params.seconds
            cpu_before = process_cpu_seconds(pid)
            memory: list[MemorySample] = []
            kills: list[Kill] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample(pid, started, memory, stop, bar))
            killer = asyncio.create_task(
                _killer(stubs, params, random.Random(rng.random()), started, kills)
            )
            lanes = [
                asyncio.create_task(client.lane(end))
                for client in clients
                for _ in range(params.in_flight)
            ]
            try:
                await asyncio.wait(lanes, timeout=params.seconds + params.drain)
                ended = time.monotonic()
                await killer  # a stub killed last is running again
                cpu = process_cpu_seconds(pid)
            finally:
                stop.set()
                for task in [*lanes, killer]:
                    task.cancel()
                await asyncio.gather(sampler, killer, *lanes, return_exceptions=True)
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    return _report(
        params,
        seed,
        ledger,
        clients,
        memory,
        kills,
        load_seconds=min(ended, end) - started,
        drain_seconds=max(0.0, ended - end),
        broker_cpu=cpu - cpu_before if cpu is not None and cpu_before is not None else None,
    )


async def _sample(
    pid: int | None,
    started: float,
    memory: list[MemorySample],
    stop: asyncio.Event,
    bar: _Bar,
) -> None:
    """The broker's RSS every :data:`SAMPLE_EVERY` seconds until ``stop``."""
    while not stop.is_set():
        rss = rss_kib(pid)
        if rss is not None:
            memory.append(MemorySample(time.monotonic() - started, rss))
        bar.update(rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)


async def _killer(
    stubs: Sequence[_Stub],
    params: SoakParams,
    rng: random.Random,
    started: float,
    kills: list[Kill],
) -> None:
    """SIGKILL a random stub at random intervals until the load ends, each started again
    after :data:`DOWNTIME`; the first kill comes within the first third of the run."""
    end = started + params.seconds
    wait = min(rng.expovariate(1 / params.kill_every), params.seconds / 3)
    while time.monotonic() + wait < end:
        await asyncio.sleep(wait)
        stub = rng.choice(stubs)
        killed_at = time.monotonic()
        await stub.server.kill()
        await asyncio.sleep(rng.uniform(*DOWNTIME))
        await stub.server.start()
        kills.append(Kill(stub.label, killed_at - started, time.monotonic() - started))
        wait = rng.expovariate(1 / params.kill_every)


# --- the clients -------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    query_type: str
    sent: float
    query_id: str | None = None
    outcome: str | None = None
    """None while it runs; then finished, failed or refused."""
    detail: str = ""
    latency: float = math.nan
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, outcome: str, now: float, detail: str = "") -> bool:
        """Record how it ended; False if it had already ended (a final event twice)."""
        if self.outcome is not None:
            return False
        self.outcome, self.detail, self.latency = outcome, detail, now - self.sent
        self.ended.set()
        return True


@dataclass(eq=False)
class _Ledger:
    """Every job of every client, and when jobs finished (one event loop: no locks)."""

    jobs: list[_Job] = field(default_factory=list)
    started: float = 0.0
    finished_at: list[float] = field(default_factory=list)
    ended: int = 0

    def count(self, ended: bool) -> None:
        if ended:
            self.ended += 1


def _explained(error: dict[str, Any]) -> str:
    """An error event as `code: message`, the broker's explanation of a failed job."""
    return f"{error.get('code')}: {error.get('message')}"


@dataclass(frozen=True)
class _Payloads:
    """The media the jobs send, made once: a small JPEG and a short WAV."""

    image: str
    audio: str

    @classmethod
    def make(cls) -> _Payloads:
        from PIL import Image

        picture = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 120, 40)).save(picture, format="JPEG")
        sound = io.BytesIO()
        with wave.open(sound, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(16_000)
            tone = (int(8000 * math.sin(2 * math.pi * 440 * i / 16_000)) for i in range(8000))
            wav.writeframes(b"".join(t.to_bytes(2, "little", signed=True) for t in tone))
        return cls(
            image=base64.b64encode(picture.getvalue()).decode(),
            audio=base64.b64encode(sound.getvalue()).decode(),
        )

    def message(self, query_type: str, number: int) -> dict[str, Any]:
        """The bus message that submits a job of ``query_type``."""
        if query_type == "vision":
            return {"type": "vision", "prompt": f"soak image {number}", "image": self.image}
        if query_type == "stt":
            return {"type": "speech_to_text", "audio": self.audio}
        if query_type == "tts":
            return {"type": "text_to_speech", "text": f"Soak test number {number}."}
        return {"type": "chat", "prompt": f"soak question {number}"}


class _Client:
    """A guest on the bus whose lanes each keep one job in flight until the load ends."""

    def __init__(
        self,
        index: int,
        url: str,
        ledger: _Ledger,
        rng: random.Random,
        payloads: _Payloads,
    ) -> None:
        self.index = index
        self.url = url
        self.ledger = ledger
        self.rng = rng
        self.payloads = payloads
        self.by_message: dict[str, _Job] = {}
        self.by_query: dict[str, _Job] = {}
        self.lost_connection: str | None = None
        self._early: dict[str, tuple[dict[str, Any], float]] = {}  # final before accepted
        self._closing = False
        self._sent = 0
        self._ready = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Open the socket and wait for the pong that follows the greeting."""
        self._ws = await connect(self.url, max_size=64 * 1024 * 1024, open_timeout=30)
        self._reader = asyncio.create_task(self._read(), name=f"soak-client-{self.index}")
        await self._ws.send(json.dumps({"type": "ping", "id": "ready"}))
        await asyncio.wait_for(self._ready.wait(), 30)

    async def lane(self, end: float) -> None:
        """Submit a job, wait for it to end, again, until ``end``."""
        types, weights = list(MIX), list(MIX.values())
        while time.monotonic() < end and self.lost_connection is None:
            (query_type,) = self.rng.choices(types, weights)
            job = await self._submit(query_type)
            await job.ended.wait()

    async def _submit(self, query_type: str) -> _Job:
        assert self._ws is not None
        self._sent += 1
        message_id = f"{self.index}-{self._sent}"
        job = _Job(query_type, time.monotonic())
        self.by_message[message_id] = job
        self.ledger.jobs.append(job)
        message = self.payloads.message(query_type, self._sent) | {"id": message_id}
        try:
            await self._ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            self.lost_connection = f"client {self.index}: {exc}"
        return job

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if message.get("type") == "ping":
                    await self._ws.send('{"type":"pong"}')
                else:
                    self._handle(message, time.monotonic())
        except ConnectionClosed as exc:
            if not self._closing:
                self.lost_connection = f"client {self.index}: {exc}"
        finally:
            if self.lost_connection is None and not self._closing:
                self.lost_connection = f"client {self.index}: the socket ended"
            for job in self.by_message.values():  # no lane waits forever on a dead socket
                job.ended.set()

    def _handle(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("type")
        if kind == "query_accepted":
            job = self.by_message.get(str(message.get("response_to")))
            if job is not None:
                job.query_id = str(message["query_id"])
                self.by_query[job.query_id] = job
                if job.query_id in self._early:
                    self._handle(*self._early.pop(job.query_id))
        elif message.get("is_final") is True:
            query_id = str(message.get("query_id"))
            job = self.by_query.get(query_id)
            if job is None:  # it ended before its query_accepted came: kept for it
                self._early[query_id] = (message, now)
                return
            if kind == "error":
                self.ledger.count(job.end("failed", now, _explained(message)))
            elif job.end("finished", now):
                self.ledger.count(True)
                self.ledger.finished_at.append(now)
        elif kind == "error" and message.get("query_id") is None:
            job = self.by_message.get(str(message.get("response_to")))
            if job is not None and job.query_id is None:
                self.ledger.count(job.end("refused", now, _explained(message)))
        elif kind == "pong" and message.get("response_to") == "ready":
            self._ready.set()

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# --- the report ----------------------------------------------------------------------------


def _report(
    params: SoakParams,
    seed: int,
    ledger: _Ledger,
    clients: Sequence[_Client],
    memory: list[MemorySample],
    kills: list[Kill],
    *,
    load_seconds: float,
    drain_seconds: float,
    broker_cpu: float | None,
) -> SoakReport:
    jobs = ledger.jobs
    outcomes = Counter(job.outcome for job in jobs)
    lost = [j for j in jobs if j.outcome is None and j.query_id is not None]
    unanswered = [j for j in jobs if j.outcome is None and j.query_id is None]
    failures = Counter(
        j.detail.split(":", 1)[0] for j in jobs if j.outcome in ("failed", "refused")
    )
    samples = [f"{j.query_type}: {j.detail}" for j in jobs if j.outcome in ("failed", "refused")]
    per_second = [0] * (math.ceil(load_seconds + drain_seconds) + 1)
    for at in ledger.finished_at:
        per_second[min(len(per_second) - 1, int(at - ledger.started))] += 1
    return SoakReport(
        params=params,
        seed=seed,
        submitted=len(jobs),
        finished=outcomes["finished"],
        failed=outcomes["failed"],
        refused=outcomes["refused"],
        lost=len(lost),
        unanswered=len(unanswered),
        failures=dict(failures),
        failure_samples=tuple(dict.fromkeys(samples))[:FAILURE_SAMPLES],
        by_type=tuple(_by_type(jobs, query_type) for query_type in MIX),
        kills=tuple(kills),
        memory=tuple(memory),
        load_seconds=load_seconds,
        drain_seconds=drain_seconds,
        broker_cpu_seconds=broker_cpu,
        finished_per_second=tuple(per_second),
        connection_losses=tuple(c.lost_connection for c in clients if c.lost_connection),
        lost_samples=tuple(f"{j.query_type} {j.query_id}" for j in lost[:FAILURE_SAMPLES]),
    )


def _by_type(jobs: Sequence[_Job], query_type: str) -> TypeFigures:
    mine = [j for j in jobs if j.query_type == query_type]
    finished = [j for j in mine if j.outcome == "finished"]
    return TypeFigures(
        query_type=query_type,
        submitted=len(mine),
        finished=len(finished),
        failed=sum(j.outcome == "failed" for j in mine),
        latency=Spread.of([j.latency for j in finished]),
    )


def _write_files(report: SoakReport) -> SoakReport:
    """The plot and the JSON report, side by side in ``params.out`` with one time stamp."""
    out = report.params.out
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    plot = draw_plot(report, stem.with_suffix(".png"))
    written = replace(report, plot=plot, report_file=stem.with_suffix(".json"))
    text = json.dumps(json_safe(written.as_dict()), indent=2, allow_nan=False)
    stem.with_suffix(".json").write_text(text + "\n")
    return written


def draw_plot(report: SoakReport, path: Path) -> Path | None:
    """The broker's RSS against time, jobs finished per second beneath it, each kill a red
    band from the kill to the restart, and the end of the load marked. None when matplotlib
    is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (memory, rate) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    memory.plot(
        [s.at for s in report.memory], [s.rss_kib / 1024 for s in report.memory], "-", lw=1.2
    )
    memory.set_ylabel("broker RSS (MiB)")
    rate.plot(range(len(report.finished_per_second)), report.finished_per_second, "-", lw=0.8)
    rate.set_ylabel("jobs finished / s")
    rate.set_xlabel("seconds from the start of the load")
    for axes in (memory, rate):
        for kill in report.kills:
            axes.axvspan(kill.killed_at, kill.restarted_at, color="red", alpha=0.2, lw=0)
        axes.axvline(report.load_seconds, color="grey", linestyle="--", lw=1)
        axes.grid(True, alpha=0.3)
    memory.set_title(
        f"bench soak: {report.params.clients}×{report.params.in_flight} in flight, "
        f"{len(report.kills)} kills (red), load ends at the dashed line; "
        f"{report.slope_kib_per_minute:+.0f} KiB/min over the run, "
        f"{report.late_slope_kib_per_minute:+.0f} over its second half",
        fontsize=9,
    )
    figure.suptitle(report.machine, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# --- progress ------------------------------------------------------------------------------


def _progress(console: Console | None) -> Progress:
    return progress_bars(console, 12, TextColumn("s"), TextColumn("{task.fields[status]}"))


class _Bar:
    """Seconds of load done, with the jobs ended so far and the broker's RSS."""

    def __init__(self, progress: Progress, params: SoakParams, ledger: _Ledger) -> None:
        self._progress = progress
        self._ledger = ledger
        self._total = params.seconds
        self._task = progress.add_task("soak", total=math.ceil(params.seconds), status="")

    def update(self, rss: int | None) -> None:
        ledger = self._ledger
        done = min(self._total, time.monotonic() - ledger.started)
        running = len(ledger.jobs) - ledger.ended
        memory = f", broker {rss / 1024:.0f} MiB" if rss is not None else ""
        status = f"{ledger.ended} jobs ended, {running} running{memory}"
        self._progress.update(self._task, completed=int(done), status=status)
