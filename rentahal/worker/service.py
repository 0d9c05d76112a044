"""A loaded engine plus what the worker knows about its own load.

Loading happens in a thread after the server starts, so `/health` answers 503 ("loading")
at once instead of the port staying closed; each request runs in a thread, at most
`slots` at a time, so health checks never wait behind a long transcription (the seed's
workers ran their models on the event loop and stalled their own health checks).

A streamed chat answer (`stream`) is generated in such a thread too, each piece handed to the
event loop as it comes (`call_soon_threadsafe` into a queue), and holds its slot until the
engine has stopped: at the end of the answer, or at the next token once `stop` is set.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

import structlog
from pydantic import BaseModel

from rentahal import __version__
from rentahal.worker import hardware
from rentahal.worker.engines import Engine
from rentahal.worker.protocol import REQUEST_SCHEMAS, ChatResponse

log = structlog.get_logger(__name__)


class Stopped(Exception):
    """The engine stopped before the end of its answer because nobody read it any more."""


class Readiness(enum.StrEnum):
    LOADING = "loading"
    READY = "healthy"
    FAILED = "failed"


class Served(ABC):
    """What a worker node serves (an engine, or a proxied server): its readiness, models and
    load, which `/health`, heartbeats and registration report."""

    role: str
    engine_name: str

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.readiness = Readiness.LOADING
        self.load_error: str | None = None
        self.in_flight = 0
        self.served = 0
        self._loaded = asyncio.Event()

    @abstractmethod
    async def load(self) -> None:
        """Get ready; ends with `_done_loading(error or None)`."""

    @property
    @abstractmethod
    def models(self) -> list[str]: ...

    def _done_loading(self, error: str | None) -> None:
        self.readiness, self.load_error = (
            (Readiness.FAILED, error) if error else (Readiness.READY, None)
        )
        self._loaded.set()

    async def wait_loaded(self) -> bool:
        await self._loaded.wait()
        return self.readiness is Readiness.READY

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "status": self.readiness.value,
            "role": self.role,
            "engine": self.engine_name,
            "models": self.models if self.readiness is Readiness.READY else [],
            "load": {"in_flight": self.in_flight, "slots": self.slots, "served": self.served},
            "version": __version__,
        }
        if self.load_error:
            report["error"] = self.load_error
        return report


class WorkerService(Served):
    def __init__(self, role: str, engine: Engine) -> None:
        super().__init__(engine.options.slots)
        self.role = role
        self.engine = engine
        self.engine_name = engine.name
        self.schema = REQUEST_SCHEMAS[role]
        self._gate = asyncio.Semaphore(self.slots)
        self._hardware: dict[str, Any] = {}

    async def load(self) -> None:
        started = time.perf_counter()
        self._hardware = await asyncio.to_thread(hardware.describe)
        try:
            await asyncio.to_thread(self.engine.load)
        except Exception as exc:
            log.error("worker.load_failed", engine=self.engine.name, error=str(exc))
            self._done_loading(str(exc))
            return
        log.info(
            "worker.loaded",
            role=self.role,
            engine=self.engine.name,
            models=self.engine.models,
            seconds=round(time.perf_counter() - started, 2),
        )
        self._done_loading(None)

    @property
    def models(self) -> list[str]:
        return self.engine.models if self.readiness is Readiness.READY else []

    def health(self) -> dict[str, Any]:
        report = super().health() | {"hardware": self._hardware}
        if speakers := getattr(self.engine, "speakers", None):
            report["speakers"] = speakers if self.readiness is Readiness.READY else []
        return report

    async def run(self, request: BaseModel) -> BaseModel:
        async with self._gate:
            self.in_flight += 1
            try:
                return await asyncio.to_thread(self.engine.run, request)
            finally:
                self.in_flight -= 1
                self.served += 1

    async def stream(
        self, request: BaseModel, stop: threading.Event | None = None
    ) -> AsyncIterator[str]:
        """The answer to a chat or vision `request` as pieces of text, each as soon as the
        engine writes it (one piece from an engine that does not stream). Setting `stop`
        stops the engine at its next piece; the answer then ends with `Stopped`. The slot
        is held until the engine has returned."""
        stop = stop or threading.Event()
        async with self._gate:
            self.in_flight += 1
            try:
                if not self.engine.streams:
                    answer = await asyncio.to_thread(self.engine.run, request)
                    assert isinstance(answer, ChatResponse)
                    yield answer.response
                    return
                loop = asyncio.get_running_loop()
                pieces: asyncio.Queue[str | None] = asyncio.Queue()
                refused, closed = threading.Event(), threading.Event()

                def write(piece: str) -> bool:
                    if stop.is_set() or closed.is_set():
                        refused.set()
                        return False
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
                    return True

                def generate() -> None:
                    try:
                        self.engine.stream(request, write)
                    finally:  # after every piece: the loop runs its callbacks in order
                        loop.call_soon_threadsafe(pieces.put_nowait, None)

                engine = asyncio.ensure_future(asyncio.to_thread(generate))
                try:
                    while (piece := await pieces.get()) is not None:
                        yield piece
                    await engine  # its error, if it failed
                finally:
                    closed.set()  # closed early by its reader: stop at the next piece
                    await asyncio.wait([engine])
                if refused.is_set():
                    raise Stopped("nobody reads the answer any more")
            finally:
                self.in_flight -= 1
                self.served += 1
