"""A PostgreSQL server of a test's own, to stop and start under a running broker.

Outage tests must never stop the machine's PostgreSQL (other tests, and CI, use it), so this
makes a throwaway cluster with `initdb` in a temporary directory, on a free port of
127.0.0.1, and runs it with `pg_ctl`. As root it runs as the `postgres` user, since the
server refuses to run as root.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from rentahal.net import free_port


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's initdb was not found (scripts/test installs it)")
    return Path(initdb).parent


class PrivatePostgres:
    """`async with PrivatePostgres() as pg:` a running server; `await pg.stop()` and
    `await pg.start()` take it away and bring it back on the same port and data."""

    def __init__(self) -> None:
        self.port = free_port()
        self._bin = _bindir()
        self._root = Path(tempfile.mkdtemp(prefix="rentahal-pg-"))
        self.data = self._root / "data"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        """The broker's `database_url` for this server's `postgres` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, *argv: str) -> None:
        command = [str(self._bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {output.decode(errors='replace')}")

    async def __aenter__(self) -> Self:
        if self._as_postgres:
            shutil.chown(self._root, "postgres", "postgres")
        await self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(mode="immediate")
        shutil.rmtree(self._root, ignore_errors=True)

    async def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._root} "
            "-c fsync=off -c full_page_writes=off"
        )
        log = str(self._root / "server.log")
        await self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    async def stop(self, mode: str = "fast") -> None:
        """Stop the server; `fast` ends every session as a PostgreSQL restart does."""
        if (self.data / "postmaster.pid").exists():
            await self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
