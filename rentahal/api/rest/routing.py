"""Pools and realms, the `$NAME` targets a query may name: anyone may list the pools, a
sysop shapes them and the realms."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from rentahal.api.deps import BrokerDep, PrincipalDep, SysopDep
from rentahal.bus import events
from rentahal.core.specs import PoolSpec, RealmPatch, RealmSpec
from rentahal.core.validation import StorableText

router = APIRouter()


@router.get("/pools", tags=["routing"])
async def list_pools(_: PrincipalDep, broker: BrokerDep) -> events.PoolUpdate:
    """Pools and realms: the `$NAME` targets a query may name."""
    return broker.pools_event()


@router.post("/pools", status_code=status.HTTP_201_CREATED, tags=["routing"])
async def add_pool(spec: PoolSpec, principal: SysopDep, broker: BrokerDep) -> events.PoolUpdate:
    await broker.routing_admin.save_pool(principal.user, spec, create=True)
    return broker.pools_event()


@router.put("/pools/{name}", tags=["routing"])
async def replace_pool(
    name: StorableText, spec: PoolSpec, principal: SysopDep, broker: BrokerDep
) -> events.PoolUpdate:
    if spec.name != name:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {"code": "invalid", "message": "the body's name differs from the URL's"},
        )
    await broker.routing_admin.save_pool(principal.user, spec, create=False)
    return broker.pools_event()


@router.delete("/pools/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["routing"])
async def remove_pool(name: StorableText, principal: SysopDep, broker: BrokerDep) -> None:
    await broker.routing_admin.remove_pool(principal.user, name)


@router.get("/realms", tags=["routing"])
async def list_realms(_: SysopDep, broker: BrokerDep) -> list[events.RealmView]:
    return broker.realm_views()


@router.post("/realms", status_code=status.HTTP_201_CREATED, tags=["routing"])
async def add_realm(
    spec: RealmSpec, principal: SysopDep, broker: BrokerDep
) -> list[events.RealmView]:
    await broker.routing_admin.add_realm(principal.user, spec)
    return broker.realm_views()


@router.patch("/realms/{name}", tags=["routing"])
async def update_realm(
    name: StorableText, patch: RealmPatch, principal: SysopDep, broker: BrokerDep
) -> list[events.RealmView]:
    await broker.routing_admin.update_realm(principal.user, name, patch)
    return broker.realm_views()


@router.delete("/realms/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["routing"])
async def remove_realm(name: StorableText, principal: SysopDep, broker: BrokerDep) -> None:
    await broker.routing_admin.remove_realm(principal.user, name)
