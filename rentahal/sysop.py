"""What a sysop can do, in one place: the bus handlers and the REST routes both call this.

Authorisation is not checked here; callers gate on the principal's role before calling
(the bus centrally for every sysop message type, REST with a dependency). Every action that
changes something is written to the audit log under the acting user (`broker.sysop_for`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from rentahal.backends import BACKENDS
from rentahal.bus import events
from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.bus.messages import ModelSpec, PoolSpec, RealmPatch, RealmSpec, WorkerSpec
from rentahal.bus.views import running_query_view, stats_view, timeline_view, user_view
from rentahal.cloud import HUGGINGFACE
from rentahal.routing.registry import WorkerState
from rentahal.store import AlreadyExists, Role, User, Worker, utcnow
from rentahal.store.models import Pool, Realm
from rentahal.store.users import LastSysop, NotRegistered

if TYPE_CHECKING:
    from rentahal.broker import Broker

log = structlog.get_logger(__name__)

BANNED_CLOSE_CODE = 4003

RUNNING_QUERIES_SHOWN = 200  # the oldest; a longer list is more than a panel can show
PROMPT_CHARS_SHOWN = 200
# The statistics timeline: an hour by the minute unless asked otherwise (REST).
TIMELINE_WINDOW = 3600  # seconds
TIMELINE_BUCKET = 60  # seconds
TIMELINE_MAX_BUCKETS = 500


def validate_worker_spec(spec: WorkerSpec) -> None:
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


class Sysop:
    def __init__(self, broker: Broker, actor: User | None = None) -> None:
        self._broker = broker
        self._actor = actor

    async def _audit(self, action: str, target: str = "", **detail: Any) -> None:
        await self._broker.store.audit.record(self._actor, action, target, detail)

    # --- workers ---------------------------------------------------------------------------

    async def add_worker(
        self, spec: WorkerSpec, *, owner_id: str | None = None, key: str | None = None
    ) -> WorkerState:
        """Add a worker; `key` marks one that joined by itself (see `rentahal.membership`)."""
        row = worker_row(spec, owner_id=owner_id)
        if key is not None:
            row.tags = {"joined": True}
        router = self._broker.router
        if spec.realm and router.realms.get(spec.realm) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no realm named {spec.realm!r}")
        registry = self._broker.registry
        async with registry.membership:
            home = router.realms.get(router.realms.home_of(row.realm, spec.type))
            members = sum(1 for w in registry if router.home_realm(w) == (home and home.name))
            if home is not None and members >= home.max_workers:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"realm {home.name} is full ({home.max_workers} workers at most)",
                )
            try:
                await self._broker.store.workers.add(row)
            except AlreadyExists:
                raise ProtocolError(
                    ErrorCode.CONFLICT, f"a worker named {spec.name!r} already exists"
                ) from None
            worker = WorkerState.from_row(row)
            worker.key = key
            registry.add(worker)
        log.info("sysop.worker_added", worker=spec.name, kind=spec.kind)
        await self._audit("add_worker", spec.name, kind=spec.kind, address=spec.address)
        # Probe at once: the sysop learns whether it answers, and the models it lists.
        await self._broker.monitor.check([worker])
        self._broker.announce_workers(f"Added worker: {spec.name}")
        self._broker.scheduler.pump()
        return worker

    async def remove_worker(self, name: str) -> None:
        registry = self._broker.registry
        async with registry.membership:
            if not await self._broker.store.workers.remove(name):
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no worker named {name!r}")
            registry.remove(name)
        log.info("sysop.worker_removed", worker=name)
        await self._audit("remove_worker", name)
        self._broker.announce_workers(f"Removed worker: {name}")

    # --- pools -----------------------------------------------------------------------------

    async def save_pool(self, spec: PoolSpec, *, create: bool) -> None:
        """Create (`create`) or replace a pool."""
        if self._broker.router.realms.get(spec.name) is not None:
            raise ProtocolError(ErrorCode.CONFLICT, f"{spec.name} is a realm's name")
        unknown = [m for m in spec.members if self._broker.registry.get(m) is None]
        if unknown:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such workers: {', '.join(unknown)}")
        values = {"query_type": spec.type, "members": list(spec.members), "strategy": spec.strategy}
        pools = self._broker.store.pools
        if create:
            try:
                await pools.add(Pool(name=spec.name, **values))
            except AlreadyExists:
                raise ProtocolError(ErrorCode.CONFLICT, f"pool {spec.name} exists") from None
        elif not await pools.update(spec.name, values):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no pool named {spec.name}")
        await self._audit("add_pool" if create else "update_pool", spec.name, **values)
        await self._routing_changed(f"{'Created' if create else 'Updated'} pool {spec.name}")

    async def remove_pool(self, name: str) -> None:
        if not await self._broker.store.pools.remove(name):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no pool named {name}")
        await self._audit("remove_pool", name)
        await self._routing_changed(f"Removed pool {name}")

    # --- realms ----------------------------------------------------------------------------

    async def add_realm(self, spec: RealmSpec) -> None:
        if spec.name in self._broker.router.pools:
            raise ProtocolError(ErrorCode.CONFLICT, f"{spec.name} is a pool's name")
        realm = Realm(**spec.model_dump(exclude={"primary_for"}), primary_for=[])
        try:
            await self._broker.store.realms.add(realm)
        except AlreadyExists:
            raise ProtocolError(ErrorCode.CONFLICT, f"realm {spec.name} exists") from None
        if spec.primary_for:
            await self._take_primary(spec.name, spec.primary_for)
        await self._audit("add_realm", spec.name, **spec.model_dump(exclude={"name"}))
        await self._routing_changed(f"Created realm {spec.name}")

    async def update_realm(self, name: str, patch: RealmPatch) -> None:
        values = patch.model_dump(exclude_none=True, exclude={"primary_for"})
        realms = self._broker.store.realms
        if self._broker.router.realms.get(name) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no realm named {name}")
        if patch.primary_for is not None:
            current = self._broker.router.realms.get(name)
            dropped = set(current.primary_for if current else ()) - set(patch.primary_for)
            if dropped:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"{name} is the primary realm of {', '.join(sorted(dropped))}: make another "
                    "realm their primary instead",
                )
            await self._take_primary(name, patch.primary_for)
        if values:
            await realms.update(name, values)
        await self._audit("update_realm", name, **patch.model_dump(exclude_none=True))
        await self._routing_changed(f"Updated realm {name}")

    async def _take_primary(self, name: str, query_types: Sequence[str]) -> None:
        """Make `name` the primary realm of `query_types`, taking them from their old one."""
        for realm in self._broker.router.realms:
            if realm.name != name and (moved := set(realm.primary_for) & set(query_types)):
                remaining = [t for t in realm.primary_for if t not in moved]
                await self._broker.store.realms.update(realm.name, {"primary_for": remaining})
        await self._broker.store.realms.update(name, {"primary_for": sorted(set(query_types))})

    async def remove_realm(self, name: str) -> None:
        realm = self._broker.router.realms.get(name)
        if realm is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no realm named {name}")
        if realm.primary_for:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"{name} is the primary realm of {', '.join(realm.primary_for)} and cannot go",
            )
        await self._broker.store.realms.remove(name)
        await self._audit("remove_realm", name)
        await self._routing_changed(f"Removed realm {name}")

    async def _routing_changed(self, note: str) -> None:
        await self._broker.reload_routing()
        log.info("sysop.routing_changed", change=note)
        self._broker.hub.broadcast(self._broker.pools_event())
        self._broker.announce_workers(note)
        self._broker.scheduler.pump()

    # --- cloud models ----------------------------------------------------------------------

    async def add_huggingface_model(self, spec: ModelSpec) -> None:
        try:  # before storing it: a model whose id makes no URL is refused, not kept
            worker = self._broker.cloud.huggingface_spec(spec.name, spec.type)
        except ValidationError:
            raise ProtocolError(
                ErrorCode.INVALID, f"model id {spec.name[:80]!r} makes no usable URL"
            ) from None
        try:
            await self._broker.store.models.add(HUGGINGFACE, spec.name, spec.type)
        except AlreadyExists:
            raise ProtocolError(ErrorCode.CONFLICT, f"model {spec.name!r} already added") from None
        await self._audit("add_huggingface_model", spec.name, type=spec.type)
        await self._broker.cloud.add_huggingface(worker)
        await self._announce_models(f"Added Hugging Face model: {spec.name}")

    async def remove_huggingface_model(self, name: str) -> None:
        if not await self._broker.store.models.remove(HUGGINGFACE, name):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no Hugging Face model {name!r}")
        await self._audit("remove_huggingface_model", name)
        await self._broker.cloud.remove_huggingface(name)
        await self._announce_models(f"Removed Hugging Face model: {name}")

    async def huggingface_update(self) -> events.HuggingfaceUpdate:
        models = await self._broker.store.models.list(HUGGINGFACE)
        return events.HuggingfaceUpdate(
            models=[{"name": m.name, "type": m.query_type} for m in models]
        )

    async def _announce_models(self, message: str) -> None:
        hub = self._broker.hub
        hub.broadcast(await self.huggingface_update())
        hub.broadcast(events.SysopBroadcast(message=message), sysops_only=True)

    # --- users -----------------------------------------------------------------------------

    async def ban(self, user_id: str) -> None:
        """Ban at once: every open connection of theirs closes and their jobs stop.

        Every credential of theirs (session cookies, API keys) is refused from the moment
        the flag is stored, since each request reads the user afresh. The connections close
        before the jobs are collected, with no await in between: a query being accepted on
        one of them meanwhile is either collected here or finds its connection closed as
        banned and cancels itself (`BusSession._submit`)."""
        await self._require_user(user_id)
        await self._broker.store.users.set_banned(user_id, True)
        hub = self._broker.hub
        hub.send_user(user_id, events.UserBanned(guid=user_id))
        hub.send_user(
            user_id,
            events.Error(code=ErrorCode.BANNED, message="You have been banned from this service."),
        )
        closed = hub.close_user(user_id, BANNED_CLOSE_CODE, "banned")
        await self._broker.scheduler.cancel_user(user_id, reason="user banned", by_sysop=True)
        hub.broadcast(events.UserBanned(guid=user_id), sysops_only=True)
        log.info("sysop.user_banned", user_id=user_id, connections_closed=closed)
        await self._audit("ban_user", user_id, connections_closed=closed)

    async def unban(self, user_id: str) -> None:
        await self._require_user(user_id)
        await self._broker.store.users.set_banned(user_id, False)
        self._broker.hub.broadcast(events.UserUnbanned(guid=user_id), sysops_only=True)
        log.info("sysop.user_unbanned", user_id=user_id)
        await self._audit("unban_user", user_id)

    async def set_role(self, user_id: str, role: Role) -> User:
        """Promote or demote (`user`, `premium`, `sysop`); applies at once to the user's open
        connections, which are sent their new `user_info`. Refused: a sysop without a
        password (a guest), and a demotion that would leave no sysop who can act."""
        if role == Role.GUEST:
            raise ProtocolError(ErrorCode.INVALID, "a registered user cannot become a guest")
        try:
            changed = await self._broker.store.users.change_role(user_id, role)
        except NotRegistered:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                "only a registered user (one with a password) can become a sysop",
            ) from None
        except LastSysop:
            raise ProtocolError(
                ErrorCode.CONFLICT, "this is the last sysop: make another sysop first"
            ) from None
        if changed is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
        user, previous = changed
        if previous != user.role:
            log.info("sysop.role_changed", user_id=user_id, role=user.role, previous=previous)
            await self._audit("set_role", user_id, role=user.role, previous=previous)
        self._broker.hub.user_changed(user_id, user)
        return user

    async def terminate(self, *, user_id: str | None = None, query_id: str | None = None) -> int:
        scheduler = self._broker.scheduler
        reason = "terminated by a sysop"
        if query_id is not None:
            count = int(await scheduler.cancel(query_id, reason=reason, by_sysop=True))
        else:
            assert user_id is not None
            count = await scheduler.cancel_user(user_id, reason=reason, by_sysop=True)
        await self._audit("terminate_query", query_id or user_id or "", terminated=count)
        return count

    async def _require_user(self, user_id: str) -> None:
        if await self._broker.store.users.get(user_id) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")

    # --- broadcast and statistics ----------------------------------------------------------

    async def broadcast(self, message: str) -> None:
        log.info("sysop.broadcast")
        self._broker.hub.broadcast(events.SysopBroadcast(message=message))
        await self._audit("sysop_message", message=message[:200])

    async def system_stats(self) -> events.SystemStatsEvent:
        stats = await self._broker.store.stats.system()
        return events.SystemStatsEvent(
            data=stats_view(stats, connected_users=len(self._broker.hub.connected_users))
        )

    async def user_stats(self) -> events.UserStats:
        users = await self._broker.store.users.list()
        return events.UserStats(data=[user_view(u) for u in users])

    async def running_queries(self) -> events.RunningQueries:
        queries = await self._broker.store.queries.running(
            limit=RUNNING_QUERIES_SHOWN, prompt_chars=PROMPT_CHARS_SHOWN
        )
        now = utcnow()
        return events.RunningQueries(data=[running_query_view(q, now) for q in queries])

    async def stats_timeline(
        self, window: int = TIMELINE_WINDOW, bucket: int = TIMELINE_BUCKET
    ) -> events.StatsTimeline:
        """The last `window` seconds in buckets of `bucket` seconds (enough of them to cover
        the window), the last ending now."""
        buckets = math.ceil(window / bucket)
        if buckets > TIMELINE_MAX_BUCKETS:
            raise ProtocolError(
                ErrorCode.INVALID,
                f"{window} s in buckets of {bucket} s is {buckets} buckets; "
                f"at most {TIMELINE_MAX_BUCKETS}",
            )
        timeline = await self._broker.store.stats.timeline(
            end=utcnow(), bucket_seconds=bucket, buckets=buckets
        )
        return events.StatsTimeline(data=timeline_view(timeline))

    def worker_health(self) -> events.WorkerHealth:
        return events.WorkerHealth(data=self._broker.worker_views())

    def active_users(self) -> events.ActiveUsers:
        return events.ActiveUsers(users=self._broker.hub.connected_users)
