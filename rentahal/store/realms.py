"""Realms and pools as the sysop configured them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from rentahal.store.database import Database, affected_rows, conflict_insert
from rentahal.store.models import Pool, Realm
from rentahal.store.workers import AlreadyExists


class RealmRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self) -> Sequence[Realm]:
        async with self._db.session() as session:
            return (await session.scalars(select(Realm).order_by(Realm.name))).all()

    async def ensure(self, defaults: Sequence[tuple[str, Sequence[str]]], queue_size: int) -> None:
        """Create the default realms that do not exist yet (first start, or after an upgrade).
        Brokers starting together may all try: a realm another made meanwhile is kept."""
        async with self._db.engine.begin() as connection:
            for name, primary_for in defaults:
                await connection.execute(
                    conflict_insert(connection.dialect.name, Realm)
                    .values(name=name, primary_for=list(primary_for), max_queue_size=queue_size)
                    .on_conflict_do_nothing(index_elements=[Realm.name])
                )

    async def add(self, realm: Realm) -> Realm:
        async with self._db.session() as session:
            session.add(realm)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise AlreadyExists(realm.name) from exc
        return realm

    async def update(self, name: str, values: dict[str, Any]) -> bool:
        async with self._db.session() as session:
            result = await session.execute(update(Realm).where(Realm.name == name).values(**values))
            await session.commit()
            return affected_rows(result) > 0

    async def remove(self, name: str) -> bool:
        async with self._db.session() as session:
            result = await session.execute(delete(Realm).where(Realm.name == name))
            await session.commit()
            return affected_rows(result) > 0


class PoolRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self) -> Sequence[Pool]:
        async with self._db.session() as session:
            return (await session.scalars(select(Pool).order_by(Pool.name))).all()

    async def add(self, pool: Pool) -> Pool:
        async with self._db.session() as session:
            session.add(pool)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise AlreadyExists(pool.name) from exc
        return pool

    async def update(self, name: str, values: dict[str, Any]) -> bool:
        async with self._db.session() as session:
            result = await session.execute(update(Pool).where(Pool.name == name).values(**values))
            await session.commit()
            return affected_rows(result) > 0

    async def remove(self, name: str) -> bool:
        async with self._db.session() as session:
            result = await session.execute(delete(Pool).where(Pool.name == name))
            await session.commit()
            return affected_rows(result) > 0
