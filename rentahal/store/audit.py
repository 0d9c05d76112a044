"""The audit log of sysop actions: append and read, never update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from rentahal.store.database import Database
from rentahal.store.models import AuditEntry, User


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        actor: User | None,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        entry = AuditEntry(
            actor_id=actor.id if actor else None,
            actor=actor.nickname if actor else "system",
            action=action,
            target=target[:256],
            detail=detail or {},
        )
        async with self._db.session() as session:
            session.add(entry)
            await session.commit()

    async def list(self, limit: int = 100) -> Sequence[AuditEntry]:
        """Newest first."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            )
            return rows.all()
