"""Outbound mode: the worker dials the broker (`/ws/worker`) and takes jobs over that socket,
so a machine behind NAT or a firewall serves a realm with no open port and no tunnel service.

The broker sends HTTP requests as messages (`request {id, method, path, headers, body}`);
the worker runs each against its own app, in-process, and answers `response {id, status,
headers, body}`. Bodies are base64. A request id seen before is never run again: after a
reconnect the broker re-sends what it had in flight, and gets the first run's answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from starlette.types import ASGIApp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rentahal.worker.joining import MAX_BACKOFF, JoinRefused, Registration

log = structlog.get_logger(__name__)

REMEMBERED_REQUESTS = 512
MAX_FRAME = 64 * 1024 * 1024


def socket_url(broker: str) -> str:
    base = broker.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/ws/worker"
    return "ws://" + base.removeprefix("http://") + "/ws/worker"


class _Runs:
    """Requests by id: running or finished, the last few hundred kept for re-sends."""

    def __init__(self, local: httpx.AsyncClient) -> None:
        self._local = local
        self._runs: OrderedDict[str, asyncio.Task[dict[str, Any]]] = OrderedDict()

    def get(self, message: dict[str, Any]) -> asyncio.Task[dict[str, Any]]:
        request_id = str(message["id"])
        run = self._runs.get(request_id)
        if run is None:
            run = self._runs[request_id] = asyncio.create_task(self._run(request_id, message))
            while len(self._runs) > REMEMBERED_REQUESTS:
                _, oldest = self._runs.popitem(last=False)
                oldest.cancel()
        return run

    def cancel(self, request_id: str) -> None:
        if (run := self._runs.get(request_id)) is not None:
            run.cancel()

    def cancel_all(self) -> None:
        for run in self._runs.values():
            run.cancel()

    async def _run(self, request_id: str, message: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._local.request(
                str(message.get("method", "GET")),
                str(message.get("path", "/")),
                headers=message.get("headers") or {},
                content=base64.b64decode(message.get("body") or "", validate=True),
            )
        except Exception as exc:  # the broker must hear back, or it waits for its timeout
            log.exception("worker.tunnelled_request_failed", id=request_id)
            response = httpx.Response(
                502, json={"error": {"code": "worker_error", "message": str(exc)}}
            )
        return {
            "type": "response",
            "id": request_id,
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": base64.b64encode(response.content).decode(),
        }


async def _answer(socket: ClientConnection, run: asyncio.Task[dict[str, Any]]) -> None:
    # Shielded: a lost connection abandons the answer, not the run (a re-send picks it up).
    with contextlib.suppress(ConnectionClosed):
        await socket.send(json.dumps(await asyncio.shield(run)))


async def _serve(socket: ClientConnection, runs: _Runs, on_registered: Callable[[], None]) -> None:
    """Take messages until the socket closes. Requests may arrive before `registered` (the
    broker checks the worker's health while admitting it), so they are served at once."""
    answers: set[asyncio.Task[None]] = set()
    try:
        async for frame in socket:
            try:
                message = json.loads(frame)
            except ValueError:
                log.warning("worker.bad_frame")
                continue
            if message.get("type") == "registered":
                on_registered()
            elif message.get("type") == "error":
                raise JoinRefused(f"the broker refused this worker: {message.get('message')}")
            elif message.get("type") == "request":
                answer = asyncio.create_task(_answer(socket, runs.get(message)))
                answers.add(answer)
                answer.add_done_callback(answers.discard)
            elif message.get("type") == "cancel":
                runs.cancel(str(message.get("id")))
    finally:
        for answer in answers:
            answer.cancel()


async def stay_connected(broker: str, token: str, registration: Registration, app: ASGIApp) -> None:
    """Hold a connection to the broker until cancelled, reconnecting with backoff."""
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as local:
        runs = _Runs(local)
        backoff = 1.0
        try:
            while True:
                try:
                    async with connect(
                        socket_url(broker), additional_headers=headers, max_size=MAX_FRAME
                    ) as socket:
                        await socket.send(json.dumps({"type": "register", **registration.body()}))

                        def registered() -> None:
                            nonlocal backoff
                            backoff = 1.0
                            log.info("worker.connected", name=registration.name, broker=broker)

                        try:
                            await _serve(socket, runs, registered)
                        except asyncio.CancelledError:
                            with contextlib.suppress(ConnectionClosed, TimeoutError):
                                async with asyncio.timeout(5):
                                    await socket.send(json.dumps({"type": "deregister"}))
                            raise
                except InvalidStatus as exc:
                    if exc.response.status_code in (401, 403):
                        raise JoinRefused(
                            f"the broker refused this worker's token "
                            f"(HTTP {exc.response.status_code})"
                        ) from None
                    log.warning("worker.connect_failed", status=exc.response.status_code)
                except (OSError, ConnectionClosed, TimeoutError) as exc:
                    log.warning("worker.disconnected", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            runs.cancel_all()
