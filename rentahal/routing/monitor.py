"""The health monitor: probes every worker each `health_check_interval` and applies the rules.

Each tick first re-reads the worker list from the store, so workers added or removed by the
CLI (another process) join or leave within one interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import structlog

from rentahal.backends import BACKENDS
from rentahal.config import Settings
from rentahal.core.periodic import Periodic
from rentahal.routing.health import Probe
from rentahal.routing.registry import Registry, WorkerState
from rentahal.store import Store, is_outage, utcnow
from rentahal.store.workers import WorkerHealth

log = structlog.get_logger(__name__)

IMAGINE_TIMEOUT = 10.0  # image workers are slow to answer while they draw
DEFAULT_TIMEOUT = 5.0

HealthListener = Callable[[list[tuple[WorkerState, str]]], Awaitable[None]]


class HealthMonitor(Periodic):
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        http: httpx.AsyncClient,
        on_checked: HealthListener,
    ) -> None:
        super().__init__("health-monitor", settings.health_check_interval)
        self._settings = settings
        self._store = store
        self._registry = registry
        self._http = http
        self._on_checked = on_checked
        # Which workers this broker checks: in a cluster, not an outbound worker connected
        # to another broker (this one cannot reach it; its own broker checks it).
        self.checks: Callable[[WorkerState], bool] = lambda worker: True
        self._probing: set[str] = set()  # the workers a probe is out to now

    async def tick(self) -> None:
        await self.check_all()

    def failed(self, exc: Exception) -> None:
        if is_outage(exc):
            self._store.health.failed(exc)  # said once, not every tick
        else:
            log.error("health.tick_failed", exc_info=exc)

    async def check_all(self) -> None:
        """One tick: sync with the store, probe everyone at once, persist, notify."""
        async with self._registry.membership:
            # Shielded, as is the write below: a shutdown cancelling the tick must not cut a
            # database call short (its connection's reset would fail and be logged).
            self._registry.sync(await asyncio.shield(self._store.workers.list()))
        workers = [worker for worker in self._registry if self.checks(worker)]
        if not workers:
            return
        await self.check(workers)

    async def check(self, workers: list[WorkerState]) -> None:
        """Probe `workers` at once, apply the rules, persist, and tell the listener. A worker
        being probed already (a tick, and the check of a worker just added) is left to that
        probe: two at once would count one failure twice."""
        workers = [worker for worker in workers if worker.name not in self._probing]
        if not workers:
            return
        names = {worker.name for worker in workers}
        self._probing |= names
        try:
            events = await asyncio.gather(*(self._probe(worker) for worker in workers))
        finally:
            self._probing -= names
        health = [
            WorkerHealth(w.name, w.health_score, w.blacklisted, w.last_active, w.models)
            for w in workers
        ]
        await asyncio.shield(self._store.workers.save_health(health))
        await self._on_checked([(w, e) for w, e in zip(workers, events, strict=True) if e])

    async def _probe(self, worker: WorkerState) -> str | None:
        backend = BACKENDS.get(worker.kind)
        timeout = IMAGINE_TIMEOUT if "imagine" in worker.capabilities else DEFAULT_TIMEOUT
        probe = Probe.ERROR
        if backend is not None:
            try:
                report = await backend.probe(self._http, worker.endpoint, timeout)
                probe = Probe.OK if report.status == 200 else Probe.BAD_STATUS
                if report.models is not None:
                    worker.models = report.models
                if report.slots is not None:
                    worker.max_concurrency = report.slots  # the worker knows its capacity
            except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
                log.info("health.unreachable", worker=worker.name, error=str(exc) or type(exc))
        event = worker.apply_health(probe, no_blacklist_imagine=self._settings.no_blacklist_imagine)
        if probe is Probe.OK:
            worker.last_active = utcnow()
            worker.circuit.on_healthy()
        if event:
            log.warning("health.changed", worker=worker.name, change=event)
        return event
