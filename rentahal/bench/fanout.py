"""The bus's fan-out benchmark: many open WebSockets on one broker process, what each costs
in memory, and how fast a sysop's broadcast reaches the ones that listen.

SPEC §16 asks for 10,000 open bus connections on one broker process at < 50 KB each, and a
broadcast reaching 1,000 of them with p99 < 100 ms. One run:

1. starts a broker (limits out of the way for N sockets) and connects a sysop, subscribed to
   nothing but its own replies, so it hears none of the others' comings and goings;
2. opens N client sockets, a few dozen handshakes at a time, reading the broker's RSS from
   ``/proc/<pid>/status`` before, while and after: memory per connection is the growth over
   N (and, beside it, the slope of RSS against connections, which leaves out one-time costs);
3. has M of them listen to broadcasts (``subscribe {topics: ["broadcasts"]}``; the others
   subscribe to none, so they hear only their own queries and the heartbeat) and sends
   ``sysop_message`` B times, one after the other, timing each from just before the sysop's
   send to each listener's receipt.

**Who the clients are.** By default all N connect with one API key of one plain user
(``Authorization: Bearer``), as the SDK, a script or a kiosk does: the broker resolves the key
from its credential cache, and one user with N connections keeps its per-user state (the
hub's user index, the sysops' ``active_users`` list) one entry long. ``--identity guest``
connects without credentials instead, as a browser tab with no cookie does: each socket is a
new guest that the broker keeps only in memory (it is stored when it first acts), but every
connect and disconnect then sends the sysops an ``active_users`` list as long as the number
connected — quadratic work that a run of N guests pays, and the reason the default is a key.

**The load generator** shares the machine's two cores with the broker, so it is kept cheap:
one aiohttp session, one reader task per socket that answers the broker's heartbeat ``ping``
and time-stamps broadcasts by a prefix test (no JSON parsing of anything else). A receipt is
stamped when that task runs, so the latencies include the client's own time to get to it (its
CPU time during the broadcasts is reported). Its RLIMIT_NOFILE soft limit is raised to the
hard limit before the broker starts, so the broker, its child, inherits it too (checked in
``/proc/<pid>/limits``; a broker forked by the test suite's fork server has that server's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
from rich.console import Console
from rich.progress import Progress, TextColumn

from rentahal.bench.console import note, progress_bars
from rentahal.bench.overhead import _user_api_key as user_api_key
from rentahal.bench.overhead import json_safe
from rentahal.bench.provenance import measured_now, this_machine
from rentahal.bench.realm import (
    BenchBroker,
    BenchmarkError,
    bench_broker,
    limits_out_of_the_way,
    process_cpu_seconds,
)
from rentahal.bench.stats import percentile
from rentahal.bench.voice import DEFAULT_OUT

Identity = Literal["key", "guest"]

DEFAULT_CONNECTIONS = 10_000
DEFAULT_LISTENERS = 1_000
DEFAULT_BROADCASTS = 20
QUICK_CONNECTIONS = 200
QUICK_LISTENERS = 50
QUICK_BROADCASTS = 5
"""``--quick``'s N, M and B unless given: a smoke run (CI) of a few seconds, not figures."""

TARGET_KIB_PER_CONNECTION = 50.0
"""SPEC §16: < 50 KB of the broker's memory per open connection (KiB, as /proc counts)."""
TARGET_P99 = 0.100
"""SPEC §16: a broadcast reaches its listeners with p99 < 100 ms."""

OPEN_AT_ONCE = 64
"""Handshakes in flight while opening: well inside the listen backlog, and enough to keep the
broker busy rather than waiting on the client."""
SAMPLES = 40
"""RSS readings while opening (one every N/40 connections), for the plot and the slope."""
CONNECT_TIMEOUT = 60.0
BROADCAST_TIMEOUT = 30.0
"""How long a broadcast may take to reach every listener before the missing count as missed."""
CLOSE_AT_ONCE = 256
SPARE_FILES = 256
"""File descriptors beyond one per socket that each process needs (its store, logs, pipes)."""

PING = '{"type":"ping"}'
PONG = '{"type":"pong"}'
BROADCAST_PREFIX = '{"type":"sysop_message"'
BROADCAST_TEXT = "bench fanout broadcast "


@dataclass(frozen=True, slots=True)
class Spread:
    """The median, the tail and the worst of a sample, in seconds (NaN for no values)."""

    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(
            p50=percentile(values, 50),
            p99=percentile(values, 99),
            max=max(values, default=math.nan),
        )


@dataclass(frozen=True)
class FanoutParams:
    """What to run: N connections, M of them listening, B broadcasts; ``quick`` marks a
    smoke run, whose figures are not judged against the targets."""

    connections: int = DEFAULT_CONNECTIONS
    listeners: int = DEFAULT_LISTENERS
    broadcasts: int = DEFAULT_BROADCASTS
    identity: Identity = "key"
    quick: bool = False
    out: Path = DEFAULT_OUT

    def __post_init__(self) -> None:
        if self.connections < 1 or self.broadcasts < 1:
            raise ValueError("connections and broadcasts must be at least 1")
        if not 1 <= self.listeners <= self.connections:
            raise ValueError("listeners must be between 1 and the number of connections")
        if self.identity not in ("key", "guest"):
            raise ValueError("identity is 'key' or 'guest'")

    @property
    def files_needed(self) -> int:
        """Open files each side needs: a socket per connection, the sysop's, and spares."""
        return self.connections + 1 + SPARE_FILES

    def broker_env(self) -> dict[str, str]:
        """The broker's limits out of the way for N sockets and the sysop's."""
        return limits_out_of_the_way(self.connections + 1)


@dataclass(frozen=True)
class RssSample:
    """The broker's resident memory with ``connections`` sockets open."""

    connections: int
    rss_kib: int


@dataclass(frozen=True)
class BroadcastFigures:
    """One broadcast: how many listeners it reached in time, and when."""

    index: int
    reached: int
    latency: Spread
    """From just before the sysop sent it to each listener's receipt."""
    ack_seconds: float
    """Until the sysop's `ok`: the broker has queued it for everyone and audited it."""


@dataclass(frozen=True)
class FanoutReport:
    """Everything one run measured; ratios are computed, never stored."""

    params: FanoutParams
    rss_before_kib: int
    """The broker's RSS with only the sysop connected (and the bench user's key issued)."""
    rss_open_kib: int
    """With all N connections open and greeted."""
    rss_end_kib: int
    """After the broadcasts."""
    rss_samples: tuple[RssSample, ...]
    open_seconds: float
    """From the first handshake until all N were greeted and subscribed."""
    broker_open_cpu_seconds: float | None
    """The broker's CPU time while they opened."""
    broadcasts: tuple[BroadcastFigures, ...]
    latency: Spread
    """Every receipt of every broadcast together."""
    missed: int
    """Receipts that never came within :data:`BROADCAST_TIMEOUT` (should be 0)."""
    broker_broadcast_cpu_seconds: float | None
    loadgen_broadcast_cpu_seconds: float
    broadcast_seconds: float
    """Wall time of the broadcast phase."""
    loadgen_kib_per_connection: float
    """The load generator's own RSS growth per connection, for scale."""
    open_files_limit: int
    """The soft RLIMIT_NOFILE the broker runs with."""
    receipts: tuple[float, ...] = field(default=(), repr=False)
    """Every receipt's latency, sorted: the plot's CDF (the JSON keeps percentiles)."""
    plot: Path | None = None
    report_file: Path | None = None
    measured_at: str = field(default_factory=measured_now)
    machine: str = field(default_factory=this_machine)

    @property
    def kib_per_connection(self) -> float:
        """The broker's RSS growth over N: the figure judged against the target."""
        return (self.rss_open_kib - self.rss_before_kib) / self.params.connections

    @property
    def marginal_kib_per_connection(self) -> float:
        """The slope of RSS against connections open (least squares over the samples): what
        one more connection costs, one-time costs of the first ones left out."""
        return slope([(s.connections, s.rss_kib) for s in self.rss_samples])

    @property
    def memory_ratio(self) -> float:
        """Memory per connection ÷ the target: at most 1 meets it."""
        return self.kib_per_connection / TARGET_KIB_PER_CONNECTION

    @property
    def latency_ratio(self) -> float:
        """Broadcast p99 ÷ the target: at most 1 meets it."""
        return self.latency.p99 / TARGET_P99

    @property
    def typical_broadcast_p99(self) -> float:
        """The median over broadcasts of each one's p99: what a usual broadcast does, where
        the p99 over all receipts is decided by the worst one or two."""
        return percentile([b.latency.p99 for b in self.broadcasts], 50)

    @property
    def judged(self) -> bool:
        """Whether the targets apply: not a quick run, and at least the SPEC's N and M."""
        p = self.params
        return (
            not p.quick
            and p.connections >= DEFAULT_CONNECTIONS
            and p.listeners >= DEFAULT_LISTENERS
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures and the targets included."""
        data = asdict(self)
        del data["receipts"]
        data["params"]["out"] = str(self.params.out)
        data["plot"] = str(self.plot) if self.plot else None
        data["report_file"] = str(self.report_file) if self.report_file else None
        return data | {
            "kib_per_connection": self.kib_per_connection,
            "marginal_kib_per_connection": self.marginal_kib_per_connection,
            "target_kib_per_connection": TARGET_KIB_PER_CONNECTION,
            "memory_ratio": self.memory_ratio,
            "target_p99": TARGET_P99,
            "latency_ratio": self.latency_ratio,
            "typical_broadcast_p99": self.typical_broadcast_p99,
            "latency_percentiles": {
                str(q): percentile(self.receipts, q) for q in (10, 25, 50, 75, 90, 99, 99.9)
            },
            "judged": self.judged,
        }


def slope(points: Iterable[tuple[float, float]]) -> float:
    """The least-squares slope of y against x (NaN with fewer than two distinct x)."""
    pairs = list(points)
    if len({x for x, _ in pairs}) < 2:
        return math.nan
    mean_x = sum(x for x, _ in pairs) / len(pairs)
    mean_y = sum(y for _, y in pairs) / len(pairs)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in pairs)
    variance = sum((x - mean_x) ** 2 for x, _ in pairs)
    return covariance / variance


def rss_kib(pid: int | None) -> int | None:
    """A process's resident set size in KiB from ``/proc/<pid>/status`` (None without one).

    Served from kernel memory, never from a disk: fine to read in the event loop."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def open_files_limit(pid: int) -> int | None:
    """The soft 'Max open files' of a process, from ``/proc/<pid>/limits``."""
    try:
        with open(f"/proc/{pid}/limits", "rb") as limits:
            for line in limits:
                if line.startswith(b"Max open files"):
                    soft = line.split()[3]
                    return 2**62 if soft == b"unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        return None
    return None


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it), and
    return it; :class:`BenchmarkError` if even the hard limit is below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft < needed:
        raise BenchmarkError(
            f"{needed} open files are needed, but RLIMIT_NOFILE allows {soft} (hard limit "
            f"{hard}); raise it (ulimit -Hn, or LimitNOFILE= in a unit) or open fewer"
        )
    return soft


# --- running it --------------------------------------------------------------------------


async def run_fanout(
    params: FanoutParams | None = None, *, console: Console | None = None
) -> FanoutReport:
    """Start a broker, open the connections, broadcast; write the JSON report and the plot.

    ``console`` gets the steps and progress bars (stderr). Every socket, process and
    temporary file is gone when this returns or raises, including on Ctrl+C.
    """
    params = params or FanoutParams()
    raise_open_files_limit(params.files_needed)
    async with AsyncExitStack() as stack:
        note(console, f"starting the broker (room for {params.connections} bus connections)")
        broker = await stack.enter_async_context(bench_broker(params.broker_env()))
        pid = broker.process.pid
        assert pid is not None
        limit = open_files_limit(pid)
        if limit is not None and limit < params.files_needed:
            raise BenchmarkError(
                f"the broker may open {limit} files, fewer than the {params.files_needed} "
                "this run needs (it inherits the limit of the process that started it)"
            )
        headers = await _client_headers(broker, params.identity)
        session = await stack.enter_async_context(_session())
        sysop = await stack.enter_async_context(_Sysop.open(session, broker))
        report = await _measure(session, broker, sysop, headers, params, limit, console)
    note(console, "writing the report")
    return await asyncio.to_thread(_write_files, report)


async def _client_headers(broker: BenchBroker, identity: Identity) -> dict[str, str]:
    """The handshake headers of every client: one plain user's API key, or none (guests)."""
    if identity == "guest":
        return {}
    return {"Authorization": f"Bearer {await user_api_key(broker.process.url)}"}


@contextlib.asynccontextmanager
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp session for every socket: no connection limit, no proxy from the env, and
    no cookie jar (a guest's cookie would make every later socket that same guest)."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    ) as session:
        yield session


async def _measure(
    session: aiohttp.ClientSession,
    broker: BenchBroker,
    sysop: _Sysop,
    headers: Mapping[str, str],
    params: FanoutParams,
    limit: int | None,
    console: Console | None,
) -> FanoutReport:
    """Open the fleet, broadcast to it, close it; the figures in between."""
    pid = broker.process.pid
    await sysop.round_trip()  # the broker idle, everything so far handled
    before = rss_kib(pid) or 0
    client_before = rss_kib(os.getpid()) or 0
    heard = _Receipts(params.listeners)
    fleet = _Fleet(session, broker.process.ws_url, headers, heard)
    try:
        with _progress(console) as progress:
            bar = _bar(progress, f"opening {params.connections} sockets", params.connections)
            cpu_before = process_cpu_seconds(pid)
            started = time.perf_counter()
            samples = await fleet.open(params, lambda count: bar(count, pid))
            open_seconds = time.perf_counter() - started
            open_cpu = _difference(process_cpu_seconds(pid), cpu_before)
            await sysop.round_trip()
            opened = rss_kib(pid) or 0
            samples = [s for s in samples if s.connections < params.connections]
            samples.append(RssSample(params.connections, opened))
            client_kib = ((rss_kib(os.getpid()) or 0) - client_before) / params.connections
            bar = _bar(progress, f"{params.broadcasts} broadcasts", params.broadcasts)
            cpu_before, client_cpu = process_cpu_seconds(pid), time.process_time()
            started = time.perf_counter()
            figures = await _broadcast(sysop, heard, params, lambda count: bar(count, pid))
            broadcast_seconds = time.perf_counter() - started
            broadcast_cpu = _difference(process_cpu_seconds(pid), cpu_before)
            client_cpu = time.process_time() - client_cpu
            end = rss_kib(pid) or 0
            receipts = sorted(t for times in heard.latencies.values() for t in times)
    finally:
        note(console, "closing the sockets")
        await fleet.close()
    return FanoutReport(
        params=params,
        rss_before_kib=before,
        rss_open_kib=opened,
        rss_end_kib=end,
        rss_samples=tuple([RssSample(0, before), *samples]),
        open_seconds=open_seconds,
        broker_open_cpu_seconds=open_cpu,
        broadcasts=tuple(figures),
        latency=Spread.of(receipts),
        missed=sum(params.listeners - f.reached for f in figures),
        broker_broadcast_cpu_seconds=broadcast_cpu,
        loadgen_broadcast_cpu_seconds=client_cpu,
        broadcast_seconds=broadcast_seconds,
        loadgen_kib_per_connection=client_kib,
        open_files_limit=limit or 0,
        receipts=tuple(receipts),
    )


def _difference(after: float | None, before: float | None) -> float | None:
    return after - before if after is not None and before is not None else None


# --- the clients -------------------------------------------------------------------------


@dataclass(eq=False)
class _Receipts:
    """When each listener heard each broadcast (one event loop: no locks needed)."""

    listeners: int
    sent: dict[int, float] = field(default_factory=dict)
    latencies: dict[int, list[float]] = field(default_factory=dict)
    complete: dict[int, asyncio.Event] = field(default_factory=dict)

    def expect(self, index: int) -> asyncio.Event:
        self.latencies[index] = []
        self.complete[index] = asyncio.Event()
        return self.complete[index]

    def heard(self, text: str, now: float) -> None:
        """A listener's receipt of a broadcast (ignored unless it is one of ours)."""
        try:
            message = json.loads(text)["message"]
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(message, str) or not message.startswith(BROADCAST_TEXT):
            return
        index = int(message.removeprefix(BROADCAST_TEXT))
        if index not in self.sent:
            return
        times = self.latencies[index]
        times.append(now - self.sent[index])
        if len(times) >= self.listeners:
            self.complete[index].set()


class _Fleet:
    """The N client sockets: each greeted, subscribed, and read by a task of its own that
    answers the heartbeat and stamps broadcasts."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: Mapping[str, str],
        receipts: _Receipts,
    ) -> None:
        self._session = session
        self._url = url
        self._headers = dict(headers)
        self._receipts = receipts
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        self._readers: list[asyncio.Task[None]] = []
        self.ready = 0  # sockets greeted and subscribed

    async def open(
        self, params: FanoutParams, opened: Callable[[int], int | None]
    ) -> list[RssSample]:
        """Open N sockets, :data:`OPEN_AT_ONCE` at a time, the first M listening; returns
        the broker's RSS every N/:data:`SAMPLES` connections (``opened`` reads it)."""
        every = max(1, params.connections // SAMPLES)
        samples: list[RssSample] = []
        numbers = iter(range(params.connections))

        async def lane() -> None:
            for number in numbers:
                try:
                    await self._open_one(number, listening=number < params.listeners)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    raise BenchmarkError(
                        f"opening socket {number + 1} of {params.connections} failed "
                        f"({self.ready} open): {type(exc).__name__}: {exc}"
                    ) from None
                self.ready += 1
                rss = opened(self.ready)
                if self.ready % every == 0 and rss is not None:
                    samples.append(RssSample(self.ready, rss))

        try:
            async with asyncio.TaskGroup() as group:  # one failure stops the other lanes
                for _ in range(min(OPEN_AT_ONCE, params.connections)):
                    group.create_task(lane())
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return samples

    async def _open_one(self, number: int, *, listening: bool) -> None:
        """Connect, subscribe, and read up to the `subscribed` reply (the greeting before
        it), then leave the socket to its reader."""
        ws = await self._session.ws_connect(
            self._url,
            headers=self._headers,
            autoping=True,
            max_msg_size=64 * 1024 * 1024,
            timeout=aiohttp.ClientWSTimeout(ws_close=10),
        )
        self._sockets.append(ws)
        topics = ["broadcasts"] if listening else []
        await ws.send_str(json.dumps({"type": "subscribe", "topics": topics, "id": "sub"}))
        async with asyncio.timeout(CONNECT_TIMEOUT):
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                text: str = frame.data
                if text == PING:
                    await ws.send_str(PONG)
                elif '"type":"subscribed"' in text:
                    break
                elif text.startswith('{"type":"error"'):
                    raise BenchmarkError(f"socket {number} was refused: {text[:300]}")
            else:
                raise BenchmarkError(f"socket {number} closed before it was subscribed")
        self._readers.append(asyncio.create_task(self._read(ws), name=f"fanout-{number}"))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        heard = self._receipts.heard
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            text = frame.data
            if text.startswith(BROADCAST_PREFIX):
                heard(text, now)
            elif text == PING:
                await ws.send_str(PONG)

    async def close(self) -> None:
        """Stop the readers, then close every socket (a close handshake each, a few
        hundred at a time)."""
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        sockets = iter(self._sockets)

        async def lane() -> None:
            for ws in sockets:
                with contextlib.suppress(Exception):
                    await ws.close()

        await asyncio.gather(*(lane() for _ in range(CLOSE_AT_ONCE)))


class _Sysop:
    """The sysop's socket: sends the broadcasts and reads its own replies only."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._replies: dict[str, asyncio.Future[float]] = {}
        self._reader = asyncio.create_task(self._read(), name="fanout-sysop")

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, session: aiohttp.ClientSession, broker: BenchBroker
    ) -> AsyncIterator[_Sysop]:
        ws = await session.ws_connect(
            broker.process.ws_url, headers={"Authorization": f"Bearer {broker.sysop_key}"}
        )
        sysop = cls(ws)
        try:
            # Its own replies only: no active_users on every client's connect, no broadcasts.
            await sysop.request({"type": "subscribe", "topics": []}, "subscribe")
            yield sysop
        finally:
            sysop._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sysop._reader
            await ws.close()

    async def request(self, message: dict[str, Any], message_id: str) -> float:
        """Send a message and wait for the reply to it; returns when it came."""
        reply = asyncio.get_running_loop().create_future()
        self._replies[message_id] = reply
        await self._ws.send_str(json.dumps(message | {"id": message_id}))
        async with asyncio.timeout(BROADCAST_TIMEOUT):
            return await reply

    async def round_trip(self) -> None:
        """A ping answered: the broker has handled everything sent before it."""
        await self.request({"type": "ping"}, f"ping-{time.monotonic_ns()}")

    async def _read(self) -> None:
        async for frame in self._ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            message = json.loads(frame.data)
            if message.get("type") == "ping":
                await self._ws.send_str(PONG)
                continue
            reply = self._replies.pop(str(message.get("response_to")), None)
            if reply is None or reply.done():
                continue
            if message.get("type") == "error":
                reply.set_exception(BenchmarkError(f"the broker refused the sysop: {message}"))
            else:
                reply.set_result(now)


async def _broadcast(
    sysop: _Sysop, receipts: _Receipts, params: FanoutParams, done: Callable[[int], object]
) -> list[BroadcastFigures]:
    """B broadcasts one after the other, each once the last has reached every listener (or
    timed out): the latency of one is never the queue of another."""
    figures = []
    for index in range(params.broadcasts):
        complete = receipts.expect(index)
        sent = receipts.sent[index] = time.perf_counter()
        message = {"type": "sysop_message", "message": f"{BROADCAST_TEXT}{index}"}
        acked = await sysop.request(message, f"broadcast-{index}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), BROADCAST_TIMEOUT)
        times = list(receipts.latencies[index])
        figures.append(BroadcastFigures(index, len(times), Spread.of(times), acked - sent))
        done(index + 1)
    return figures


# --- the report's files --------------------------------------------------------------------


def _write_files(report: FanoutReport) -> FanoutReport:
    """The plot and the JSON report, side by side in ``params.out`` with one time stamp."""
    out = report.params.out
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"fanout-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    plot = draw_plot(report, stem.with_suffix(".png"))
    written = replace(report, plot=plot, report_file=stem.with_suffix(".json"))
    text = json.dumps(json_safe(written.as_dict()), indent=2, allow_nan=False)
    stem.with_suffix(".json").write_text(text + "\n")
    return written


def draw_plot(report: FanoutReport, path: Path) -> Path | None:
    """Left: the broker's RSS against connections open, with the target's line from where
    it started. Right: the latency CDF of every receipt, with the target. None when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (memory, latency) = plt.subplots(1, 2, figsize=(11, 4.5))
    counts = [s.connections for s in report.rss_samples]
    memory.plot(counts, [s.rss_kib / 1024 for s in report.rss_samples], "o-", markersize=3)
    n = report.params.connections
    start = report.rss_before_kib / 1024
    target_end = start + n * TARGET_KIB_PER_CONNECTION / 1024
    memory.plot([0, n], [start, target_end], "--", color="grey", label="50 KB per connection")
    memory.set_xlabel("connections open")
    memory.set_ylabel("broker RSS (MiB)")
    memory.legend(loc="upper left", fontsize=8)
    times = [t * 1000 for t in report.receipts]
    if times:
        shares = [(i + 1) / len(times) for i in range(len(times))]
        latency.plot(times, shares, "-")
    latency.axvline(TARGET_P99 * 1000, linestyle="--", color="grey", label="target p99")
    latency.axhline(0.99, linestyle=":", color="grey")
    latency.set_xscale("log")
    latency.set_xlabel("send → receipt (ms, log scale)")
    latency.set_ylabel("share of receipts")
    latency.legend(loc="lower right", fontsize=8)
    for axes in (memory, latency):
        axes.grid(True, alpha=0.3)
    figure.suptitle(
        f"bench fanout: {n} connections ({report.params.identity}), "
        f"{report.params.listeners} listening, {report.params.broadcasts} broadcasts; "
        f"{report.machine}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# --- progress ------------------------------------------------------------------------------


def _progress(console: Console | None) -> Progress:
    return progress_bars(console, 24, TextColumn("{task.fields[rss]}"))


def _bar(
    progress: Progress, description: str, total: int
) -> Callable[[int, int | None], int | None]:
    """A bar; its callback moves it to ``done`` and, given the broker's pid, reads and shows
    its RSS (returned, so the caller can keep it as a sample)."""
    task = progress.add_task(description, total=total, rss="")

    def update(done: int, pid: int | None) -> int | None:
        rss = rss_kib(pid)
        shown = f"broker {rss / 1024:.0f} MiB" if rss is not None else ""
        progress.update(task, completed=done, rss=shown)
        return rss

    return update
