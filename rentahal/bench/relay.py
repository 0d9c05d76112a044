"""The floor under the broker: a bare relay that makes the hops a `/v1` query makes, with
none of the broker's own work, measured by `bench overhead` as one more path.

A query through the broker is, at the least: an HTTP request in, its job written durably
before it runs, an HTTP call to the worker, its outcome written durably, the answer out. This
relay does exactly that and nothing else: a bare ASGI callable under the same server the
broker runs on (uvicorn, uvloop, httptools), one SQLite row inserted and then updated, each a
commit from a writer thread as the broker's group committer does (WAL, `synchronous=NORMAL`),
and the call to the stub over one pooled aiohttp session. No authentication, admission,
queue, routing, events or accounting.

So what the relay adds over a direct call is what this machine's Python costs for those hops
alone; what the broker adds beyond the relay is its own work. Where the relay itself misses
a target of issue 16, no broker written in Python on this machine can meet it.

Run as `python -m rentahal.bench.relay --port P --upstream URL --database FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import uvicorn
from starlette.types import Message, Receive, Scope, Send

TABLE = (
    "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, state TEXT NOT NULL,"
    " body BLOB NOT NULL, answer BLOB)"
)
JSON_HEADERS = [(b"content-type", b"application/json")]


class Relay:
    """The ASGI app: every POST is relayed to ``upstream`` (same path), between two commits."""

    def __init__(self, upstream: str, database: str) -> None:
        self._upstream = upstream.rstrip("/")
        self._ids = itertools.count(1)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="relay-writer")
        self._db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(TABLE)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._relay(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0), trust_env=False
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                self._writer.shutdown()
                self._db.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":  # the readiness probe
            await _answer(send, 200, b"{}")
            return
        body = await _body(receive)
        job = next(self._ids)
        await self._commit("INSERT INTO jobs (id, state, body) VALUES (?, 'running', ?)", job, body)
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        async with self._session.post(
            self._upstream + scope["path"], data=body, headers=headers
        ) as response:
            status, answer = response.status, await response.read()
        await self._commit("UPDATE jobs SET state = 'done', answer = ? WHERE id = ?", answer, job)
        await _answer(send, status, answer)

    async def _commit(self, statement: str, *parameters: Any) -> None:
        """One statement, committed on its own (autocommit), from the writer thread."""
        await asyncio.get_running_loop().run_in_executor(
            self._writer, self._db.execute, statement, parameters
        )


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message: Message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the stub's base URL")
    parser.add_argument("--database", required=True, help="a SQLite file to write the jobs to")
    args = parser.parse_args()
    app = Relay(args.upstream, args.database)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
