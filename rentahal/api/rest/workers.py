"""The sysop's worker admin: list, add and remove the workers the broker dispatches to.

(Workers joining by themselves, with a worker token, is `rentahal.api.workers`.)"""

from __future__ import annotations

from fastapi import APIRouter, status

from rentahal.admin.catalog import worker_view
from rentahal.api.deps import BrokerDep, SysopDep
from rentahal.bus import events
from rentahal.core.specs import WorkerSpec
from rentahal.core.validation import StorableText

router = APIRouter()


@router.get("/workers", tags=["workers"])
async def list_workers(_: SysopDep, broker: BrokerDep) -> list[events.WorkerView]:
    return broker.worker_views()


@router.post("/workers", status_code=status.HTTP_201_CREATED, tags=["workers"])
async def add_worker(spec: WorkerSpec, principal: SysopDep, broker: BrokerDep) -> events.WorkerView:
    worker = await broker.catalog.add_worker(principal.user, spec, owner_id=principal.user.id)
    return worker_view(worker, broker.router.home_realm(worker))


@router.delete("/workers/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["workers"])
async def remove_worker(name: StorableText, principal: SysopDep, broker: BrokerDep) -> None:
    await broker.catalog.remove_worker(principal.user, name)
