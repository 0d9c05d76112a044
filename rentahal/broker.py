"""The broker: builds the store, bus, registry, router, scheduler and health monitor and runs
them."""

from __future__ import annotations

from dataclasses import asdict

import httpx
import structlog

from rentahal.admission import Admission
from rentahal.auth import Authenticator
from rentahal.auth.accounts import Accounts
from rentahal.auth.secret_key import load_or_create_secret_key
from rentahal.bus import events
from rentahal.bus.hub import Hub
from rentahal.bus.uploads import ChunkedUploads
from rentahal.bus.views import worker_view
from rentahal.cloud import CloudWorkers
from rentahal.config import Settings
from rentahal.intents.service import Intents
from rentahal.intents.spotting import vocabulary_of
from rentahal.local_workers import LocalWorkers
from rentahal.membership import Membership
from rentahal.metrics import Metrics
from rentahal.routing.circuit import CircuitBreaker
from rentahal.routing.monitor import HealthMonitor
from rentahal.routing.pools import PoolState
from rentahal.routing.realms import DEFAULT_REALMS, RealmTable
from rentahal.routing.registry import Registry, WorkerState
from rentahal.routing.router import Router
from rentahal.routing.tunnel import SCHEME as TUNNEL_SCHEME
from rentahal.routing.tunnel import Tunnels, TunnelTransport
from rentahal.scheduler.scheduler import Scheduler
from rentahal.store import Store, User
from rentahal.sysop import Sysop

log = structlog.get_logger(__name__)


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.resolved_database_url)
        self.hub = Hub()
        self.metrics = Metrics()
        self.registry = Registry(
            lambda: CircuitBreaker(settings.circuit_failures, settings.circuit_open_seconds)
        )
        self.router = Router(self.registry, RealmTable())
        self.tunnels = Tunnels()
        # One pooled client for all worker traffic; per-request timeouts come from the adapters.
        # Outbound workers (`tunnel://name`) are reached through their sockets.
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.query_timeout, connect=5.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            follow_redirects=False,
            mounts={
                f"{TUNNEL_SCHEME}://": TunnelTransport(
                    self.tunnels, settings.tunnel_reconnect_grace
                )
            },
        )
        self.secret_key = load_or_create_secret_key(settings)
        self.auth = Authenticator(self.store, self.secret_key, settings.token_expiration)
        self.accounts = Accounts(
            self.store,
            settings.max_nickname_chars,
            registrations_per_hour=settings.registrations_per_hour_per_ip,
        )
        self.scheduler = Scheduler(
            settings,
            self.store,
            self.router,
            self.hub,
            self.http,
            self.metrics,
            self._on_health_events,
        )
        self.monitor = HealthMonitor(
            settings, self.store, self.registry, self.http, self._on_health_events
        )
        self.sysop = Sysop(self)
        self.membership = Membership(self)
        self.uploads = ChunkedUploads()
        self.local_workers = LocalWorkers(self)
        self.cloud = CloudWorkers(self)
        self.admission = Admission(settings, self.store, self.scheduler)
        self.intents = Intents(self)
        self.scheduler.vocabulary = vocabulary_of(self.intents.registry)
        self.ready = False

    async def start(self) -> None:
        await self.store.open()
        await self.store.realms.ensure(DEFAULT_REALMS, self.settings.max_queue_size)
        await self.reload_routing()
        self.registry.sync(await self.store.workers.list())
        await self.scheduler.start()
        await self.cloud.start()
        self.monitor.start()
        await self.local_workers.start()
        self.ready = True
        log.info("broker.started", database=self.store.db.engine.url.render_as_string())

    async def stop(self) -> None:
        self.ready = False
        await self.monitor.stop()
        await self.scheduler.stop()
        await self.local_workers.stop()  # after the monitor, which would mark them down
        for connection in self.hub.connections():
            connection.close(1001, "broker shutting down")
        await self.http.aclose()
        await self.intents.close()
        await self.store.close()
        log.info("broker.stopped")

    def sysop_for(self, actor: User) -> Sysop:
        """Sysop actions performed by `actor` (recorded under their name in the audit log)."""
        return Sysop(self, actor)

    async def reload_routing(self) -> None:
        """Re-read realms and pools from the store after a sysop changed them."""
        self.router.realms.load(await self.store.realms.list())
        self.router.pools = {p.name: PoolState.from_row(p) for p in await self.store.pools.list()}
        self.scheduler.resize_queues()

    # --- views and fan-out -----------------------------------------------------------------

    def worker_views(self) -> list[events.WorkerView]:
        return [worker_view(w, self.router.home_realm(w)) for w in self.registry]

    def workers_event(self, *, for_sysop: bool) -> events.WorkerUpdate:
        """Users see every worker but not its address; sysops see everything."""
        views = self.worker_views()
        if not for_sysop:
            views = [v.model_copy(update={"address": ""}) for v in views]
        return events.WorkerUpdate(workers=views)

    def pools_event(self) -> events.PoolUpdate:
        return events.PoolUpdate(
            pools=[
                events.PoolView(
                    name=p.name, type=p.query_type, members=list(p.members), strategy=p.strategy
                )
                for p in sorted(self.router.pools.values(), key=lambda p: p.name)
            ],
            realms=[r.name for r in self.router.realms],
            realm_types={
                r.name: sorted({*r.primary_for, *r.backup_for}) for r in self.router.realms
            },
        )

    def realm_views(self) -> list[events.RealmView]:
        depths = self.scheduler.depths()
        views = []
        for realm in self.router.realms:
            members = [w.name for w in self.registry if self.router.home_realm(w) == realm.name]
            views.append(
                events.RealmView(
                    **asdict(realm),
                    workers=members,
                    queue_depth=depths.get(realm.name, 0),
                    workers_short=max(0, realm.min_workers - len(members)),
                )
            )
        return views

    def announce_workers(self, sysop_note: str | None = None) -> None:
        self.hub.broadcast_by_role(
            sysops=self.workers_event(for_sysop=True), others=self.workers_event(for_sysop=False)
        )
        self.hub.broadcast(self.sysop.worker_health(), sysops_only=True)
        if sysop_note:
            self.hub.broadcast(events.SysopBroadcast(message=sysop_note), sysops_only=True)

    def refresh_worker_metrics(self) -> None:
        for worker in self.registry:
            self.metrics.worker_health.labels(worker.name).set(worker.health_score)
            self.metrics.worker_in_flight.labels(worker.name).set(worker.in_flight)

    async def _on_health_events(self, changes: list[tuple[WorkerState, str]]) -> None:
        """After a health check, or a real job that changed a worker's standing."""
        self.refresh_worker_metrics()
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
