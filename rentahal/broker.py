"""The broker: builds the store, bus, registry, scheduler and health monitor and runs them."""

from __future__ import annotations

import httpx
import structlog

from rentahal.auth import Authenticator
from rentahal.auth.secret_key import load_or_create_secret_key
from rentahal.bus import events
from rentahal.bus.hub import Hub
from rentahal.bus.views import worker_view
from rentahal.config import Settings
from rentahal.routing.monitor import HealthMonitor
from rentahal.routing.registry import Registry, WorkerState
from rentahal.scheduler import Scheduler
from rentahal.store import Store
from rentahal.sysop import Sysop

log = structlog.get_logger(__name__)


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.resolved_database_url)
        self.hub = Hub()
        self.registry = Registry()
        # One pooled client for all worker traffic; per-request timeouts come from the adapters.
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.query_timeout, connect=5.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            follow_redirects=False,
        )
        self.auth = Authenticator(
            self.store, load_or_create_secret_key(settings), settings.token_expiration
        )
        self.scheduler = Scheduler(settings, self.store, self.registry, self.hub, self.http)
        self.monitor = HealthMonitor(
            settings, self.store, self.registry, self.http, self._on_health_checked
        )
        self.sysop = Sysop(self)
        self.ready = False

    async def start(self) -> None:
        await self.store.open()
        self.registry.sync(await self.store.workers.list())
        await self.scheduler.start()
        self.monitor.start()
        self.ready = True
        log.info("broker.started", database=self.store.db.engine.url.render_as_string())

    async def stop(self) -> None:
        self.ready = False
        await self.monitor.stop()
        await self.scheduler.stop()
        for connection in self.hub.connections():
            connection.close(1001, "broker shutting down")
        await self.http.aclose()
        await self.store.close()
        log.info("broker.stopped")

    # --- fan-out helpers -------------------------------------------------------------------

    def workers_event(self, *, for_sysop: bool) -> events.WorkerUpdate:
        """Users see every worker but not its address; sysops see everything."""
        views = [worker_view(w) for w in self.registry]
        if not for_sysop:
            views = [v.model_copy(update={"address": ""}) for v in views]
        return events.WorkerUpdate(workers=views)

    def announce_workers(self, sysop_note: str | None = None) -> None:
        self.hub.broadcast_by_role(
            sysops=self.workers_event(for_sysop=True), others=self.workers_event(for_sysop=False)
        )
        self.hub.broadcast(self.sysop.worker_health(), sysops_only=True)
        if sysop_note:
            self.hub.broadcast(events.SysopBroadcast(message=sysop_note), sysops_only=True)

    async def _on_health_checked(self, changes: list[tuple[WorkerState, str]]) -> None:
        self.hub.broadcast(self.sysop.worker_health(), sysops_only=True)
        for worker, event in changes:
            note = (
                f"Worker {worker.name} blacklisted due to health score 0"
                if event == "blacklisted"
                else f"Worker {worker.name} readmitted, health restored: {worker.health_score:g}"
            )
            self.hub.broadcast(events.SysopBroadcast(message=note), sysops_only=True)
        if changes:
            self.announce_workers()
        self.scheduler.pump()
