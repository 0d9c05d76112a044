"""The broker's one pooled HTTP client for worker traffic, and the fast lane of its hot path.

Every backend speaks through an `httpx.AsyncClient`: its interface carries per-request
timeouts, tunnels to outbound workers (a transport mounted on `tunnel://`) and the tests'
plain clients. Under it the broker's `WorkerClient` runs aiohttp's connection pool, since
httpcore's pool scanned every pooled connection on each request. httpx's own layers above
the pool (building the request, merging URLs, the cookie jar, auth and redirect handling)
were still a tenth of the broker's work per query (`docs/benchmarks.md`), so the call that
generates an answer, a JSON POST answered whole or line by line, goes to aiohttp directly
(`post_json`) when the client is a `WorkerClient` and the URL plain HTTP(S). Anything else
takes the httpx way, with the same answer and the same errors: aiohttp's failures are raised
as httpx's transport errors, which the scheduler already counts against the worker.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from rentahal import request_ids

CONNECT_TIMEOUT = 5.0
MAX_CONNECTIONS = 1000
KEEPALIVE = 5.0  # seconds an idle pooled connection is kept, as httpx keeps them


class Reply(Protocol):
    """What a backend reads of an answer: the part of `httpx.Response` both lanes have."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def aread(self) -> bytes: ...

    def aiter_lines(self) -> AsyncIterator[str]: ...


class WorkerClient(httpx.AsyncClient):
    """httpx's interface over one aiohttp pool, which `post_json` also uses directly."""

    def __init__(self, **kwargs: Any) -> None:
        self._session: aiohttp.ClientSession | None = None
        super().__init__(transport=AiohttpTransport(client=self.session), **kwargs)

    def session(self) -> aiohttp.ClientSession:
        """The pool, made on first use: aiohttp needs the running event loop."""
        if self._session is None:
            # A job's own time limit is the scheduler's (`query_timeout`), around the call.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            )
        return self._session

    # httpx closes its transports, which close the pool only if httpx itself used it.
    async def aclose(self) -> None:
        await super().aclose()
        await self._close_pool()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await super().__aexit__(exc_type, exc_value, traceback)
        await self._close_pool()

    async def _close_pool(self) -> None:
        if self._session is not None:
            await self._session.close()


class _AiohttpReply:
    """An aiohttp response read as a `Reply`."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    async def aread(self) -> bytes:
        return await self._response.read()

    async def aiter_lines(self) -> AsyncIterator[str]:
        """Lines as they arrive, of any length (aiohttp's own line reader refuses lines over
        its buffer's limit; a worker's last NDJSON line may carry a whole answer)."""
        pending = bytearray()  # the start of a line not yet ended
        async for chunk in self._response.content.iter_any():
            *ended, rest = chunk.split(b"\n")
            for piece in ended:
                pending += piece
                yield pending.rstrip(b"\r").decode("utf-8", "replace")
                pending.clear()
            pending += rest
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")


@asynccontextmanager
async def post_json(
    client: httpx.AsyncClient, url: str, body: object, headers: Mapping[str, str]
) -> AsyncIterator[Reply]:
    """`POST url` with `body` as JSON; the answer, open for reading while in the block."""
    if not isinstance(client, WorkerClient) or not url.startswith(("http://", "https://")):
        async with client.stream("POST", url, json=body, headers=headers) as response:
            yield response
        return
    sent = {"Content-Type": "application/json", **headers}
    if (request_id := request_ids.current()) is not None:
        sent.setdefault(request_ids.HEADER, request_id)
    try:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        async with client.session().post(url, data=data, headers=sent) as answer:
            yield _AiohttpReply(answer)
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from exc
