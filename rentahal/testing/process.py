"""Run servers as real subprocesses, for tests and benchmarks.

Stubs and the broker are exercised as separate processes on 127.0.0.1 so tests cross a
real network stack, and so a test can SIGKILL a server to simulate a crash.
:class:`ServerProcess` starts any command and waits for a URL to answer;
:class:`StubServer` adds the stub's command line and its ``/_stub`` control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self
from typing import Protocol as TypingProtocol

import httpx

from rentahal.net import free_port
from rentahal.testing.forkserver import ForkServer
from rentahal.testing.stubs import Protocol

log = logging.getLogger(__name__)

_OUTPUT_LIMIT = 256 * 1024
_POLL_INTERVAL = 0.05


class Child(TypingProtocol):
    """What :class:`ServerProcess` needs of a running child (`asyncio.subprocess.Process`, or
    a fork server's :class:`~rentahal.testing.forkserver.ForkedProcess`)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def stdout(self) -> asyncio.StreamReader | None: ...
    async def wait(self) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class ServerStartError(RuntimeError):
    """The server process died or never answered its readiness URL."""


class ServerProcess:
    """A command run as a child process, considered up once ``ready_url`` answers 2xx (at
    once when it is None: a process with no port, whose readiness the caller checks).

    stdout and stderr are drained continuously into :attr:`output` (the last 256 KiB), so
    a chatty server can never block on a full pipe, and startup errors can quote it.
    ``env`` entries are layered over the current environment.

    A subclass that sets :attr:`forkable` runs its ``python -m ...`` command forked from
    :attr:`fork_server` when one is set (the test suite sets it): the same command, without
    paying for its imports again.
    """

    fork_server: ClassVar[ForkServer | None] = None
    forkable: ClassVar[bool] = False

    def __init__(
        self,
        argv: Sequence[str],
        ready_url: str | None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.argv = list(argv)
        self.ready_url = ready_url
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._process: Child | None = None
        self._drain: asyncio.Task[None] | None = None
        self._output = bytearray()
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has ended (negative: killed by that signal)."""
        return self._process.returncode if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def output(self) -> str:
        """Combined stdout/stderr captured so far."""
        return self._output.decode(errors="replace")

    async def start(self) -> None:
        """Launch the command and wait until ``ready_url`` answers with a 2xx status."""
        if self.running:
            raise RuntimeError(f"{self.argv[0]} is already running (pid {self.pid})")
        self._output.clear()
        self._stopping = False
        self._process = await self._spawn()
        assert self._process.stdout is not None
        self._drain = asyncio.create_task(self._collect(self._process.stdout))
        try:
            await self._wait_ready()
        except BaseException:
            await self.kill()
            raise

    async def _spawn(self) -> Child:
        """Start the command, its stdout and stderr together on one pipe."""
        env = {**os.environ, **self.env} if self.env is not None else dict(os.environ)
        server = self.fork_server
        if self.forkable and server is not None and server.can_run(self.argv, env):
            return await server.spawn(self.argv, env, self.cwd)
        return await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.env} if self.env is not None else None,
            cwd=self.cwd,
        )

    async def stop(self) -> None:
        """Terminate gracefully (SIGTERM), escalating to SIGKILL after ``stop_timeout``."""
        process = self._process
        if process is None:
            return
        self._stopping = True
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), self.stop_timeout)
            except TimeoutError:
                await self.kill()
        await self._reap()

    async def kill(self) -> None:
        """SIGKILL the process, as a crash would, and wait for it to be gone."""
        process = self._process
        if process is None:
            return
        self._stopping = True
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await self._reap()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _wait_ready(self) -> None:
        if self.ready_url is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while True:
                if not self.running:
                    await self._reap()
                    raise ServerStartError(
                        f"{self._describe()} exited with status {self.returncode} before "
                        f"{self.ready_url} answered. Output:\n{self.output}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(self.ready_url)).is_success:
                        return
                if loop.time() >= deadline:
                    raise ServerStartError(
                        f"{self._describe()} did not answer {self.ready_url} within "
                        f"{self.startup_timeout} s. Output:\n{self.output}"
                    )
                await asyncio.sleep(_POLL_INTERVAL)

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self._output += chunk
            del self._output[:-_OUTPUT_LIMIT]
            self._received(chunk)
        self._received(b"")
        if self._process is not None and not self._stopping:
            # Nobody asked it to end: say so where a failing test will show it.
            status = await self._process.wait()
            if not self._stopping:
                log.warning(
                    "%s ended on its own with status %s; its last output:\n%s",
                    self._describe(),
                    status,
                    self.output[-4000:],
                )

    def _received(self, chunk: bytes) -> None:
        """Called with each chunk of output as it is read, and with ``b""`` at its end."""

    async def _reap(self) -> None:
        """Wait for the exit status and the last of the output."""
        if self._process is not None:
            await self._process.wait()
        if self._drain is not None:
            await self._drain

    def _describe(self) -> str:
        return " ".join(self.argv)


class StubServer(ServerProcess):
    """A stub AI server (see :mod:`rentahal.testing.stubs`) running in its own process.

    ``async with StubServer("ollama", latency=0.2, models=["llama3"]) as stub:`` starts it
    on a free port; the async methods drive its ``/_stub`` control API.
    """

    forkable = True

    def __init__(
        self,
        protocol: Protocol,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        models: Sequence[str] | None = None,
        api_key: str | None = None,
        port: int | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        self.protocol = protocol
        self.port = port if port is not None else free_port()
        argv = [
            sys.executable,
            "-m",
            "rentahal.testing.stubs",
            "--protocol",
            protocol,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--latency",
            str(latency),
            "--chunk-delay",
            str(chunk_delay),
        ]
        if models is not None:
            argv += ["--models", ",".join(models)]
        if api_key is not None:
            argv += ["--api-key", api_key]
        super().__init__(argv, f"{self.url}/_stub/stats", startup_timeout=startup_timeout)

    @property
    def address(self) -> str:
        """``host:port``, the form the broker's worker registry uses."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def requests(self) -> list[dict[str, Any]]:
        """Protocol requests received so far: ``{method, path, headers, json, time}``."""
        result: list[dict[str, Any]] = await self._control("GET", "/requests")
        return result

    async def clear(self) -> None:
        """Forget the recorded requests."""
        await self._control("DELETE", "/requests")

    async def configure(self, **behaviour: Any) -> dict[str, Any]:
        """Patch the behaviour (``latency``, ``fail_status``, ...); returns all of it."""
        result: dict[str, Any] = await self._control("POST", "/config", behaviour)
        return result

    async def reset(self) -> dict[str, Any]:
        """Back to the launch behaviour, with an empty log and zeroed counters."""
        result: dict[str, Any] = await self._control("POST", "/reset")
        return result

    async def stats(self) -> dict[str, int]:
        """``{"in_flight", "completed", "disconnected"}`` request counters."""
        result: dict[str, int] = await self._control("GET", "/stats")
        return result

    async def _control(self, method: str, path: str, payload: object = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0, trust_env=False) as client:
            response = await client.request(method, f"/_stub{path}", json=payload)
        response.raise_for_status()
        return response.json() if response.content else None
