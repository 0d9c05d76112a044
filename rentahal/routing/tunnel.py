"""Reaching outbound workers: HTTP requests carried over the WebSocket the worker opened.

An outbound worker's address is `tunnel://<name>`. The broker's one HTTP client mounts
`TunnelTransport` for that scheme, so every adapter, the health monitor and the scheduler
reach an outbound worker exactly as they reach any other; nothing above this module knows
the difference.

A request lost with the connection is re-sent, under the same id, when the worker comes back
within `grace` seconds; the worker answers a repeated id with its first run's result, so a
reconnect never runs a job twice. Past the grace period the request fails like a refused
connection, and the scheduler retries the job elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

SCHEME = "tunnel"
RECONNECT_GRACE = 10.0
MAX_RESENDS = 3

Send = Callable[[dict[str, Any]], Awaitable[None]]


def tunnel_address(name: str) -> str:
    return f"{SCHEME}://{name}"


def _key(name: str) -> str:
    return name.lower()  # a URL's host is case-insensitive: httpx hands it over lower-cased


class TunnelLost(Exception):
    """The worker's socket closed while a request was out."""


class Tunnel:
    """One connected outbound worker: sends requests, matches answers to them by id."""

    def __init__(self, name: str, send: Send) -> None:
        self.name = name
        self._send = send
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise TunnelLost(self.name)
        request_id = message["id"]
        answer = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            await self._send(message)
            return await answer
        except asyncio.CancelledError:
            # The job was cancelled or timed out: tell the worker to stop it.
            if not self.closed:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._send({"type": "cancel", "id": request_id}))
            raise
        except Exception as exc:  # the socket failed under the send
            raise TunnelLost(self.name) from exc
        finally:
            self._pending.pop(request_id, None)

    def answer(self, message: dict[str, Any]) -> None:
        future = self._pending.get(str(message.get("id")))
        if future is not None and not future.done():
            future.set_result(message)

    def close(self) -> None:
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TunnelLost(self.name))


class Tunnels:
    """The connected outbound workers by name, and a way to wait for one to come back."""

    def __init__(self) -> None:
        self._open: dict[str, Tunnel] = {}
        self._changed = asyncio.Condition()

    def get(self, name: str) -> Tunnel | None:
        return self._open.get(_key(name))

    async def attach(self, tunnel: Tunnel) -> None:
        async with self._changed:
            if (previous := self._open.get(_key(tunnel.name))) is not None:
                previous.close()
            self._open[_key(tunnel.name)] = tunnel
            self._changed.notify_all()

    def detach(self, tunnel: Tunnel) -> None:
        tunnel.close()
        if self._open.get(_key(tunnel.name)) is tunnel:
            del self._open[_key(tunnel.name)]

    async def wait_for(self, name: str, seconds: float) -> Tunnel | None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: _key(name) in self._open), seconds
                )
            return self._open.get(_key(name))


class TunnelTransport(httpx.AsyncBaseTransport):
    def __init__(self, tunnels: Tunnels, grace: float = RECONNECT_GRACE) -> None:
        self._tunnels = tunnels
        self._grace = grace

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host
        body = await request.aread()
        message = {
            "type": "request",
            "id": uuid.uuid4().hex,
            "method": request.method,
            "path": request.url.raw_path.decode("ascii"),
            "headers": {k: v for k, v in request.headers.items() if k.lower() != "host"},
            "body": base64.b64encode(body).decode(),
        }
        timeout = request.extensions.get("timeout", {}).get("read")
        for _ in range(MAX_RESENDS):
            tunnel = self._tunnels.get(name) or await self._tunnels.wait_for(name, self._grace)
            if tunnel is None:
                break
            try:
                async with asyncio.timeout(timeout):
                    answer = await tunnel.request(message)
            except TunnelLost:
                continue
            except TimeoutError:
                raise httpx.ReadTimeout(f"worker {name} did not answer", request=request) from None
            return httpx.Response(
                int(answer.get("status", 502)),
                headers=answer.get("headers") or {},
                content=base64.b64decode(answer.get("body") or ""),
                request=request,
            )
        raise httpx.ConnectError(f"outbound worker {name} is not connected", request=request)
