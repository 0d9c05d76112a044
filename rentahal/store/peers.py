"""The installations this one forwards queries to (`rentahal.federation`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from rentahal.store.database import Database, affected_rows
from rentahal.store.models import Peer
from rentahal.store.workers import AlreadyExists


class PeerRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self) -> Sequence[Peer]:
        async with self._db.session() as session:
            return (await session.scalars(select(Peer).order_by(Peer.name))).all()

    async def add(self, peer: Peer) -> None:
        """Raises `AlreadyExists` for a name taken."""
        async with self._db.session() as session:
            session.add(peer)
            try:
                await session.commit()
            except IntegrityError:
                raise AlreadyExists(peer.name) from None

    async def remove(self, name: str) -> bool:
        async with self._db.session() as session:
            result = await session.execute(delete(Peer).where(Peer.name == name))
            await session.commit()
            return affected_rows(result) > 0
