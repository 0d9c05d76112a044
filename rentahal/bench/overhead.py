"""What the broker adds to a query: the same zero-latency stub called directly, through the
broker's `/v1`, through its bus and through LiteLLM's proxy, side by side in one run.

One OpenAI-compatible stub answers at once, so whatever a path takes beyond the direct call
is that path's own cost. Each path gets a closed loop of C clients with one query in flight
each, for every C asked (1, 16, 64 by default): latency at C = 1 is the added latency a lone
user pays, queries/s at 64 is the ceiling of the process in the middle. Issue 16 says why:
one broker process topped out near LiteLLM's proxy, 35× below a direct call.

The load generator must not be what is measured: HTTP goes through aiohttp (httpx is slow
under concurrency), one keep-alive connection per client, and each bus client has a WebSocket
of its own. The CPU time of the process in the middle (the broker, the
proxy, or for the direct path the stub) is taken per level, as is this process's, to show
which side was saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import httpx
from rich.console import Console
from rich.progress import Progress, TextColumn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from rentahal.bench.console import note, progress_bars
from rentahal.bench.provenance import measured_now, this_machine
from rentahal.bench.realm import (
    BenchBroker,
    BenchmarkError,
    bench_broker,
    limits_out_of_the_way,
    process_cpu_seconds,
)
from rentahal.bench.stats import Quantiles
from rentahal.bench.voice import DEFAULT_OUT
from rentahal.net import free_port
from rentahal.testing.process import ServerProcess, ServerStartError, StubServer

MODEL = "bench-model"
"""The stub's only model: every HTTP path asks for it by name, so all send the same bytes."""
PROMPT = "Say hello."
DEFAULT_CONCURRENCY = (1, 16, 64)
DEFAULT_SECONDS = 5.0
"""Per path and level: 4 paths × 3 levels × (5 s + warm-up) keeps a run under two minutes."""
REQUEST_TIMEOUT = 60.0
ERROR_LIMIT = 100
"""A level stops after this many failed queries: a dead server fails at once, and a closed
loop of instant failures would otherwise spin for the whole level."""
ERROR_SAMPLES = 3
LITELLM_STARTUP = 180.0
"""Seconds for LiteLLM's proxy to import and answer (tens of seconds on a small machine)."""

PATHS: dict[str, str] = {
    "direct": "stub direct",
    "relay": "bare relay",
    "v1": "broker /v1",
    "bus": "broker bus",
    "litellm": "LiteLLM proxy",
}
"""Each path's key in the report and its label in tables and the plot, in measuring order."""


@dataclass(frozen=True)
class OverheadParams:
    """What to run: the in-flight levels, and per level a number of queries (``requests``)
    or else a time (``seconds``); ``quick`` is a smoke run (a few queries per level)."""

    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    seconds: float = DEFAULT_SECONDS
    requests: int | None = None
    quick: bool = False
    litellm: bool = True
    """Measure LiteLLM's proxy when it is installed (False: leave its column out)."""
    litellm_python: str | None = None
    """An interpreter that has ``litellm[proxy]``, for its proxy; None: this one, if it can
    import litellm. The proxy extra pins older websockets and cryptography than the broker
    needs, so it usually lives in a virtual environment of its own."""
    out: Path = DEFAULT_OUT

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1 or max(self.concurrency) > 1024:
            raise ValueError("each concurrency must be between 1 and 1024")
        if len(set(self.concurrency)) != len(self.concurrency):
            raise ValueError("a concurrency is given twice")
        if self.seconds <= 0:
            raise ValueError("seconds must be positive")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be at least 1")

    @property
    def most_in_flight(self) -> int:
        return max(self.concurrency)

    def budget(self, in_flight: int) -> int | None:
        """Queries to measure at ``in_flight`` (None: as many as fit in ``seconds``). Quick
        mode gives every client a couple of queries and then some."""
        if self.quick:
            return 2 * in_flight + 8
        return self.requests

    def warmup(self, in_flight: int) -> int:
        """Queries before the measured ones, so every connection is open and every code path
        has run once: one per client in quick mode, else at least two per client."""
        return in_flight if self.quick else max(2 * in_flight, 20)

    def broker_env(self) -> dict[str, str]:
        """The broker's limits out of the way, as every bench sets them: a socket or an HTTP
        connection per client, all from 127.0.0.1, the `/v1` queries all one user's."""
        return limits_out_of_the_way(self.most_in_flight)


@dataclass(frozen=True)
class LevelFigures:
    """One path at one number of queries in flight."""

    in_flight: int
    completed: int
    errors: int
    seconds: float
    """From the first measured query sent until the last answer (warm-up excluded)."""
    latency: Quantiles
    server_cpu_seconds: float | None
    """CPU time of the process in the middle (for the direct path: the stub) while measured."""
    client_cpu_seconds: float
    """CPU time of this process (the load generator) while measured."""
    error_samples: tuple[str, ...] = ()

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else math.nan

    @property
    def server_cpu_per_query(self) -> float:
        if self.server_cpu_seconds is None or not self.completed:
            return math.nan
        return self.server_cpu_seconds / self.completed

    @property
    def client_cpu_share(self) -> float:
        """Near 1: the load generator used a whole core and may have been the bottleneck."""
        return self.client_cpu_seconds / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True)
class PathFigures:
    """One path at every level, or why it was not measured."""

    key: str
    levels: tuple[LevelFigures, ...] = ()
    absent: str | None = None

    @property
    def label(self) -> str:
        return PATHS[self.key]

    @property
    def errors(self) -> int:
        return sum(level.errors for level in self.levels)

    def at(self, in_flight: int) -> LevelFigures | None:
        return next((lv for lv in self.levels if lv.in_flight == in_flight), None)


@dataclass(frozen=True)
class OverheadReport:
    """Everything one run measured; differences and ratios are computed, never stored."""

    params: OverheadParams
    paths: tuple[PathFigures, ...]
    client: str
    """The load generator's HTTP client and its version."""
    litellm_version: str | None = None
    plot: Path | None = None
    report_file: Path | None = None
    measured_at: str = field(default_factory=measured_now)
    machine: str = field(default_factory=this_machine)

    def path(self, key: str) -> PathFigures:
        return next(p for p in self.paths if p.key == key)

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.paths)

    def added(self, key: str, in_flight: int) -> Quantiles:
        """Latency ``key`` adds over the direct call at ``in_flight`` (p50 and p99 apart)."""
        mine, direct = self.path(key).at(in_flight), self.path("direct").at(in_flight)
        if mine is None or direct is None:
            return Quantiles(math.nan, math.nan)
        return Quantiles(
            mine.latency.p50 - direct.latency.p50, mine.latency.p99 - direct.latency.p99
        )

    def throughput_ratio(self, key: str, other: str, in_flight: int) -> float:
        """Queries/s of ``key`` over those of ``other`` at ``in_flight`` (NaN if either is
        missing)."""
        mine, theirs = self.path(key).at(in_flight), self.path(other).at(in_flight)
        if mine is None or theirs is None or not theirs.throughput:
            return math.nan
        return mine.throughput / theirs.throughput

    def ceiling(self, key: str) -> float:
        """The most queries/s ``key`` reached at any level."""
        return max((lv.throughput for lv in self.path(key).levels), default=math.nan)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, the derived figures included beside each level."""
        data = asdict(self)
        data["params"]["out"] = str(self.params.out)
        data["plot"] = str(self.plot) if self.plot else None
        data["report_file"] = str(self.report_file) if self.report_file else None
        for path, figures in zip(self.paths, data["paths"], strict=True):
            figures["label"] = path.label
            figures["ceiling"] = self.ceiling(path.key)
            for level, row in zip(path.levels, figures["levels"], strict=True):
                row |= self._derived(path.key, level)
        return data

    def _derived(self, key: str, level: LevelFigures) -> dict[str, Any]:
        c = level.in_flight
        return {
            "throughput": level.throughput,
            "added": asdict(self.added(key, c)),
            "vs_direct": self.throughput_ratio(key, "direct", c),
            "vs_litellm": self.throughput_ratio(key, "litellm", c),
            "server_cpu_per_query": level.server_cpu_per_query,
            "client_cpu_share": level.client_cpu_share,
        }


# --- running it --------------------------------------------------------------------------


async def run_overhead(
    params: OverheadParams | None = None, *, console: Console | None = None
) -> OverheadReport:
    """Start the stub, the broker (its only worker the stub) and LiteLLM's proxy if wanted
    and installed; measure each path at each level; write the JSON report and the plot.

    ``console`` gets the steps and progress bars (stderr, so stdout stays clean for
    ``--json``). Every process and temporary file is gone when this returns or raises.
    """
    params = params or OverheadParams()
    async with AsyncExitStack() as stack:
        note(console, "starting the stub, the broker and its worker")
        stub = await stack.enter_async_context(StubServer("openai", models=[MODEL]))
        broker = await stack.enter_async_context(bench_broker(params.broker_env()))
        await broker.add_workers([stub], max_concurrency=params.most_in_flight * 2)
        key = await _user_api_key(broker.process.url)
        note(console, f"broker pid {broker.process.pid} (for py-spy: --pid {broker.process.pid})")
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rentahal-bench-relay-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        relay = await stack.enter_async_context(RelayProcess(stub, folder))
        proxy, litellm_absent = await _start_litellm(stack, params, stub, console)
        targets = _targets(stub, relay, broker, key, proxy, litellm_absent)
        paths = await _measure_all(targets, params, stub, console)
    report = OverheadReport(
        params=params,
        paths=paths,
        client=_client_name(),
        litellm_version=proxy.version if proxy is not None else None,
    )
    return await asyncio.to_thread(_write_files, report)


async def _user_api_key(url: str) -> str:
    """An API key of a plain user, registered and issued as a person would get one: the
    `/v1` path then pays for what a user's query pays (budget, limits), not a sysop's."""
    nickname = f"bench{os.getpid()}"
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as http:
        registered = await http.post(
            "/api/v1/account", json={"nickname": nickname, "password": "bench-password-1"}
        )
        if registered.status_code != 201:
            raise BenchmarkError(f"registering the bench user failed: {registered.text[:300]}")
        issued = await http.post("/api/v1/keys", json={"name": "bench"}, headers={"Origin": url})
        if issued.status_code != 201:
            raise BenchmarkError(f"issuing the bench user's key failed: {issued.text[:300]}")
    key: str = issued.json()["key"]
    return key


async def _start_litellm(
    stack: AsyncExitStack, params: OverheadParams, stub: StubServer, console: Console | None
) -> tuple[LiteLLMProxy | None, str | None]:
    """LiteLLM's proxy routing :data:`MODEL` to the stub, started on ``stack``; or None and
    why its column stays empty (not wanted, not installed, would not start)."""
    if not params.litellm:
        return None, "left out (--no-litellm)"
    python = params.litellm_python or (sys.executable if _has("litellm") else None)
    if python is None:
        return None, "not installed (see --litellm-python)"
    note(console, f"starting LiteLLM's proxy with {python} (it takes a while to import)")
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rentahal-bench-litellm-"))
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    proxy = LiteLLMProxy(python, stub, folder)
    try:
        await stack.enter_async_context(proxy)
    except (ServerStartError, OSError) as exc:
        if console is not None:
            console.print(f"[yellow]LiteLLM's proxy did not start:[/yellow] {str(exc)[-3000:]}")
        lines = proxy.output.strip().splitlines() or str(exc).splitlines()
        return None, f"its proxy did not start: {lines[-1][:300]}"
    proxy.version = await _version_of_litellm(python)
    return proxy, None


class LiteLLMProxy(ServerProcess):
    """LiteLLM's proxy CLI run by ``python``: one model, the stub behind it, a master key
    (it refuses to start without one) but no database, quiet logs, and its model cost map
    read from the package (it would otherwise fetch one from the internet at start)."""

    def __init__(self, python: str, stub: StubServer, folder: Path) -> None:
        self.port = free_port()
        self.master_key = f"sk-bench-{secrets.token_hex(16)}"
        self.version: str | None = None
        config = {
            "model_list": [
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": f"openai/{MODEL}",
                        "api_base": f"{stub.url}/v1",
                        "api_key": "x",
                    },
                }
            ],
            "general_settings": {"master_key": self.master_key},
            "litellm_settings": {"telemetry": False, "num_retries": 0},
        }
        config_file = folder / "config.yaml"
        config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        argv = [python, "-m", "litellm.proxy.proxy_cli", "--config", str(config_file)]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        env["LITELLM_MODE"] = "PRODUCTION"  # no .env file read from the working directory
        super().__init__(
            argv,
            f"{self.url}/health/liveliness",
            env=env,
            cwd=folder,
            startup_timeout=LITELLM_STARTUP,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _version_of_litellm(python: str) -> str | None:
    """The litellm version ``python`` imports (it may be another environment's)."""
    script = "import importlib.metadata as m; print(m.version('litellm'))"
    child = await asyncio.create_subprocess_exec(
        python, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await child.communicate()
    version = out.decode().strip()
    return version if child.returncode == 0 and version else None


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class RelayProcess(ServerProcess):
    """The bare relay (`rentahal.bench.relay`) in front of the stub, its jobs written to a
    SQLite file in ``folder``."""

    def __init__(self, stub: StubServer, folder: Path) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "rentahal.bench.relay", "--port", str(self.port)]
        argv += ["--upstream", stub.url, "--database", str(folder / "relay.sqlite3")]
        super().__init__(argv, self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class _Target:
    """A path to measure: how its clients are opened for a level, and the process whose
    CPU time counts as the path's own; or why it is not measured."""

    key: str
    server_pid: int | None
    lanes: Lanes | None
    absent: str | None = None


class Call(Protocol):
    """One query on one client: None when answered, else what went wrong."""

    def __call__(self) -> Awaitable[str | None]: ...


Lanes = Callable[[int], AbstractAsyncContextManager[Sequence[Call]]]
"""Given a number of clients, opens them (connections made, greetings read) for a level."""


def _targets(
    stub: StubServer,
    relay: RelayProcess,
    broker: BenchBroker,
    key: str,
    proxy: LiteLLMProxy | None,
    litellm_absent: str | None,
) -> list[_Target]:
    """The five paths, in measuring order, each with its clients' maker."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]})
    completions = "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {key}"}
    broker_url = broker.process.url
    litellm = (
        _Target(
            "litellm",
            proxy.pid,
            _http_lanes(
                proxy.url + completions, body, {"Authorization": f"Bearer {proxy.master_key}"}
            ),
        )
        if proxy is not None
        else _Target("litellm", None, None, absent=litellm_absent)
    )
    return [
        _Target("direct", stub.pid, _http_lanes(stub.url + completions, body, {})),
        _Target("relay", relay.pid, _http_lanes(relay.url + completions, body, {})),
        _Target("v1", broker.process.pid, _http_lanes(broker_url + completions, body, auth)),
        _Target("bus", broker.process.pid, _bus_lanes(broker.process.ws_url)),
        litellm,
    ]


async def _measure_all(
    targets: Sequence[_Target], params: OverheadParams, stub: StubServer, console: Console | None
) -> tuple[PathFigures, ...]:
    """Every path at every level, one after the other (never two at once: they share the
    stub and the machine's two cores)."""
    paths: list[PathFigures] = []
    with _progress(console) as progress:
        for target in targets:
            if target.lanes is None:
                paths.append(PathFigures(target.key, absent=target.absent))
                continue
            levels = []
            for in_flight in params.concurrency:
                bar = _Bar(progress, f"{PATHS[target.key]} ×{in_flight}", params, in_flight)
                levels.append(await _measure_level(target, in_flight, params, bar))
                bar.finish()
            paths.append(PathFigures(target.key, tuple(levels)))
            await stub.clear()  # the stub logs every request: keep it small
    return tuple(paths)


# --- one level: closed-loop clients ------------------------------------------------------


Progressed = Callable[[int, int], None]
"""Called with (queries answered, failed) as a level goes on."""


@dataclass(eq=False)
class _Loop:
    """The queries of one level: shared by its clients (one event loop, so no locks)."""

    tickets: Iterator[int]
    progressed: Progressed
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def client(self, call: Call) -> None:
        """One client: the next query as soon as the last is answered, while there are
        tickets and not too many failures."""
        for _ in self.tickets:
            if len(self.errors) >= ERROR_LIMIT:
                return
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    error = await call()
            except TimeoutError:
                error = f"no answer within {REQUEST_TIMEOUT:g} s"
            if error is None:
                self.latencies.append(time.perf_counter() - sent)
            else:
                self.errors.append(error)
            self.progressed(len(self.latencies), len(self.errors))


def tickets(count: int | None, seconds: float) -> Iterator[int]:
    """``count`` queries, or as many as start within ``seconds`` from the first."""
    if count is not None:
        yield from range(count)
        return
    end = time.perf_counter() + seconds
    sent = 0
    while time.perf_counter() < end:
        yield sent
        sent += 1


async def _measure_level(
    target: _Target, in_flight: int, params: OverheadParams, bar: Progressed
) -> LevelFigures:
    """Open ``in_flight`` clients, warm them up, then measure a closed loop of them."""
    assert target.lanes is not None
    async with target.lanes(in_flight) as calls:
        warm = _Loop(iter(range(params.warmup(in_flight))), lambda done, failed: None)
        await asyncio.gather(*(warm.client(call) for call in calls))
        loop = _Loop(tickets(params.budget(in_flight), params.seconds), bar)
        server_before, client_before = process_cpu_seconds(target.server_pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(loop.client(call) for call in calls))
        seconds = time.perf_counter() - started
        server_after, client_after = process_cpu_seconds(target.server_pid), time.process_time()
    errors = warm.errors + loop.errors
    server_cpu = (
        server_after - server_before
        if server_before is not None and server_after is not None
        else None
    )
    return LevelFigures(
        in_flight=in_flight,
        completed=len(loop.latencies),
        errors=len(errors),
        seconds=seconds,
        latency=Quantiles.of(loop.latencies),
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=client_after - client_before,
        error_samples=tuple(dict.fromkeys(errors))[:ERROR_SAMPLES],
    )


# --- HTTP clients --------------------------------------------------------------------------


def _http_lanes(url: str, body: str, headers: Mapping[str, str]) -> Lanes:
    """Clients that POST ``body`` to ``url``: one pooled session per level with a
    connection per client, each answer checked to be a chat completion."""
    payload = body.encode()
    sent_headers = {"Content-Type": "application/json", **headers}

    @asynccontextmanager
    async def lanes(in_flight: int) -> AsyncIterator[Sequence[Call]]:
        poster = _Poster(in_flight)
        try:

            async def call() -> str | None:
                try:
                    status, answer = await poster.post(url, payload, sent_headers)
                except poster.failures as exc:
                    return f"{type(exc).__name__}: {exc}"
                return _completion_error(status, answer)

            yield [call] * in_flight
        finally:
            await poster.close()

    return lanes


def _completion_error(status: int, answer: bytes) -> str | None:
    """None for a chat completion with a text answer, else what was wrong with it."""
    if status != 200:
        return f"HTTP {status}: {answer[:200].decode(errors='replace')}"
    try:
        content = json.loads(answer)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"not a chat completion: {answer[:200].decode(errors='replace')}"
    return None if isinstance(content, str) else f"no text in the answer: {content!r}"


class _Poster:
    """aiohttp with one keep-alive connection per client: light enough per request that
    the load generator keeps up with the direct path."""

    def __init__(self, connections: int) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            trust_env=False,
        )
        self.failures: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        async with self._session.post(url, data=body, headers=headers) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        await self._session.close()


def _client_name() -> str:
    return f"aiohttp {importlib.metadata.version('aiohttp')}"


# --- bus clients ---------------------------------------------------------------------------


def _bus_lanes(ws_url: str) -> Lanes:
    """Guests on the bus, one WebSocket each, connected and greeted before they are used."""

    @asynccontextmanager
    async def lanes(in_flight: int) -> AsyncIterator[Sequence[Call]]:
        guests = [_BusGuest(ws_url) for _ in range(in_flight)]
        try:
            try:
                await asyncio.gather(*(guest.connect() for guest in guests))
            except (OSError, TimeoutError, WebSocketException) as exc:
                raise BenchmarkError(
                    f"connecting {in_flight} guests to the bus failed: {exc!r}"
                ) from exc
            yield guests
        finally:
            await asyncio.gather(*(guest.close() for guest in guests))

    return lanes


class _BusGuest:
    """A guest with one chat query in flight at a time, so the next `query_result` on its
    socket is the answer to it. Kept minimal (no inbox, no history): the broker, not this
    client, is what is measured."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self._ws: ClientConnection | None = None

    async def connect(self) -> None:
        """Open the socket and wait for the `pong` that follows the broker's greeting."""
        self._ws = await connect(self.url, max_size=16 * 1024 * 1024, open_timeout=30)
        await self._ws.send(json.dumps({"type": "ping", "id": "ready"}))
        async with asyncio.timeout(30):
            while (greeted := await self._answered("ready", kind="pong")) is False:
                pass
        if greeted is not True:
            raise BenchmarkError(f"the bus refused a guest: {greeted}")

    async def __call__(self) -> str | None:
        assert self._ws is not None
        self.sent += 1
        message_id = f"q{self.sent}"
        try:
            await self._ws.send(json.dumps({"type": "chat", "prompt": PROMPT, "id": message_id}))
            outcome: bool | str = False
            while outcome is False:
                outcome = await self._answered(message_id, kind="query_result")
        except WebSocketException as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if outcome is True else str(outcome)

    async def _answered(self, message_id: str, *, kind: str) -> bool | str:
        """Read one message: True if it is the awaited ``kind``, an error's text if it ends
        query ``message_id``, False for anything else (a ping is answered on the way)."""
        assert self._ws is not None
        message = json.loads(await self._ws.recv())
        got = message.get("type")
        if got == kind and (kind != "pong" or message.get("response_to") == message_id):
            return True
        if got == "error" and message.get("response_to") in (message_id, None):
            return f"{message.get('code')}: {message.get('message')}"
        if got == "ping":
            await self._ws.send('{"type":"pong"}')
        return False

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)


# --- the report's files --------------------------------------------------------------------


def _write_files(report: OverheadReport) -> OverheadReport:
    """The plot and the JSON report, side by side in ``params.out`` with one time stamp."""
    out = report.params.out
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"overhead-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    plot = draw_plot(report, stem.with_suffix(".png"))
    written = replace(report, plot=plot, report_file=stem.with_suffix(".json"))
    text = json.dumps(json_safe(written.as_dict()), indent=2, allow_nan=False)
    stem.with_suffix(".json").write_text(text + "\n")
    return written


def json_safe(value: object) -> object:
    """NaN (a figure with no samples) as null: NaN is not JSON and breaks strict parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def draw_plot(report: OverheadReport, path: Path) -> Path | None:
    """Latency p50 and queries/s against queries in flight, a line per measured path, both
    on log scales (the direct call is tens of times faster than the rest). None when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (latency, rate) = plt.subplots(1, 2, figsize=(11, 4.5))
    for figures in report.paths:
        if not figures.levels:
            continue
        in_flight = [lv.in_flight for lv in figures.levels]
        latency.plot(in_flight, [lv.latency.p50 * 1000 for lv in figures.levels], "o-")
        rate.plot(in_flight, [lv.throughput for lv in figures.levels], "o-", label=figures.label)
    for axes, what in ((latency, "latency p50 (ms)"), (rate, "queries/s")):
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xticks(report.params.concurrency, [str(c) for c in report.params.concurrency])
        axes.set_xlabel("queries in flight (closed loop)")
        axes.set_ylabel(what)
        axes.grid(True, which="both", alpha=0.3)
    rate.legend(loc="best", fontsize=8)
    figure.suptitle(f"bench overhead: zero-latency stub; {report.machine}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# --- progress ------------------------------------------------------------------------------


def _progress(console: Console | None) -> Progress:
    """Bars that count answered queries and show the failures so far."""
    return progress_bars(console, 22, TextColumn("queries"), TextColumn("{task.fields[errors]}"))


class _Bar:
    """A bar for one level: counts queries as they end (no total when the level is timed)."""

    def __init__(
        self, progress: Progress, description: str, params: OverheadParams, in_flight: int
    ) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=params.budget(in_flight), errors="")
        self._ended = 0

    def __call__(self, answered: int, failed: int) -> None:
        self._ended = answered + failed
        shown = f"[red]{failed} failed[/red]" if failed else ""
        self._progress.update(self._task, completed=self._ended, errors=shown)

    def finish(self) -> None:
        """Full, and its clock stopped (a bar without a total never ends by itself)."""
        self._progress.update(self._task, total=self._ended, completed=self._ended)
