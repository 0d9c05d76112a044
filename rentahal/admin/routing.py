"""Pools and realms: the named targets (`$NAME`) a query may be routed to, kept in the
store; the broker reloads the router from it after every change (`changed`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog

from rentahal.admin.audit import AuditTrail
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.specs import PoolSpec, RealmPatch, RealmSpec
from rentahal.routing.registry import Registry
from rentahal.routing.router import Router
from rentahal.store import AlreadyExists, User
from rentahal.store.models import Pool, Realm
from rentahal.store.realms import PoolRepository, RealmRepository

log = structlog.get_logger(__name__)


class RoutingAdmin:
    """`changed(note)` reloads the live routing from the store and tells the sockets (the
    note goes to sysops); the router and registry are read to refuse a change before it
    is stored."""

    def __init__(
        self,
        pools: PoolRepository,
        realms: RealmRepository,
        router: Router,
        registry: Registry,
        audit: AuditTrail,
        changed: Callable[[str], Awaitable[None]],
    ) -> None:
        self._pools = pools
        self._realms = realms
        self._router = router
        self._registry = registry
        self._audit = audit
        self._changed = changed

    # --- pools -----------------------------------------------------------------------------

    async def save_pool(self, actor: User | None, spec: PoolSpec, *, create: bool) -> None:
        """Create (`create`) or replace a pool."""
        if self._router.realms.get(spec.name) is not None:
            raise ProtocolError(ErrorCode.CONFLICT, f"{spec.name} is a realm's name")
        unknown = [m for m in spec.members if self._registry.get(m) is None]
        if unknown:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such workers: {', '.join(unknown)}")
        values = {"query_type": spec.type, "members": list(spec.members), "strategy": spec.strategy}
        if create:
            try:
                await self._pools.add(Pool(name=spec.name, **values))
            except AlreadyExists:
                raise ProtocolError(ErrorCode.CONFLICT, f"pool {spec.name} exists") from None
        elif not await self._pools.update(spec.name, values):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no pool named {spec.name}")
        await self._audit.record(
            actor, "add_pool" if create else "update_pool", spec.name, **values
        )
        await self._routing_changed(f"{'Created' if create else 'Updated'} pool {spec.name}")

    async def remove_pool(self, actor: User | None, name: str) -> None:
        if not await self._pools.remove(name):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no pool named {name}")
        await self._audit.record(actor, "remove_pool", name)
        await self._routing_changed(f"Removed pool {name}")

    # --- realms ----------------------------------------------------------------------------

    async def add_realm(self, actor: User | None, spec: RealmSpec) -> None:
        if spec.name in self._router.pools:
            raise ProtocolError(ErrorCode.CONFLICT, f"{spec.name} is a pool's name")
        realm = Realm(**spec.model_dump(exclude={"primary_for"}), primary_for=[])
        try:
            await self._realms.add(realm)
        except AlreadyExists:
            raise ProtocolError(ErrorCode.CONFLICT, f"realm {spec.name} exists") from None
        if spec.primary_for:
            await self._take_primary(spec.name, spec.primary_for)
        await self._audit.record(actor, "add_realm", spec.name, **spec.model_dump(exclude={"name"}))
        await self._routing_changed(f"Created realm {spec.name}")

    async def update_realm(self, actor: User | None, name: str, patch: RealmPatch) -> None:
        values = patch.model_dump(exclude_none=True, exclude={"primary_for"})
        current = self._router.realms.get(name)
        if current is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no realm named {name}")
        if patch.primary_for is not None:
            dropped = set(current.primary_for) - set(patch.primary_for)
            if dropped:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"{name} is the primary realm of {', '.join(sorted(dropped))}: make another "
                    "realm their primary instead",
                )
            await self._take_primary(name, patch.primary_for)
        if values:
            await self._realms.update(name, values)
        await self._audit.record(actor, "update_realm", name, **patch.model_dump(exclude_none=True))
        await self._routing_changed(f"Updated realm {name}")

    async def _take_primary(self, name: str, query_types: Sequence[str]) -> None:
        """Make `name` the primary realm of `query_types`, taking them from their old one."""
        for realm in self._router.realms:
            if realm.name != name and (moved := set(realm.primary_for) & set(query_types)):
                remaining = [t for t in realm.primary_for if t not in moved]
                await self._realms.update(realm.name, {"primary_for": remaining})
        await self._realms.update(name, {"primary_for": sorted(set(query_types))})

    async def remove_realm(self, actor: User | None, name: str) -> None:
        realm = self._router.realms.get(name)
        if realm is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no realm named {name}")
        if realm.primary_for:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"{name} is the primary realm of {', '.join(realm.primary_for)} and cannot go",
            )
        await self._realms.remove(name)
        await self._audit.record(actor, "remove_realm", name)
        await self._routing_changed(f"Removed realm {name}")

    async def _routing_changed(self, note: str) -> None:
        log.info("sysop.routing_changed", change=note)
        await self._changed(note)
