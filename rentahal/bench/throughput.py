"""The scheduler's throughput benchmark: how close does the broker get to its workers' capacity?

W stub workers answer every request after L seconds and each takes ``max_concurrency`` c
requests at once, so no scheduler can finish more than W·c/L jobs per second: the *ideal*.
One run measures, side by side:

1. **direct**: the N jobs posted straight to the stubs' ``/predict`` by a client that keeps
   W·c requests in flight, the best any broker could do on this machine (it measures the
   stubs' and the loopback's own overhead, which the broker cannot avoid either);
2. **broker**: U guests on the bus each submit N/U chat jobs at once, all up front, and wait
   for every ``query_result``.

The report puts broker throughput over ideal and over direct, the queue wait the broker
reports per job, the end-to-end latency the guests see, and how evenly the users were served
while the queue was long (Jain's index, see :func:`_fairness`).

The defaults (64 slots of 200 ms: 320 jobs/s) put the ideal above what one broker process
can do, so broker ÷ ideal shows how far the broker is from keeping its workers busy; with an
ideal under the broker's ceiling (the old 16 slots, 80 jobs/s) the ratio looked fine
whatever the broker cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
from rich.console import Console
from rich.progress import (
    Progress,
    TextColumn,
)
from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from rentahal.backends.transport import WorkerClient, post_json
from rentahal.bench.console import note, progress_bars
from rentahal.bench.provenance import measured_now, this_machine
from rentahal.bench.realm import (
    BenchBroker,
    BenchmarkError,
    bench_brokers,
    limits_out_of_the_way,
    process_cpu_seconds,
)
from rentahal.bench.stats import Quantiles, jain_index
from rentahal.cluster.node import redacted
from rentahal.testing.process import StubServer

DatabaseKind = Literal["sqlite", "postgresql"]

ERROR_SAMPLES = 5

GOAL = 0.95  # SPEC §16: ≥ 95 % of the ideal with 64 jobs in flight
"""Broker ÷ ideal the defaults should reach. Only the defaults are judged against it: their
ideal is above one broker process's ceiling, so reaching it means the broker keeps up."""

QUICK_USERS = 4
QUICK_JOBS = 128
"""``--quick``'s U and N unless given: two rounds of the default 64 slots, so the queue is
used, in about a second; a smoke run (CI), not figures."""


@dataclass(frozen=True)
class ThroughputParams:
    """What to run: by default W=4, c=16, L=200 ms (ideal 320 jobs/s), U=64, N=1280 on
    SQLite; ``quick`` marks a smoke run (see :data:`QUICK_JOBS`)."""

    workers: int = 4
    concurrency: int = 16
    latency: float = 0.2
    users: int = 64
    jobs: int = 1280
    database: DatabaseKind = "sqlite"
    database_url: str | None = None
    """For ``postgresql``: a server URL; the benchmark creates (and drops) its own database."""
    quick: bool = False
    brokers: int = 1
    """Broker processes of one cluster (more than one needs PostgreSQL and ``redis_url``);
    the users are dealt out to them in turn, as a round-robin balancer would."""
    redis_url: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1 or self.concurrency < 1 or self.users < 1:
            raise ValueError("workers, concurrency and users must be at least 1")
        if self.latency <= 0:
            raise ValueError("latency must be positive")
        if self.jobs < self.users:
            raise ValueError("jobs must be at least users (every user submits at least one)")
        if (self.database == "postgresql") != (self.database_url is not None):
            raise ValueError(
                "--database postgresql needs --database-url, which is only for postgresql"
            )
        if self.brokers > 1 and (self.redis_url is None or self.database != "postgresql"):
            raise ValueError("--brokers over 1 needs --redis-url and --database postgresql")

    @property
    def slots(self) -> int:
        return self.workers * self.concurrency

    @property
    def shape(self) -> tuple[int, int, float, int, int]:
        """W, c, L, U and N: what decides the load (not the store)."""
        return (self.workers, self.concurrency, self.latency, self.users, self.jobs)

    @property
    def judged(self) -> bool:
        """Whether :data:`GOAL` applies: the default shape, either store, one broker, not
        quick."""
        return not self.quick and self.brokers == 1 and self.shape == ThroughputParams().shape

    @property
    def ideal_throughput(self) -> float:
        """Jobs per second with every slot always busy: W·c/L."""
        return self.slots / self.latency

    def jobs_of(self, user: int) -> int:
        """User ``user``'s share of the N jobs (the first N mod U users get one more)."""
        return self.jobs // self.users + (1 if user < self.jobs % self.users else 0)

    def broker_env(self) -> dict[str, str]:
        """The broker's limits out of the way (one socket per user), so the benchmark
        measures the scheduler, not the limits."""
        return limits_out_of_the_way(self.users)


@dataclass(frozen=True)
class PhaseFigures:
    """One way of running the N jobs: how long it took and what each job saw."""

    seconds: float
    """From the first request sent to the last answer received."""
    completed: int
    """Jobs answered successfully."""
    errors: int
    latency: Quantiles
    """End to end per job: request sent → answer received (for the broker, includes queueing)."""

    @property
    def throughput(self) -> float:
        """Successful jobs per second of wall time."""
        return self.completed / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True)
class ThroughputReport:
    """Everything one run measured. Ratios are computed, never stored, so they always agree."""

    params: ThroughputParams
    direct: PhaseFigures
    broker: PhaseFigures
    queue_wait: Quantiles
    """The broker's own figure per job: accepted → dispatched to a worker."""
    processing_time: Quantiles
    """The broker's own figure per job: its request to the worker until the answer."""
    submit_seconds: float
    """From the first submission until the broker had accepted all N."""
    fairness: float
    """Jain's index over the users' finished shares when half of all jobs had finished."""
    fairness_at: int
    """How many jobs had finished when the fairness shares were taken."""
    fairness_fifo: float
    """The same index for the first jobs in the order the broker accepted them: what a
    first-come-first-served queue would have scored under this load. Only a fairness well
    above this shows that the scheduler, not the arrival order, shared the workers out."""
    user_finish_first: float
    """Seconds from the start until the first user had all their answers."""
    user_finish_last: float
    """Seconds from the start until the last user had all their answers."""
    broker_cpu_seconds: float | None = None
    """CPU time the broker process used during the broker phase (Linux only): with one
    event loop, near the wall time means the broker was CPU-bound."""
    loadgen_cpu_seconds: float | None = None
    """CPU time the load generator (this process) used during the broker phase, to check
    that it was not the bottleneck."""
    error_samples: tuple[str, ...] = ()
    measured_at: str = field(default_factory=measured_now)
    machine: str = field(default_factory=this_machine)

    @property
    def ideal_throughput(self) -> float:
        return self.params.ideal_throughput

    @property
    def broker_vs_ideal(self) -> float:
        """The figure judged against :data:`GOAL` (for the defaults only)."""
        return self.broker.throughput / self.ideal_throughput

    @property
    def goal_met(self) -> bool | None:
        """broker ÷ ideal ≥ :data:`GOAL`, or None when the run is not the defaults."""
        return self.broker_vs_ideal >= GOAL if self.params.judged else None

    @property
    def broker_vs_direct(self) -> float:
        """What the broker costs compared with the best this machine can do."""
        return self.broker.throughput / self.direct.throughput

    @property
    def direct_vs_ideal(self) -> float:
        return self.direct.throughput / self.ideal_throughput

    @property
    def errors(self) -> int:
        return self.direct.errors + self.broker.errors

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived ratios included (and no database or Redis password)."""
        data = asdict(self)
        if self.params.database_url is not None:
            data["params"]["database_url"] = make_url(self.params.database_url).render_as_string(
                hide_password=True
            )
        if self.params.redis_url is not None:
            data["params"]["redis_url"] = redacted(self.params.redis_url)
        return data | {
            "ideal_throughput": self.ideal_throughput,
            "direct_throughput": self.direct.throughput,
            "broker_throughput": self.broker.throughput,
            "broker_vs_ideal": self.broker_vs_ideal,
            "broker_vs_direct": self.broker_vs_direct,
            "direct_vs_ideal": self.direct_vs_ideal,
            "goal": GOAL,
            "goal_met": self.goal_met,
            "fairness_measures": FAIRNESS_MEANING,
        }


FAIRNESS_MEANING = (
    "Jain's index over each user's share of their own jobs finished when half of all jobs "
    "had finished: 1.0 = every user equally far along; 1/U = one user was served alone"
)

ProgressCallback = Callable[[int, int], None]
"""Called with (jobs finished, errors) as broker results arrive."""


async def run_throughput(
    params: ThroughputParams | None = None, *, console: Console | None = None
) -> ThroughputReport:
    """Run the direct baseline and the broker phase on the same stub workers.

    ``console`` shows progress bars (pass one writing to stderr to keep stdout clean for
    ``--json``). Every process and temporary directory or database is gone when this
    returns or raises, including on cancellation (Ctrl+C).

    Raises :class:`BenchmarkError` if setup fails or any job never got an answer.
    """
    params = params or ThroughputParams()
    async with AsyncExitStack() as stack:
        note(
            console,
            f"starting {params.workers} stub workers (latency {params.latency:g} s) "
            f"and the broker ({params.database})",
        )
        # The broker starts now, beside the stubs, so a setup problem shows before the
        # direct phase; with no workers and nobody connected it sits idle meanwhile. A task
        # group, so that if one start fails the others are stopped (or, once started, are
        # on the exit stack) before the stack unwinds.
        try:
            async with asyncio.TaskGroup() as group:
                brokers_task = group.create_task(
                    stack.enter_async_context(
                        bench_brokers(
                            params.broker_env(),
                            count=params.brokers,
                            postgres_server_url=params.database_url,
                            redis_url=params.redis_url,
                        )
                    )
                )
                stub_tasks = [
                    group.create_task(
                        stack.enter_async_context(StubServer("rentahal", latency=params.latency))
                    )
                    for _ in range(params.workers)
                ]
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        brokers, stubs = brokers_task.result(), [task.result() for task in stub_tasks]
        with _progress(console) as progress:
            direct = await _run_direct(
                stubs, params, _track(progress, "direct to the stubs", params.jobs)
            )
        await brokers[0].add_workers(stubs, max_concurrency=params.concurrency)
        for broker in brokers[1:]:
            await broker.wait_for_workers(len(stubs))
        with _progress(console) as progress:
            try:
                report = await _run_broker(
                    brokers, params, direct, _track(progress, "through the broker", params.jobs)
                )
            except BenchmarkError as exc:
                tail = brokers[0].process.output[-4000:]
                raise BenchmarkError(f"{exc}\n--- broker output (tail) ---\n{tail}") from None
    return report


# --- direct baseline ---------------------------------------------------------------------


async def _run_direct(
    stubs: Sequence[StubServer], params: ThroughputParams, progress: ProgressCallback
) -> PhaseFigures:
    """POST the N jobs to the stubs with W·c requests in flight, c per stub, through the
    broker's own worker client (`WorkerClient`, `post_json`): the same pool and the same
    calls, so the baseline differs from the broker phase by the broker alone."""
    slots = params.slots
    latencies: list[float] = []
    errors: list[str] = []
    jobs = iter(range(params.jobs))  # shared by the lanes: each takes the next job number

    async def lane(client: WorkerClient, stub: StubServer) -> None:
        for job in jobs:
            payload = {
                "prompt": f"direct job {job}",
                "type": "chat",
                "model_type": "worker_node",
                "model_name": "",
            }
            sent = time.perf_counter()
            try:
                async with post_json(client, f"{stub.url}/predict", payload, {}) as reply:
                    body = await reply.aread()
                if reply.status_code != 200 or "response" not in json.loads(body):
                    errors.append(f"HTTP {reply.status_code}: {body[:200]!r}")
                else:
                    latencies.append(time.perf_counter() - sent)
            except (httpx.HTTPError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            progress(len(latencies) + len(errors), len(errors))

    async with WorkerClient(timeout=30.0 + params.latency) as client:
        started = time.perf_counter()
        await asyncio.gather(*(lane(client, stubs[i % len(stubs)]) for i in range(slots)))
        seconds = time.perf_counter() - started
    if errors:
        raise BenchmarkError(
            f"{len(errors)} of {params.jobs} direct requests to the stubs failed, so there is "
            f"no baseline; first: {errors[0]}"
        )
    return PhaseFigures(
        seconds=seconds, completed=len(latencies), errors=0, latency=Quantiles.of(latencies)
    )


# --- through the broker ------------------------------------------------------------------


@dataclass(eq=False)
class _Tally:
    """Progress shared by all the guests' readers (one event loop: no locks needed)."""

    params: ThroughputParams
    progress: ProgressCallback
    finished: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    finished_by_user: list[int] = field(default_factory=list)
    fairness_snapshot: list[int] | None = None
    fairness_at: int = 0
    last_finished: float = math.nan
    all_done: asyncio.Event = field(default_factory=asyncio.Event)
    broken: asyncio.Event = field(default_factory=asyncio.Event)
    broken_reason: str = ""

    def __post_init__(self) -> None:
        self.finished_by_user = [0] * self.params.users

    def job_finished(self, user: int, now: float) -> None:
        self.finished += 1
        self.last_finished = now
        self.finished_by_user[user] += 1
        if self.fairness_snapshot is None and self.finished >= max(1, self.params.jobs // 2):
            self.fairness_snapshot = list(self.finished_by_user)
            self.fairness_at = self.finished
        self.progress(self.finished, len(self.errors))
        if self.finished >= self.params.jobs:
            self.all_done.set()

    def break_run(self, reason: str) -> None:
        if not self.broken.is_set():
            self.broken_reason = reason
            self.broken.set()


class _Guest:
    """One user: a guest WebSocket that submits its jobs all at once and records answers.

    A hand-rolled client rather than :class:`rentahal.testing.broker.BusClient`: that one
    keeps every message for assertions and scans its inbox per `expect`, which at hundreds
    of results per second would make the load generator, not the broker, the bottleneck.
    """

    def __init__(self, index: int, url: str, jobs: int, tally: _Tally) -> None:
        self.index = index
        self.url = url
        self.jobs = jobs
        self.tally = tally
        self.sent: dict[str, float] = {}  # message id → when it was sent
        self.accepted: dict[str, str] = {}  # query id → message id
        self.accepted_at: float = math.nan
        self.accepted_times: list[float] = []  # when each query_accepted arrived
        self.results: dict[str, tuple[float, dict[str, Any]]] = {}  # query id → (when, msg)
        self.failed: set[str] = set()  # message ids or query ids that ended in an error
        self.finished_at: float = math.nan
        self.ready = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def done(self) -> int:
        return len(self.results) + len(self.failed)

    async def connect(self) -> None:
        """Open the bus as a new guest and wait until the broker has finished greeting it
        (its `pong` to our `ping` comes only after the greeting), so that connecting is not
        part of the measured time."""
        self._ws = await connect(self.url, max_size=64 * 1024 * 1024, open_timeout=30)
        self._reader = asyncio.create_task(self._read(), name=f"bench-guest-{self.index}")
        await self._ws.send(json.dumps({"type": "ping", "id": "ready"}))
        await asyncio.wait_for(self.ready.wait(), 30)

    async def submit(self) -> None:
        """Send every job at once; the broker queues what its workers cannot start yet."""
        assert self._ws is not None
        for job in range(self.jobs):
            message_id = f"{self.index}-{job}"
            self.sent[message_id] = time.perf_counter()
            prompt = f"benchmark user {self.index} job {job}"
            await self._ws.send(json.dumps({"type": "chat", "prompt": prompt, "id": message_id}))

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                self._handle(message, time.perf_counter())
                if message.get("type") == "ping":  # the broker drops clients that stay silent
                    await self._ws.send('{"type":"pong"}')
        except ConnectionClosed:
            pass
        finally:
            if self.done < self.jobs:
                self.tally.break_run(
                    f"user {self.index}'s connection closed (code {self._ws.close_code}) "
                    f"with {self.jobs - self.done} of its jobs unanswered"
                )

    def _handle(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("type")
        if kind == "query_accepted":
            self.accepted[message["query_id"]] = str(message.get("response_to"))
            self.accepted_times.append(now)
            if len(self.accepted) == self.jobs:
                self.accepted_at = now
        elif kind == "query_result":
            self.results[message["query_id"]] = (now, message)
            self._finished_one(now)
        elif kind == "error":
            self.tally.errors.append(message)
            # Terminal for a job if it names one: refused at submission (response_to) or
            # failed/expired later (query_id). Other errors end no job but still count.
            key = message.get("query_id") or message.get("response_to")
            if key is not None and (key in self.sent or key in self.accepted):
                self.failed.add(str(key))
                self._finished_one(now)
            else:
                self.tally.progress(self.tally.finished, len(self.tally.errors))
        elif kind == "pong" and message.get("response_to") == "ready":
            self.ready.set()

    def _finished_one(self, now: float) -> None:
        self.tally.job_finished(self.index, now)
        if self.done == self.jobs:
            self.finished_at = now


async def _run_broker(
    brokers: Sequence[BenchBroker],
    params: ThroughputParams,
    direct: PhaseFigures,
    progress: ProgressCallback,
) -> ThroughputReport:
    """Connect the guests (dealt out to the brokers in turn), submit everything, wait for
    every job to end, then report."""
    tally = _Tally(params, progress)
    guests = [
        _Guest(user, brokers[user % len(brokers)].process.ws_url, params.jobs_of(user), tally)
        for user in range(params.users)
    ]
    pids = [broker.process.pid for broker in brokers]
    # However slow, a healthy run finishes within a small multiple of the ideal time.
    deadline = 60.0 + 10 * params.jobs / params.ideal_throughput
    try:
        try:
            await asyncio.gather(*(guest.connect() for guest in guests))
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise BenchmarkError(
                f"connecting {params.users} guests to the bus failed: {exc!r}"
            ) from exc
        cpu_before = _Cpu.now(pids)
        started = time.perf_counter()
        await asyncio.gather(*(guest.submit() for guest in guests))
        waiters = [
            asyncio.create_task(tally.all_done.wait()),
            asyncio.create_task(tally.broken.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not tally.all_done.is_set():
            unanswered = params.jobs - tally.finished
            why = tally.broken_reason or f"no answer within {deadline:.0f} s"
            raise BenchmarkError(
                f"{unanswered} of {params.jobs} jobs never finished ({why}); "
                f"{sum(len(g.accepted) for g in guests)} were accepted, "
                f"{len(tally.errors)} error messages: {_samples(tally.errors)}"
            )
        cpu = _Cpu.now(pids) - cpu_before
    finally:
        await asyncio.gather(*(guest.close() for guest in guests))
    return _report(params, direct, guests, tally, started, cpu)


def _report(
    params: ThroughputParams,
    direct: PhaseFigures,
    guests: Sequence[_Guest],
    tally: _Tally,
    started: float,
    cpu: _Cpu,
) -> ThroughputReport:
    latencies: list[float] = []
    queue_waits: list[float] = []
    processing: list[float] = []
    for guest in guests:
        for query_id, (received, message) in guest.results.items():
            sent = guest.sent.get(guest.accepted.get(query_id, ""), math.nan)
            latencies.append(received - sent)
            queue_waits.append(float(message.get("queue_wait", math.nan)))
            processing.append(float(message.get("processing_time", math.nan)))
    completed = len(latencies)
    broker = PhaseFigures(
        seconds=tally.last_finished - started,  # the last job to end, failed or not
        completed=completed,
        errors=len(tally.errors),
        latency=Quantiles.of(latencies),
    )
    snapshot = tally.fairness_snapshot or tally.finished_by_user
    finish_times = [g.finished_at - started for g in guests]
    return ThroughputReport(
        params=params,
        direct=direct,
        broker=broker,
        queue_wait=Quantiles.of(queue_waits),
        processing_time=Quantiles.of(processing),
        submit_seconds=max(g.accepted_at for g in guests) - started,
        fairness=_fairness(snapshot, [params.jobs_of(u) for u in range(params.users)]),
        fairness_at=tally.fairness_at,
        fairness_fifo=_fifo_fairness(params, guests, tally.fairness_at),
        user_finish_first=min(finish_times),
        user_finish_last=max(finish_times),
        broker_cpu_seconds=cpu.broker,
        loadgen_cpu_seconds=cpu.loadgen,
        error_samples=tuple(_samples(tally.errors)),
    )


@dataclass(frozen=True)
class _Cpu:
    """CPU seconds used so far by the broker (None if unknown) and by this process."""

    broker: float | None
    loadgen: float

    @classmethod
    def now(cls, broker_pids: Sequence[int | None]) -> _Cpu:
        """The brokers' CPU seconds summed (None if any is unknown), and this process's."""
        used = [process_cpu_seconds(pid) for pid in broker_pids]
        brokers = None if None in used else sum(u for u in used if u is not None)
        return cls(brokers, time.process_time())

    def __sub__(self, earlier: _Cpu) -> _Cpu:
        broker = (
            self.broker - earlier.broker
            if self.broker is not None and earlier.broker is not None
            else None
        )
        return _Cpu(broker, self.loadgen - earlier.loadgen)


def _fairness(finished: Sequence[int], demand: Sequence[int]) -> float:
    """Jain's index over each user's finished fraction of their own demand.

    Taken while the queue is still long (half the jobs done): by then a fair scheduler has
    moved every user about halfway, while a FIFO one has served whoever submitted first.
    Dividing by demand keeps it 1.0 for a fair run when N is not a multiple of U.
    """
    return jain_index([done / wanted for done, wanted in zip(finished, demand, strict=True)])


def _fifo_fairness(params: ThroughputParams, guests: Sequence[_Guest], first: int) -> float:
    """Fairness had the first ``first`` jobs been served in the order they were accepted.

    The order the guests saw their `query_accepted` replies stands in for the broker's
    arrival order (each reply leaves the broker as its job is queued).
    """
    order = sorted((when, guest.index) for guest in guests for when in guest.accepted_times)
    served = [0] * params.users
    for _, user in order[:first]:
        served[user] += 1
    return _fairness(served, [params.jobs_of(u) for u in range(params.users)])


def _samples(errors: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{e.get('code')}: {e.get('message')}" for e in errors[:ERROR_SAMPLES]]


# --- presentation helpers ----------------------------------------------------------------


def _progress(console: Console | None) -> Progress:
    """Bars that count jobs and show the errors so far."""
    return progress_bars(console, 20, TextColumn("jobs"), TextColumn("{task.fields[errors]}"))


def _track(progress: Progress, description: str, total: int) -> ProgressCallback:
    """Add a bar to ``progress``; returns the callback that moves it."""
    task = progress.add_task(description, total=total, errors="")

    def update(finished: int, errors: int) -> None:
        progress.update(
            task, completed=finished, errors=f"[red]{errors} errors[/red]" if errors else ""
        )

    return update
