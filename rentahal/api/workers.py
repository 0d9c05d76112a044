"""Where workers join: REST registration with heartbeats, and the outbound worker socket.

Both authenticate with a worker token (an API key whose only scope is `worker`); the logic
is in `rentahal.membership`, the tunnel in `rentahal.routing.tunnel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from fastapi import APIRouter, status
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from rentahal.api.deps import BrokerDep, WorkerTokenDep
from rentahal.auth import Principal
from rentahal.broker import Broker
from rentahal.core.errors import ProtocolError
from rentahal.core.validation import StorableText
from rentahal.membership import WorkerLoad, WorkerRegistration, holds_worker_token
from rentahal.routing.tunnel import Tunnel

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])

REGISTER_WITHIN = 10.0  # seconds a new worker socket has to send its registration
POLICY_VIOLATION = 1008


class Registered(BaseModel):
    name: str
    address: str
    heartbeat_interval: float


def _registered(broker: Broker, name: str, address: str) -> Registered:
    return Registered(
        name=name, address=address, heartbeat_interval=broker.settings.worker_heartbeat_interval
    )


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(
    registration: WorkerRegistration, principal: WorkerTokenDep, broker: BrokerDep
) -> Registered:
    """Join the realm as a worker (worker token). Registering a name you already hold
    replaces that registration; another user's name is refused (409)."""
    worker = await broker.membership.register(principal, registration, outbound=False)
    return _registered(broker, worker.name, worker.address)


@router.post("/{name}/heartbeat")
async def heartbeat(
    name: StorableText, load: WorkerLoad, principal: WorkerTokenDep, broker: BrokerDep
) -> dict[str, bool]:
    """A joined worker is alive; 404 means: register again."""
    broker.membership.heartbeat(principal, name, load)
    return {"ok": True}


@router.delete("/{name}/registration", status_code=status.HTTP_204_NO_CONTENT)
async def deregister(name: StorableText, principal: WorkerTokenDep, broker: BrokerDep) -> None:
    """Leave the realm (a worker shutting down cleanly)."""
    await broker.membership.deregister(principal, name)


async def worker_socket(websocket: WebSocket) -> None:
    """`/ws/worker`: an outbound worker's connection; jobs reach it as tunnelled requests."""
    broker: Broker = websocket.app.state.broker
    try:
        principal = await broker.auth.authenticate(websocket.headers, {})
    except ProtocolError:  # banned
        principal = None
    if principal is None or not holds_worker_token(principal):
        await websocket.close(POLICY_VIOLATION, "a worker token is required")
        return
    await websocket.accept()
    try:
        async with asyncio.timeout(REGISTER_WITHIN):
            first = await websocket.receive_text()
        registration = WorkerRegistration.model_validate_json(first)
    except (TimeoutError, ValidationError, WebSocketDisconnect) as exc:
        with contextlib.suppress(Exception):
            await websocket.send_json({"type": "error", "message": f"bad registration: {exc}"})
            await websocket.close(POLICY_VIOLATION)
        return

    async def send(message: dict[str, Any]) -> None:
        await websocket.send_text(json.dumps(message))

    tunnel = Tunnel(registration.name, send)
    # The tunnel is up, and its answers read, before the worker is added: adding it probes
    # its health at once, through the tunnel.
    await broker.tunnels.attach(tunnel)
    pump = asyncio.create_task(_pump(websocket, tunnel, broker, principal, registration.name))
    try:
        try:
            worker = await broker.membership.register(principal, registration, outbound=True)
        except ProtocolError as exc:
            await websocket.send_json({"type": "error", "code": exc.code, "message": exc.message})
            await websocket.close(POLICY_VIOLATION)
            return
        registered = _registered(broker, worker.name, worker.address)
        await send({"type": "registered", **registered.model_dump()})
        await pump
    finally:
        pump.cancel()
        broker.tunnels.detach(tunnel)


async def _pump(
    websocket: WebSocket, tunnel: Tunnel, broker: Broker, principal: Principal, name: str
) -> None:
    """Answers go to the requests waiting for them; `deregister` removes the worker."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            try:
                message = json.loads(await websocket.receive_text())
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("type") == "response":
                tunnel.answer(message)
            elif message.get("type") == "deregister":
                with contextlib.suppress(ProtocolError):
                    await broker.membership.deregister(principal, name)
                log.info("worker.deregistered", worker=name)
                return
