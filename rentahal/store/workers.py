"""Workers and cloud models as the sysop registered them; the store is their source of truth."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from rentahal.store.database import Database, affected_rows
from rentahal.store.models import Model, Worker


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """A worker's standing after a health check, and the models it listed."""

    name: str
    health_score: float
    blacklisted: bool
    last_active: datetime | None
    models: Sequence[str]


class AlreadyExists(Exception):
    """A worker or model with that name is already registered."""


class WorkerRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self) -> Sequence[Worker]:
        async with self._db.session() as session:
            return (await session.scalars(select(Worker).order_by(Worker.created_at))).all()

    async def get(self, name: str) -> Worker | None:
        async with self._db.session() as session:
            return await session.scalar(select(Worker).where(Worker.name == name))

    async def add(self, worker: Worker) -> Worker:
        async with self._db.session() as session:
            session.add(worker)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise AlreadyExists(worker.name) from exc
        return worker

    async def remove(self, name: str) -> bool:
        async with self._db.session() as session:
            result = await session.execute(delete(Worker).where(Worker.name == name))
            await session.commit()
            return affected_rows(result) > 0

    async def save_health(self, states: Iterable[WorkerHealth]) -> None:
        """Persist what health checks learnt of many workers at once."""
        async with self._db.session() as session:
            for state in states:
                await session.execute(
                    update(Worker)
                    .where(Worker.name == state.name)
                    .values(
                        health_score=state.health_score,
                        blacklisted=state.blacklisted,
                        last_active=state.last_active,
                        reported_models=list(state.models),
                    )
                )
            await session.commit()


class ModelRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self, provider: str) -> Sequence[Model]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Model).where(Model.provider == provider).order_by(Model.name)
            )
            return rows.all()

    async def add(self, provider: str, name: str, query_type: str) -> Model:
        model = Model(provider=provider, name=name, query_type=query_type)
        async with self._db.session() as session:
            session.add(model)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise AlreadyExists(name) from exc
        return model

    async def remove(self, provider: str, name: str) -> bool:
        async with self._db.session() as session:
            result = await session.execute(
                delete(Model).where(Model.provider == provider, Model.name == name)
            )
            await session.commit()
            return affected_rows(result) > 0
