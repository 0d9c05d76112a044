"""A sysop clearing the queue: the waiting jobs of a realm, of a user, or all of them (the
seed's `clear_queue`). Jobs already on a worker run on; use `terminate` to stop those."""

from __future__ import annotations

from typing import Protocol

import structlog

from rentahal.admin.audit import AuditTrail
from rentahal.bus import events
from rentahal.bus.hub import Hub
from rentahal.store import Query, User

log = structlog.get_logger(__name__)

CLEARED = "cleared by a sysop"
NOTICE = "The queue has been cleared"


class Clearing(Protocol):
    """What of the scheduler clearing the queue needs."""

    async def clear(
        self, *, realm: str | None = None, user_id: str | None = None, reason: str
    ) -> list[Query]: ...


class QueueAdmin:
    def __init__(self, hub: Hub, jobs: Clearing, audit: AuditTrail) -> None:
        self._hub = hub
        self._jobs = jobs
        self._audit = audit

    async def clear(
        self, actor: User | None, *, realm: str | None = None, user_id: str | None = None
    ) -> int:
        """Cancel the waiting jobs of `realm` and/or `user_id` (neither: every waiting job);
        returns how many. Each owner gets its query's final event as for any cancel; the
        notice goes to everybody when the whole queue went, else to the owners it touched."""
        cleared = await self._jobs.clear(realm=realm, user_id=user_id, reason=CLEARED)
        notice = events.SysopBroadcast(message=NOTICE if realm is None else f"{NOTICE} ({realm})")
        if realm is None and user_id is None:
            self._hub.broadcast(notice)
        else:
            for owner in {q.user_id for q in cleared if not q.is_internal}:
                self._hub.send_user(owner, notice)
        log.info("sysop.queue_cleared", realm=realm, user_id=user_id, cleared=len(cleared))
        await self._audit.record(
            actor, "clear_queue", user_id or "", realm=realm, cleared=len(cleared)
        )
        return len(cleared)
