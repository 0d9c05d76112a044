"""Running a worker node: load the engine, serve HTTP, and (with a broker) join its realm.

Shutdown runs in the order that loses nothing: leave the realm first, so the broker stops
sending jobs, then let the HTTP server finish the requests it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn
from starlette.types import ASGIApp

from rentahal.worker.app import create_worker_app
from rentahal.worker.engines import EngineOptions, pick
from rentahal.worker.joining import Registration, stay_registered
from rentahal.worker.outbound import stay_connected
from rentahal.worker.proxy import ProxyService, create_proxy_app
from rentahal.worker.service import Served, WorkerService

log = structlog.get_logger(__name__)

# The seed's ports, by role.
DEFAULT_PORTS = {"chat": 8000, "vision": 8001, "stt": 8002, "tts": 8010, "imagine": 7861}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    role: str
    engine: str | None = None
    model: Path | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    slots: int = 1
    threads: int = 0
    name: str | None = None
    address: str | None = None  # how the broker reaches this worker (default: from host/port)
    broker: str | None = None
    token: str | None = None
    outbound: bool = False
    api_key: str | None = None  # what callers of /predict must present
    # Proxy mode: the server in front of which this node stands, its protocol, what it serves.
    upstream: str | None = None
    upstream_kind: str = "ollama"
    serves: str = "chat"

    @property
    def query_type(self) -> str:
        return self.serves if self.role == "proxy" else self.role

    @property
    def listen_port(self) -> int:
        return self.port or DEFAULT_PORTS.get(self.role, 8000)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the node decides the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_node(config: NodeConfig) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit status (1: the model failed to
    load, 3: the broker refused the worker, 4: the port is taken)."""
    if config.broker and not config.token:
        raise ValueError("joining a broker needs a worker token (--token)")
    # A worker that joins a broker accepts jobs only from it: the key travels with the
    # (authenticated) registration and never leaves the two processes.
    api_key = config.api_key or (secrets.token_urlsafe(32) if config.broker else None)
    service: Served
    app: ASGIApp
    if config.role == "proxy":
        if not config.upstream:
            raise ValueError("a proxy needs --upstream URL")
        proxy = ProxyService(config.upstream, config.upstream_kind, config.serves, config.slots)
        service, app = proxy, create_proxy_app(proxy, api_key=api_key)
    else:
        engine = pick(
            config.role,
            config.engine,
            EngineOptions(model=config.model, threads=config.threads, slots=config.slots),
        )
        worker = WorkerService(config.role, engine)
        service, app = worker, create_worker_app(worker, api_key=api_key)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    server: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None
    if not config.outbound:
        # Bound here rather than by uvicorn, which answers a busy port with sys.exit.
        try:
            listening = socket.create_server((config.host, config.listen_port))
            # Accepted connections inherit it: without, small answers wait ~40 ms on Nagle
            # and delayed ACKs (asyncio only sets it on sockets it opened itself).
            listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            log.error(
                "worker.cannot_listen", host=config.host, port=config.listen_port, error=str(exc)
            )
            return 4
        server = _QuietServer(
            uvicorn.Config(
                app, host=config.host, port=config.listen_port, log_config=None, access_log=False
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[listening]), name="http")
        serving.add_done_callback(lambda _: stop.set())
    joining: asyncio.Task[None] | None = None
    try:
        if not await _loaded(service, stop):
            return 1
        if config.broker:
            registration = Registration(
                name=config.name or f"{config.role}-{secrets.token_hex(3)}",
                role=config.query_type,
                kind=config.upstream_kind if config.role == "proxy" else "rentahal",
                models=service.models,
                slots=service.slots,
                key=api_key or "",
                address=config.address or f"http://{config.host}:{config.listen_port}",
            )
            join = (
                stay_connected(config.broker, config.token or "", registration, app)
                if config.outbound
                else stay_registered(config.broker, config.token or "", registration, service)
            )
            joining = asyncio.create_task(join, name="join")
            joining.add_done_callback(lambda _: stop.set())
        await stop.wait()
        if joining is not None and joining.done() and (failure := joining.exception()):
            log.error("worker.join_failed", error=str(failure))
            return 3
        return 0
    finally:
        if joining is not None:
            joining.cancel()  # deregisters on the way out
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await joining
        if server is not None and serving is not None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await serving


async def _loaded(service: Served, stop: asyncio.Event) -> bool:
    """Load the model unless told to stop first; False when loading failed or was stopped."""
    loading = asyncio.create_task(service.load(), name="load")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not loading.done():
        loading.cancel()  # the thread finishes on its own; nothing waits for it
        return False
    return await service.wait_loaded()
