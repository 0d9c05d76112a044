"""Joining a realm over REST: register with a worker token, heartbeat, deregister on exit.

The broker answers a heartbeat from a worker it does not know (it restarted, or a sysop
removed the worker) with 404; the worker then registers again, so a broker restart needs
nothing from the worker's operator.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import structlog

from rentahal.worker.service import Served

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 10.0
MAX_BACKOFF = 30.0


class JoinRefused(Exception):
    """The broker refused the worker (bad or revoked token, a name owned by someone else)."""


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    role: str  # the query type it serves
    models: list[str]
    slots: int
    key: str  # the broker presents it on every request to this worker
    address: str = ""  # unused in outbound mode
    kind: str = "rentahal"  # the protocol the broker speaks to it (a proxy: its upstream's)

    def body(self) -> dict[str, Any]:
        return asdict(self)


def refused(response: httpx.Response) -> JoinRefused:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    message = detail.get("message", detail) if isinstance(detail, dict) else detail
    return JoinRefused(f"the broker refused this worker (HTTP {response.status_code}): {message}")


async def _register(client: httpx.AsyncClient, registration: Registration) -> float:
    """Register, retrying while the broker is unreachable; returns the heartbeat interval."""
    backoff = 1.0
    while True:
        try:
            response = await client.post("/api/v1/workers/register", json=registration.body())
        except httpx.TransportError as exc:
            log.warning("worker.broker_unreachable", error=str(exc), retry_in=backoff)
        else:
            if response.status_code in (200, 201):
                log.info("worker.registered", name=registration.name)
                interval = response.json().get("heartbeat_interval", HEARTBEAT_SECONDS)
                return float(interval)
            if response.status_code < 500:
                raise refused(response)
            log.warning("worker.register_failed", status=response.status_code, retry_in=backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)


async def stay_registered(
    broker: str, token: str, registration: Registration, service: Served
) -> None:
    """Register, then heartbeat until cancelled; deregisters when cancelled."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=broker, headers=headers, timeout=10.0) as client:
        interval = await _register(client, registration)
        try:
            while True:
                await asyncio.sleep(interval)
                load = {"in_flight": service.in_flight, "slots": service.slots}
                try:
                    response = await client.post(
                        f"/api/v1/workers/{registration.name}/heartbeat", json=load
                    )
                except httpx.TransportError as exc:
                    log.warning("worker.heartbeat_failed", error=str(exc))
                    continue
                if response.status_code == 404:
                    interval = await _register(client, registration)
                elif response.status_code in (401, 403):
                    raise refused(response)
        finally:
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                async with asyncio.timeout(5):
                    await client.delete(f"/api/v1/workers/{registration.name}/registration")
                log.info("worker.deregistered", name=registration.name)
