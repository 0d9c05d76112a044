"""Start test brokers by forking a process that has already imported RENT A HAL.

`python -m rentahal serve` spends most of its start importing (FastAPI, SQLAlchemy, Alembic,
pydantic models, the bus…): about 1.2 s of the 1.5 s a broker takes to answer /readyz, paid
again at each of the suite's broker starts. A :class:`ForkServer` is one process that
imports all of that once and then forks a child per request; the child sets up its own
environment, working directory and output pipe and runs ``rentahal serve`` exactly as
``python -m rentahal`` would (the same CLI, settings read from its own environment, its own
event loop, port and database). It is still a separate process on a real port that a test can
SIGTERM or SIGKILL; only the imports are shared.

The protocol, over a Unix socket, one connection per child: the client sends one JSON line
``{"argv": [...], "env": {...}, "cwd": "..."}`` with the write end of a pipe attached
(SCM_RIGHTS) for the child's stdout and stderr; the server answers ``pid N`` once forked, then
``exit STATUS`` (a :attr:`subprocess.Popen.returncode`: negative for a signal) when the child
ends. The client's ``signal N`` lines are signals for the child, sent by the server: being its
parent, it knows whether that pid is still the child's (the client could hit a reused one).
The server exits, killing its children, when its stdin (a pipe from the client's process)
closes, so a crashed test run leaves no brokers behind.

Only commands ``python -m MODULE ...`` run by the same interpreter with the same ``PYTHON*``
environment qualify (:meth:`ForkServer.can_run`); anything else is an ordinary subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import random
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# What `rentahal serve` imports before it serves (rentahal/cli.py `serve`).
PRELOAD = (
    "rentahal.cli",
    "rentahal.api.app",
    "rentahal.api.connections",
    "rentahal.api.slow_clients",
    "rentahal.logging",
)
_REQUEST_LIMIT = 1024 * 1024


# --- the server (its own process) ------------------------------------------------------------


def serve(path: str, preload: Sequence[str]) -> None:
    """Import `preload`, listen on the Unix socket `path`, fork a child per request."""
    for module in preload:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below via `wake_w`
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "reap")
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "parent")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in selector.select():
            if key.data == "accept":
                connection, _ = listener.accept()
                with contextlib.suppress(OSError, ValueError):
                    pid = _fork(connection, children)
                    selector.register(connection, selectors.EVENT_READ, pid)
            elif isinstance(key.data, int):
                _signal(key.data, key.fileobj, children, selector)  # type: ignore[arg-type]
            elif key.data == "reap":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(children, selector)
            elif not os.read(sys.stdin.fileno(), 4096):  # the client's process is gone
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return


def _fork(connection: socket.socket, children: dict[int, socket.socket]) -> int:
    connection.settimeout(10)
    data, fds = b"", list[int]()
    while not data.endswith(b"\n") and len(data) < _REQUEST_LIMIT:
        chunk, received, _, _ = socket.recv_fds(connection, 65536, 1)
        if not chunk:
            break
        data, fds = data + chunk, fds + list(received)
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        connection.close()
        raise ValueError("a request carries one file descriptor: the output pipe")
    request = json.loads(data)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request, fds[0])  # never returns
    os.close(fds[0])
    children[pid] = connection
    connection.sendall(f"pid {pid}\n".encode())
    return pid


def _signal(
    pid: int,
    connection: socket.socket,
    children: dict[int, socket.socket],
    selector: selectors.BaseSelector,
) -> None:
    """Signal the child as its client asks (``signal N`` lines), while it is still ours."""
    try:
        data = connection.recv(4096)
    except OSError:
        data = b""
    if not data:
        selector.unregister(connection)
        return
    for line in data.decode(errors="replace").splitlines():
        name, _, number = line.partition(" ")
        if name == "signal" and number.isdigit() and children.get(pid) is connection:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, int(number))


def _reap(children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(connection)
            connection.close()


def _child(request: dict[str, Any], output: int) -> None:
    """In the forked child: become `python -m MODULE ARGS` with the request's environment."""
    code: int = 1
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
        # As the interpreter sets it up at start: a write to a closed pipe raises
        # BrokenPipeError instead of killing the process.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the server's sockets and pipes
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        random.seed()  # not the server's sequence, shared by every child
        module, *args = request["argv"][2:]
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# --- the client (in the test process) --------------------------------------------------------


class ForkedProcess:
    """A child of the fork server, with the parts of `asyncio.subprocess.Process` that
    :class:`~rentahal.testing.process.ServerProcess` uses."""

    def __init__(
        self,
        pid: int,
        stdout: asyncio.StreamReader,
        status: asyncio.StreamReader,
        status_writer: asyncio.StreamWriter,
    ) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self._ended = asyncio.Event()
        self._status_writer = status_writer
        self._watch = asyncio.ensure_future(self._watch_status(status))

    async def _watch_status(self, status: asyncio.StreamReader) -> None:
        try:
            line = (await status.readline()).decode()
        except (ConnectionError, OSError):
            line = ""
        # No status: the fork server itself died (and its children with it).
        self.returncode = int(line.split()[1]) if line.startswith("exit ") else -signal.SIGKILL
        self._status_writer.close()
        self._ended.set()

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, number: int) -> None:
        """Sent by the fork server, which alone knows for sure that the pid is still ours."""
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        self._status_writer.write(f"signal {int(number)}\n".encode())

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The client of a fork server process, which it starts on first use."""

    def __init__(self, preload: Sequence[str] = PRELOAD, env: Mapping[str, str] | None = None):
        self.preload = list(preload)
        self.env = dict(os.environ if env is None else env)
        self._server: subprocess.Popen[bytes] | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        assert self._directory is not None
        return str(Path(self._directory.name) / "forkserver.sock")

    def can_run(self, argv: Sequence[str], env: Mapping[str, str]) -> bool:
        """`python -m MODULE …` by this interpreter, with the server's `PYTHON*` variables."""
        python = {k: v for k, v in env.items() if k.startswith("PYTHON")}
        own = {k: v for k, v in self.env.items() if k.startswith("PYTHON")}
        return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" and python == own

    def _ensure_started(self) -> None:
        with self._lock:
            if self._server is not None and self._server.poll() is None:
                return
            self._directory = tempfile.TemporaryDirectory(prefix="rentahal-forkserver-")
            self._server = subprocess.Popen(
                [sys.executable, "-m", "rentahal.testing.forkserver", self.path, *self.preload],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self.env,
            )
            assert self._server.stdout is not None
            if self._server.stdout.readline() != b"ready\n":
                self._server.kill()
                raise RuntimeError(f"the fork server did not start (status {self._server.wait()})")

    async def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str] | None
    ) -> ForkedProcess:
        """Fork a child running `argv`; its stdout and stderr together are its `stdout`."""
        await asyncio.to_thread(self._ensure_started)
        read_end, write_end = os.pipe()
        request = {"argv": list(argv), "env": dict(env), "cwd": os.fspath(cwd or os.getcwd())}
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(connection, self.path)
            connection.setblocking(True)
            socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [write_end])
        except BaseException:
            connection.close()
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        connection.setblocking(False)
        status, status_writer = await asyncio.open_unix_connection(sock=connection)
        stdout = asyncio.StreamReader(limit=2**20)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stdout), os.fdopen(read_end, "rb", buffering=0)
        )
        line = (await status.readline()).decode()
        if not line.startswith("pid "):
            raise RuntimeError(f"the fork server refused {argv!r}: {line!r}")
        return ForkedProcess(int(line.split()[1]), stdout, status, status_writer)

    def close(self) -> None:
        """Stop the server (it kills any child still running)."""
        with self._lock:
            if self._server is not None:
                assert self._server.stdin is not None
                self._server.stdin.close()
                try:
                    self._server.wait(10)
                except subprocess.TimeoutExpired:
                    self._server.kill()
                    self._server.wait()
                self._server = None
            if self._directory is not None:
                self._directory.cleanup()
                self._directory = None


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
