"""The broker as a real subprocess, and a small bus client, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from websockets.asyncio.client import ClientConnection, connect

from rentahal.testing.process import ServerProcess, free_port

Message = dict[str, Any]


def run_cli(*args: str, data_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """Run `rentahal ARGS --data-dir D` to completion; returns stdout (raises on failure)."""
    completed = subprocess.run(
        [sys.executable, "-m", "rentahal", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={**base_env(), **(env or {})},
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"rentahal {' '.join(args)} failed:\n{completed.stderr}")
    return completed.stdout


@dataclass(frozen=True)
class BrokerTraceback:
    """A traceback in a broker's output: the log line before it, then the traceback itself up
    to its exception's line (chained exceptions included)."""

    broker: str  # the broker's URL
    text: str

    @property
    def head(self) -> str:
        """The logged event and the exception, without the frames in between."""
        lines = self.text.splitlines()
        ends = [line for line in lines if line and not line[0].isspace()]
        return "\n".join(dict.fromkeys([*lines[:1], *ends[-1:]]))


_TRACEBACK = "Traceback (most recent call last)"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_TRACEBACK_LINES = 120  # longer ones are cut here
_unclaimed: list[BrokerTraceback] = []
_unclaimed_lock = threading.Lock()


def take_tracebacks() -> list[BrokerTraceback]:
    """Every traceback any `BrokerProcess` logged since the last call, oldest first.

    The suite's fixtures take them after each test and fail it (tests/conftest.py): a broker
    that logs a traceback has hit a path nobody handled, even when the test's assertions hold.
    """
    with _unclaimed_lock:
        taken = _unclaimed[:]
        _unclaimed.clear()
    return taken


def base_env() -> dict[str, str]:
    """The environment without RENTAHAL_* settings, so a developer's shell can't leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RENTAHAL_")}


class BrokerProcess(ServerProcess):
    """`rentahal serve` on a free port of 127.0.0.1 with its own data directory.

    With :attr:`ServerProcess.fork_server` set (the test suite sets it), the process is forked
    from one that has already imported the broker's code: a start takes ~0.3 s, not ~1.5.
    """

    forkable = True

    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        super().__init__(
            [
                sys.executable,
                "-m",
                "rentahal",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
            ],
            f"http://127.0.0.1:{self.port}/readyz",
            env={**base_env(), **(env or {})},
            startup_timeout=30.0,
        )
        self._partial = b""  # the output's last, unfinished line
        self._previous = ""  # the last complete line outside a traceback
        self._traceback: list[str] | None = None
        self._traceback_ended = False  # its exception's line is in; a chained one may follow

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._partial = b""
        await super().start()

    def _received(self, chunk: bytes) -> None:
        """Scan the output line by line for tracebacks (`take_tracebacks`), as it is read:
        `output` keeps only its tail."""
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        if not chunk and self._partial:  # the end of the output: its unterminated last line
            lines, self._partial = [self._partial], b""
        for line in lines:
            self._scan_for_tracebacks(line.decode(errors="replace").rstrip("\r"))
        if not chunk:
            self._end_traceback()

    def _scan_for_tracebacks(self, line: str) -> None:
        block = self._traceback
        if block is None:
            if _TRACEBACK in line:
                self._traceback, self._traceback_ended = [self._previous, line], False
                if not line.startswith(_TRACEBACK):  # all on one line, as in a JSON log
                    self._end_traceback()
            else:
                self._previous = line
            return
        continues = _TRACEBACK in line or line.startswith(_CHAINED)
        if self._traceback_ended and line.strip() and not continues:
            self._end_traceback()
            self._scan_for_tracebacks(line)
            return
        block.append(line)
        if line and not line[0].isspace() and not continues:
            self._traceback_ended = True  # `SomeError: message`
        elif continues:
            self._traceback_ended = False
        if len(block) >= _TRACEBACK_LINES:
            self._end_traceback()

    def _end_traceback(self) -> None:
        if self._traceback is not None:
            text = "\n".join(self._traceback).strip("\n")
            with _unclaimed_lock:
                _unclaimed.append(BrokerTraceback(self.url, text))
            self._traceback, self._previous = None, ""

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def guest_cookie(self) -> str:
        """A new guest session, as a browser gets it by loading the page."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/")
            response.raise_for_status()
            return response.cookies["rentahal_session"]

    def bus(self, *, cookie: str | None = None, api_key: str | None = None) -> BusClient:
        headers: dict[str, str] = {}
        if cookie:
            headers["Cookie"] = f"rentahal_session={cookie}"
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return BusClient(self.ws_url, headers)


class BusClient:
    """A WebSocket client of `/ws` that keeps everything it receives, for assertions.

    `expect` waits for the next message matching a predicate (earlier unmatched messages
    stay in the inbox), so tests wait on conditions, never on fixed sleeps.
    """

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.url = url
        self.headers = dict(headers)
        self.inbox: list[Message] = []
        self.seen: list[Message] = []
        self._ws: ClientConnection | None = None
        self._arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.response_headers: Mapping[str, str] = {}

    async def __aenter__(self) -> Self:
        self._ws = await connect(
            self.url, additional_headers=self.headers, max_size=64 * 1024 * 1024
        )
        self.response_headers = self._ws.response.headers if self._ws.response else {}
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if message.get("type") == "ping":
                    await self._ws.send(json.dumps({"type": "pong"}))
                async with self._arrived:
                    self.inbox.append(message)
                    self.seen.append(message)
                    self._arrived.notify_all()
        except Exception:
            pass
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()
            async with self._arrived:
                self._arrived.notify_all()

    async def send(self, message: Message | str | bytes) -> None:
        assert self._ws is not None
        await self._ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def expect(
        self,
        kind: str | None = None,
        where: Callable[[Message], bool] = lambda _: True,
        within: float = 10.0,
    ) -> Message:
        """Take the first message of type `kind` satisfying `where`, waiting for it."""

        def match(message: Message) -> bool:
            return (kind is None or message.get("type") == kind) and where(message)

        deadline = time.monotonic() + within
        async with self._arrived:
            while True:
                for index, message in enumerate(self.inbox):
                    if match(message):
                        return self.inbox.pop(index)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed.is_set():
                    got = [json.dumps(m)[:200] for m in self.inbox[-8:]]
                    raise TimeoutError(f"no {kind or 'message'} arrived; inbox holds {got}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)

    async def request(self, message: Message, within: float = 10.0) -> Message:
        """Send a message with an id and return the broker's direct reply to it."""
        message = {"id": f"r{time.monotonic_ns()}", **message}
        await self.send(message)
        return await self.expect(
            where=lambda m: m.get("response_to") == message["id"], within=within
        )
