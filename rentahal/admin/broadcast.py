"""A sysop's message to everyone connected (`sysop_message` on the bus)."""

from __future__ import annotations

import structlog

from rentahal.admin.audit import AuditTrail
from rentahal.bus import events
from rentahal.bus.hub import Hub
from rentahal.store import User

log = structlog.get_logger(__name__)

AUDITED_CHARS = 200  # of the message, in the audit log


class Broadcaster:
    def __init__(self, hub: Hub, audit: AuditTrail) -> None:
        self._hub = hub
        self._audit = audit

    async def broadcast(self, actor: User | None, message: str) -> None:
        log.info("sysop.broadcast")
        self._hub.broadcast(events.SysopBroadcast(message=message))
        await self._audit.record(actor, "sysop_message", message=message[:AUDITED_CHARS])
