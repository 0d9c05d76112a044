"""The broker as a real subprocess, and a small bus client, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
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


def base_env() -> dict[str, str]:
    """The environment without RENTAHAL_* settings, so a developer's shell can't leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RENTAHAL_")}


class BrokerProcess(ServerProcess):
    """`rentahal serve` on a free port of 127.0.0.1 with its own data directory."""

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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
