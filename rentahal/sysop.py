"""What a sysop can do, in one place: the bus handlers and the REST routes both call this.

Authorisation is not checked here; callers gate on the principal's role before calling
(the bus centrally for every sysop message type, REST with a dependency).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from rentahal.backends import BACKENDS
from rentahal.bus import events
from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.bus.messages import ModelSpec, WorkerSpec
from rentahal.bus.views import stats_view, user_view, worker_view
from rentahal.routing.registry import WorkerState
from rentahal.store import AlreadyExists, Worker

if TYPE_CHECKING:
    from rentahal.broker import Broker

log = structlog.get_logger(__name__)

BANNED_CLOSE_CODE = 4003
HUGGINGFACE = "huggingface"


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
        owner_id=owner_id,
    )


class Sysop:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    # --- workers ---------------------------------------------------------------------------

    async def add_worker(self, spec: WorkerSpec, *, owner_id: str | None = None) -> WorkerState:
        row = worker_row(spec, owner_id=owner_id)
        registry = self._broker.registry
        async with registry.membership:
            try:
                await self._broker.store.workers.add(row)
            except AlreadyExists:
                raise ProtocolError(
                    ErrorCode.CONFLICT, f"a worker named {spec.name!r} already exists"
                ) from None
            worker = WorkerState.from_row(row)
            registry.add(worker)
        log.info("sysop.worker_added", worker=spec.name, kind=spec.kind)
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
        self._broker.announce_workers(f"Removed worker: {name}")

    # --- cloud models ----------------------------------------------------------------------

    async def add_huggingface_model(self, spec: ModelSpec) -> None:
        try:
            await self._broker.store.models.add(HUGGINGFACE, spec.name, spec.type)
        except AlreadyExists:
            raise ProtocolError(ErrorCode.CONFLICT, f"model {spec.name!r} already added") from None
        await self._announce_models(f"Added Hugging Face model: {spec.name}")

    async def remove_huggingface_model(self, name: str) -> None:
        if not await self._broker.store.models.remove(HUGGINGFACE, name):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no Hugging Face model {name!r}")
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
        """Ban at once: the user's jobs stop and every open connection of theirs closes."""
        await self._require_user(user_id)
        await self._broker.store.users.set_banned(user_id, True)
        await self._broker.scheduler.cancel_user(user_id, reason="user banned", by_sysop=True)
        hub = self._broker.hub
        hub.send_user(user_id, events.UserBanned(guid=user_id))
        hub.send_user(
            user_id,
            events.Error(code=ErrorCode.BANNED, message="You have been banned from this service."),
        )
        closed = hub.close_user(user_id, BANNED_CLOSE_CODE, "banned")
        hub.broadcast(events.UserBanned(guid=user_id), sysops_only=True)
        log.info("sysop.user_banned", user_id=user_id, connections_closed=closed)

    async def unban(self, user_id: str) -> None:
        await self._require_user(user_id)
        await self._broker.store.users.set_banned(user_id, False)
        self._broker.hub.broadcast(events.UserUnbanned(guid=user_id), sysops_only=True)
        log.info("sysop.user_unbanned", user_id=user_id)

    async def terminate(self, *, user_id: str | None = None, query_id: str | None = None) -> int:
        scheduler = self._broker.scheduler
        if query_id is not None:
            return int(
                await scheduler.cancel(query_id, reason="terminated by a sysop", by_sysop=True)
            )
        assert user_id is not None
        return await scheduler.cancel_user(user_id, reason="terminated by a sysop", by_sysop=True)

    async def _require_user(self, user_id: str) -> None:
        if await self._broker.store.users.get(user_id) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")

    # --- broadcast and statistics ----------------------------------------------------------

    def broadcast(self, message: str) -> None:
        log.info("sysop.broadcast")
        self._broker.hub.broadcast(events.SysopBroadcast(message=message))

    async def system_stats(self) -> events.SystemStatsEvent:
        stats = await self._broker.store.stats.system()
        return events.SystemStatsEvent(
            data=stats_view(stats, connected_users=len(self._broker.hub.connected_users))
        )

    async def user_stats(self) -> events.UserStats:
        users = await self._broker.store.users.list()
        return events.UserStats(data=[user_view(u) for u in users])

    def worker_health(self) -> events.WorkerHealth:
        return events.WorkerHealth(data=[worker_view(w) for w in self._broker.registry])

    def active_users(self) -> events.ActiveUsers:
        return events.ActiveUsers(users=self._broker.hub.connected_users)
