"""The audit trail the admin services write to: who did what to which target."""

from __future__ import annotations

from typing import Any

from rentahal.store import User
from rentahal.store.audit import AuditRepository


class AuditTrail:
    """Append-only; read back by sysops through the store (`GET /api/v1/audit`)."""

    def __init__(self, entries: AuditRepository) -> None:
        self._entries = entries

    async def record(
        self, actor: User | None, action: str, target: str = "", **detail: Any
    ) -> None:
        """`actor` None is the broker acting by itself ("system" in the log)."""
        await self._entries.record(actor, action, target, detail)
