"""The broker: builds the store, bus, registry, router, scheduler and health monitor and runs
them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import httpx
import structlog

from rentahal import request_ids
from rentahal.admin.audit import AuditTrail
from rentahal.admin.broadcast import Broadcaster
from rentahal.admin.catalog import WorkerCatalog, worker_view
from rentahal.admin.dashboard import Dashboard
from rentahal.admin.models import HuggingFaceModels
from rentahal.admin.queue import QueueAdmin
from rentahal.admin.routing import RoutingAdmin
from rentahal.admin.users import UserAdmin
from rentahal.admission import DAY, Admission
from rentahal.auth import Authenticator
from rentahal.auth.accounts import Accounts
from rentahal.auth.guests import GuestSweep
from rentahal.auth.secret_key import load_or_create_secret_key
from rentahal.backends.transport import CONNECT_TIMEOUT, WorkerClient
from rentahal.bus import events
from rentahal.bus.heartbeat import Heartbeat
from rentahal.bus.hub import Hub
from rentahal.bus.notifier import BusNotifier
from rentahal.bus.uploads import ChunkedUploads
from rentahal.cloud import CloudWorkers
from rentahal.cluster.cancelling import ClusterCancelling
from rentahal.cluster.hub import ClusterHub
from rentahal.cluster.node import ClusterNode
from rentahal.cluster.queue import RedisQueue
from rentahal.cluster.rate_limits import RedisBuckets
from rentahal.cluster.reclaim import Reclaim
from rentahal.cluster.slots import RedisSlots, RedisUserSlots
from rentahal.config import Settings
from rentahal.core.spotting import vocabulary_of
from rentahal.federation.peers import PeerDirectory, federation_id_of
from rentahal.intents.service import Intents
from rentahal.limits import SubmissionWindows
from rentahal.local_workers import LocalWorkers
from rentahal.membership import Membership
from rentahal.metrics import Metrics
from rentahal.queries import Queries
from rentahal.routing.circuit import CircuitBreaker
from rentahal.routing.monitor import HealthMonitor
from rentahal.routing.pools import PoolState
from rentahal.routing.realms import DEFAULT_REALMS, RealmTable
from rentahal.routing.registry import Registry, WorkerState
from rentahal.routing.router import Router
from rentahal.routing.tunnel import SCHEME as TUNNEL_SCHEME
from rentahal.routing.tunnel import Tunnels, TunnelTransport
from rentahal.scheduler.queues import RealmQueues
from rentahal.scheduler.scheduler import Scheduler
from rentahal.scheduler.slots import RegistrySlots
from rentahal.store import Store

log = structlog.get_logger(__name__)


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.secret_key = load_or_create_secret_key(settings)
        # This installation's name among federated ones, the same on each of its brokers.
        federation_id = federation_id_of(self.secret_key, settings.federation_id)
        settings = settings.model_copy(update={"federation_id": federation_id})
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.resolved_database_url)
        # One of a cluster's brokers (docs/cluster.md), or the whole installation.
        self.node = (
            ClusterNode(settings.redis_url, settings.cluster_name, settings.cluster_lease)
            if settings.redis_url
            else None
        )
        self.cluster_hub = ClusterHub(self.node, self.store.users) if self.node else None
        self.hub = self.cluster_hub or Hub()
        self.heartbeat = Heartbeat(self.hub, settings.ping_interval)
        self.metrics = Metrics()
        self.registry = Registry(
            lambda: CircuitBreaker(settings.circuit_failures, settings.circuit_open_seconds)
        )
        self.router = Router(self.registry, RealmTable())
        self.tunnels = Tunnels()
        # One pooled client for all worker traffic (`backends.transport`); per-request timeouts
        # come from the adapters. Outbound workers (`tunnel://name`) are reached through their
        # sockets.
        self.http = WorkerClient(
            timeout=httpx.Timeout(settings.query_timeout, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
            event_hooks={"request": [request_ids.send_to_workers]},
            mounts={
                f"{TUNNEL_SCHEME}://": TunnelTransport(
                    self.tunnels, settings.tunnel_reconnect_grace
                )
            },
        )
        self.auth = Authenticator(self.store, self.secret_key, settings.token_expiration)
        self.guest_sweep = GuestSweep(self.store, settings.guest_expiry_days)
        self.accounts = Accounts(
            self.store,
            settings.max_nickname_chars,
            registrations_per_hour=settings.registrations_per_hour_per_ip,
            registrations=RedisBuckets(self.node, "registrations") if self.node else None,
        )
        self.shared_slots = (
            RedisSlots(self.node, lambda: self.registry, lambda: self.scheduler.pump())
            if self.node
            else None
        )
        self.scheduler = Scheduler(
            settings,
            self.store,
            self.router,
            self.http,
            self.metrics,
            self._on_health_events,
            notifier=BusNotifier(self.hub, lambda: self.scheduler.vocabulary),
            queue=(
                RealmQueues(self.router.realms, settings.max_queue_size)
                if self.node is None
                else RedisQueue(
                    self.node,
                    self.router.realms,
                    settings.max_queue_size,
                    load=lambda query_id: self.store.queries.get(query_id, with_media=True),
                    pump=lambda: self.scheduler.pump(),
                )
            ),
            slots=self.shared_slots or RegistrySlots(),
            user_slots=(
                RedisUserSlots(self.shared_slots, self.node, settings.max_running_per_user)
                if self.shared_slots and self.node
                else None
            ),
            broker_id=self.node.id if self.node else None,
        )
        self.monitor = HealthMonitor(
            settings, self.store, self.registry, self.http, self._on_health_events
        )
        # What a sysop can do (`rentahal.admin`), each handed only what it uses.
        self.audit = AuditTrail(self.store.audit)
        self.catalog = WorkerCatalog(
            self.store.workers,
            self.registry,
            self.router,
            self.monitor,
            self.audit,
            self._workers_changed,
            self.scheduler.pump,
        )
        self.routing_admin = RoutingAdmin(
            self.store.pools,
            self.store.realms,
            self.router,
            self.registry,
            self.audit,
            self._routing_changed,
        )
        # Cancelling a ban's or a sysop's queries, or an owner's, wherever they run.
        self.cancelling = (
            ClusterCancelling(self.node, self.scheduler, self.store.queries)
            if self.node
            else self.scheduler
        )
        self.user_admin = UserAdmin(self.store.users, self.hub, self.cancelling, self.audit)
        self.queue_admin = QueueAdmin(self.hub, self.scheduler, self.audit)
        self.broadcaster = Broadcaster(self.hub, self.audit)
        self.dashboard = Dashboard(self.store, self.hub, self.worker_views)
        self.membership = Membership(self.registry, self.catalog)
        self.uploads = ChunkedUploads()
        self.local_workers = LocalWorkers(settings, self.registry, self.catalog)
        self.cloud = CloudWorkers(settings, self.store.models, self.registry, self.catalog)
        self.huggingface = HuggingFaceModels(self.store.models, self.cloud, self.hub, self.audit)
        self.admission = Admission(
            settings,
            self.store,
            self.scheduler,
            limiter=RedisBuckets(self.node, "queries") if self.node else None,
            shared_state=self.node.require if self.node else None,
            submissions=None if self.node else SubmissionWindows(DAY.total_seconds()),
        )
        self.queries = Queries(
            self.admission,
            self.scheduler,
            self.store,
            self.hub,
            cancelling=self.cancelling,
            shared=self.node is not None,
        )
        self.intents = Intents(
            settings,
            self.queries,
            could_serve=self.router.could_serve,
            store=self.store,
            secret_key=self.secret_key,
        )
        self.scheduler.vocabulary = vocabulary_of(self.intents.registry)
        self.reclaim = (
            Reclaim(self.node, self.store.queries, self.scheduler.resume) if self.node else None
        )
        self.peers = PeerDirectory(
            self.store.peers,
            self.store.users,
            self.http,
            self.secret_key,
            own_id=federation_id,
            max_hops=settings.federation_max_hops,
            interval=settings.federation_refresh_interval,
        )
        self.router.peers = self.peers.routable
        if self.node is not None:
            self._join_cluster(self.node)
        self.ready = False

    def _join_cluster(self, node: ClusterNode) -> None:
        """What the other brokers tell this one: a cached credential that changed, workers
        or routing that a sysop changed. After a gap in the channel, all of it is read
        afresh."""
        cache = self.store.credential_cache
        cache.announce = lambda kind, id_: node.publish("forget", what=kind, id=id_)
        node.on(
            "forget",
            lambda m: (
                cache.forget_user(m["id"], announce=False)
                if m["what"] == "user"
                else cache.forget_key(m["id"], announce=False)
            ),
        )
        node.on("workers_changed", lambda _: self.sync_workers())

        # An outbound worker is reached through the broker its socket is open to: this one
        # neither checks it nor sends it jobs, but accepts queries for it (its broker runs
        # them from the shared line).
        def held_elsewhere(worker: WorkerState) -> bool:
            return worker.outbound and self.tunnels.get(worker.name) is None

        self.monitor.checks = lambda w: not held_elsewhere(w)
        self.router.served_elsewhere = lambda w: held_elsewhere(w) and w.healthy
        # A worker's standing as another broker found it: failures there opened its
        # circuit, or its health checks there blacklisted or readmitted it.
        self.registry.circuit_opened = lambda name: node.publish("circuit_open", worker=name)
        node.on("circuit_open", self._circuit_opened_elsewhere)
        node.on("worker_standing", self._standing_elsewhere)
        node.on("peers_changed", lambda _: self.peers.refresh())
        node.on("routing_changed", lambda _: self.reload_routing())

        async def resync() -> None:
            cache.clear()
            await self.sync_workers()
            await self.reload_routing()
            await self.scheduler.queue_held()  # in case Redis came back without its data

        node.on_resubscribed(resync)

    async def start(self) -> None:
        await self.store.open()
        await self.store.realms.ensure(DEFAULT_REALMS, self.settings.max_queue_size)
        await self.reload_routing()
        self.registry.sync(await self.store.workers.list())
        if self.node is not None:
            await self.node.start()
        if self.cluster_hub is not None:
            self.cluster_hub.on_presence = self.dashboard.users_changed
            self.cluster_hub.ask_presence()
        if self.shared_slots is not None:
            self.shared_slots.start()
        await self.scheduler.start(resume=self.reclaim is None)
        if self.reclaim is not None:
            self.reclaim.start()
        await self.cloud.start()
        self.monitor.start()
        if self.settings.federation_peers is not None:
            await self.peers.bootstrap(self.settings.federation_peers.get_secret_value())
        self.peers.start()
        self.guest_sweep.start()
        self.heartbeat.start()
        await self.local_workers.start()
        self.ready = True
        log.info("broker.started", database=self.store.db.engine.url.render_as_string())

    async def stop(self) -> None:
        self.ready = False
        await self.monitor.stop()
        await self.peers.stop()
        await self.guest_sweep.stop()
        await self.heartbeat.stop()
        if self.reclaim is not None:
            await self.reclaim.stop()
        await self.scheduler.stop()
        await self.local_workers.stop()  # after the monitor, which would mark them down
        for connection in self.hub.connections():
            connection.close(1001, "broker shutting down")
        await self.http.aclose()
        await self.intents.close()
        if self.shared_slots is not None:
            await self.shared_slots.stop()
        if self.node is not None:
            await self.node.stop()  # its lease given up: the others take over its jobs now
        await self.store.close()
        log.info("broker.stopped")

    async def reload_routing(self) -> None:
        """Re-read realms and pools from the store after a sysop changed them."""
        self.router.realms.load(await self.store.realms.list())
        self.router.pools = {p.name: PoolState.from_row(p) for p in await self.store.pools.list()}
        self.scheduler.resize_queues()

    async def sync_workers(self) -> None:
        """Adopt the store's workers (another broker of the cluster changed them)."""
        async with self.registry.membership:
            self.registry.sync(await self.store.workers.list())
        self.scheduler.pump()

    def peers_changed(self) -> None:
        """A sysop added or removed a peer installation here: the other brokers read the
        peers again, and queries waiting for one are looked at."""
        if self.node is not None:
            self.node.publish("peers_changed")
        self.scheduler.pump()

    def _workers_changed(self, note: str) -> None:
        """A worker was added or removed here (`WorkerCatalog`): tell the sockets, and the
        other brokers, which read the store's list again."""
        self.announce_workers(note)
        if self.node is not None:
            self.node.publish("workers_changed")

    async def _routing_changed(self, note: str) -> None:
        """After a sysop changed pools or realms (`RoutingAdmin`): route by the new ones and
        tell the sockets (and the other brokers, which read them again)."""
        await self.reload_routing()
        if self.node is not None:
            self.node.publish("routing_changed")
        self.hub.broadcast(self.pools_event())
        self.announce_workers(note)
        self.scheduler.pump()

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
        self.scheduler.workers_changed()
        self.hub.broadcast_by_role(
            sysops=self.workers_event(for_sysop=True), others=self.workers_event(for_sysop=False)
        )
        self.hub.broadcast(self.dashboard.worker_health(), sysops_only=True)
        if sysop_note:
            self.hub.broadcast(events.SysopBroadcast(message=sysop_note), sysops_only=True)

    def refresh_worker_metrics(self) -> None:
        for worker in self.registry:
            self.metrics.worker_health.labels(worker.name).set(worker.health_score)
            self.metrics.worker_in_flight.labels(worker.name).set(worker.in_flight)

    def _circuit_opened_elsewhere(self, message: dict[str, Any]) -> None:
        worker = self.registry.get(message["worker"])
        if worker is not None and not worker.outbound:
            worker.circuit.trip()
            self.announce_workers()

    def _standing_elsewhere(self, message: dict[str, Any]) -> None:
        worker = self.registry.get(message["worker"])
        if worker is None or worker.outbound:
            return
        worker.health_score, worker.blacklisted = message["health_score"], message["blacklisted"]
        self.announce_workers()
        self.scheduler.pump()

    async def _on_health_events(self, changes: list[tuple[WorkerState, str]]) -> None:
        """After a health check, or a real job that changed a worker's standing (told to the
        other brokers of a cluster: an outbound worker's only by the broker it is connected
        to, whose view alone counts)."""
        if self.node is not None:
            for worker, _ in changes:
                if not worker.outbound:
                    self.node.publish(
                        "worker_standing",
                        worker=worker.name,
                        health_score=worker.health_score,
                        blacklisted=worker.blacklisted,
                    )
        self.refresh_worker_metrics()
        self.hub.broadcast(self.dashboard.worker_health(), sysops_only=True)
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
