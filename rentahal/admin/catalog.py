"""The worker catalog: the workers the broker routes to, added and removed in the store and
the live registry together, by a sysop, a joining worker, or the broker itself (cloud models,
local workers)."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from rentahal.admin.audit import AuditTrail
from rentahal.backends import BACKENDS
from rentahal.bus.events import WorkerView
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.specs import WorkerSpec
from rentahal.core.vocabulary import WorkerKind
from rentahal.routing.monitor import HealthMonitor
from rentahal.routing.registry import Registry, WorkerState
from rentahal.routing.router import Router
from rentahal.store import AlreadyExists, User, Worker
from rentahal.store.workers import WorkerRepository

log = structlog.get_logger(__name__)


def validate_worker_spec(spec: WorkerSpec) -> None:
    """Refuse a worker asked to serve a query type its protocol cannot."""
    if spec.kind == WorkerKind.FEDERATION:
        raise ProtocolError(
            ErrorCode.INVALID,
            "another installation is added as a peer (/api/v1/federation/peers), not a worker",
        )
    backend = BACKENDS[spec.kind]
    if spec.type not in backend.query_types:
        supported = ", ".join(sorted(backend.query_types))
        raise ProtocolError(
            ErrorCode.UNSUPPORTED,
            f"{spec.kind} workers can serve {supported} queries here, not {spec.type}",
        )


def worker_row(spec: WorkerSpec, *, owner_id: str | None = None) -> Worker:
    """The store row for a worker the sysop described (bus, REST or CLI)."""
    validate_worker_spec(spec)
    return Worker(
        name=spec.name,
        address=spec.address,
        kind=spec.kind,
        capabilities=[spec.type],
        models=list(spec.models),
        max_concurrency=spec.max_concurrency,
        api_key_env=spec.api_key_env,
        realm=spec.realm or "",
        specializations={k: list(v) for k, v in spec.specializations.items()},
        owner_id=owner_id,
    )


class WorkerCatalog:
    """`announce(note)` tells the sockets the workers changed (with a note for sysops);
    `pump()` lets the scheduler dispatch to a worker just added."""

    def __init__(
        self,
        workers: WorkerRepository,
        registry: Registry,
        router: Router,
        monitor: HealthMonitor,
        audit: AuditTrail,
        announce: Callable[[str], None],
        pump: Callable[[], None],
    ) -> None:
        self._workers = workers
        self._registry = registry
        self._router = router
        self._monitor = monitor
        self._audit = audit
        self._announce = announce
        self._pump = pump

    async def add_worker(
        self,
        actor: User | None,
        spec: WorkerSpec,
        *,
        owner_id: str | None = None,
        key: str | None = None,
    ) -> WorkerState:
        """Add a worker; `key` marks one that joined by itself (see `rentahal.membership`)."""
        row = worker_row(spec, owner_id=owner_id)
        if key is not None:
            row.tags = {"joined": True}
        realms = self._router.realms
        if spec.realm and realms.get(spec.realm) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no realm named {spec.realm!r}")
        async with self._registry.membership:
            home = realms.get(realms.home_of(row.realm, spec.type))
            members = sum(
                1 for w in self._registry if self._router.home_realm(w) == (home and home.name)
            )
            if home is not None and members >= home.max_workers:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"realm {home.name} is full ({home.max_workers} workers at most)",
                )
            try:
                await self._workers.add(row)
            except AlreadyExists:
                raise ProtocolError(
                    ErrorCode.CONFLICT, f"a worker named {spec.name!r} already exists"
                ) from None
            worker = WorkerState.from_row(row)
            worker.key = key
            self._registry.add(worker)
        log.info("sysop.worker_added", worker=spec.name, kind=spec.kind)
        await self._audit.record(
            actor, "add_worker", spec.name, kind=spec.kind, address=spec.address
        )
        # Probe at once: the sysop learns whether it answers, and the models it lists.
        await self._monitor.check([worker])
        self._announce(f"Added worker: {spec.name}")
        self._pump()
        return worker

    async def remove_worker(self, actor: User | None, name: str) -> None:
        async with self._registry.membership:
            if not await self._workers.remove(name):
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no worker named {name!r}")
            self._registry.remove(name)
        log.info("sysop.worker_removed", worker=name)
        await self._audit.record(actor, "remove_worker", name)
        self._announce(f"Removed worker: {name}")


def worker_view(worker: WorkerState, realm: str) -> WorkerView:
    """A worker as the bus and REST show it (the caller hides the address from non-sysops)."""
    return WorkerView(
        name=worker.name,
        realm=realm,
        address=worker.address,
        kind=worker.kind,
        type=worker.primary_type,
        capabilities=sorted(worker.capabilities),
        models=list(worker.models),
        max_concurrency=worker.max_concurrency,
        in_flight=worker.in_flight,
        health_score=worker.health_score,
        is_blacklisted=worker.blacklisted,
        circuit=worker.circuit.state.value,
        last_active=worker.last_active,
    )
