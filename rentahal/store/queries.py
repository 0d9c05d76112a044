"""Queries: each row is a job and its lifecycle, plus the statistics its completion updates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from rentahal.store.database import Database, DbSession
from rentahal.store.models import Query, QueryState, TypeStats, User, utcnow

UNFINISHED_STATES = (QueryState.QUEUED, QueryState.DISPATCHED, QueryState.RUNNING)


class QueryRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, query: Query) -> Query:
        async with self._db.session() as session:
            session.add(query)
            await session.commit()
        return query

    async def get(self, query_id: str) -> Query | None:
        async with self._db.session() as session:
            return await session.get(Query, query_id)

    async def history(self, user_id: str, limit: int = 10) -> Sequence[Query]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Query)
                .where(Query.user_id == user_id)
                .order_by(Query.created_at.desc())
                .limit(limit)
            )
            return rows.all()

    async def unfinished(self) -> Sequence[Query]:
        """Jobs a previous broker process accepted and did not finish, oldest first."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Query)
                .where(Query.state.in_([s.value for s in UNFINISHED_STATES]))
                .order_by(Query.created_at)
            )
            return rows.all()

    async def undelivered(self, user_id: str) -> Sequence[Query]:
        """Finished jobs whose result never reached the owner (they were away)."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Query)
                .where(
                    Query.user_id == user_id,
                    Query.delivered.is_(False),
                    Query.state.notin_([s.value for s in UNFINISHED_STATES]),
                )
                .order_by(Query.finished_at)
            )
            return rows.all()

    async def mark_delivered(self, query_ids: Sequence[str]) -> None:
        if not query_ids:
            return
        async with self._db.session() as session:
            await session.execute(
                update(Query).where(Query.id.in_(list(query_ids))).values(delivered=True)
            )
            await session.commit()

    # The lifecycle methods below update `query` in place as well as in the store, so the
    # caller's object always says what the store says.

    async def requeue(self, query: Query) -> None:
        await self._set(query, state=QueryState.QUEUED.value, worker_name=None)

    async def mark_dispatched(self, query: Query, worker_name: str, attempts: int) -> datetime:
        now = utcnow()
        await self._set(
            query,
            state=QueryState.DISPATCHED.value,
            worker_name=worker_name,
            attempts=attempts,
            dispatched_at=now,
        )
        return now

    async def mark_running(self, query: Query) -> None:
        await self._set(query, state=QueryState.RUNNING.value, started_at=utcnow())

    async def finish_done(
        self,
        query: Query,
        *,
        result: str,
        result_type: str,
        processing_time: float,
        cost: float,
        queue_wait: float,
    ) -> None:
        """Store the result and add it to the user's and the system's statistics, atomically.

        `query` is updated in place too, so the caller can report it.
        """
        values = {
            "state": QueryState.DONE.value,
            "result": result,
            "result_type": result_type,
            "processing_time": processing_time,
            "cost": cost,
            "queue_wait": queue_wait,
            "finished_at": utcnow(),
        }
        async with self._db.session() as session, session.begin():
            await session.execute(update(Query).where(Query.id == query.id).values(**values))
            await session.execute(
                update(User)
                .where(User.id == query.user_id)
                .values(
                    query_count=User.query_count + 1,
                    total_query_time=User.total_query_time + processing_time,
                    total_cost=User.total_cost + cost,
                )
            )
            await _add_type_stats(session, query.query_type, processing_time, cost)
        for name, value in values.items():
            setattr(query, name, value)

    async def finish_unsuccessful(
        self, query: Query, state: QueryState, *, code: str, message: str
    ) -> None:
        await self._set(
            query, state=state.value, error_code=code, error=message, finished_at=utcnow()
        )

    async def _set(self, query: Query, **values: Any) -> None:
        async with self._db.session() as session:
            await session.execute(update(Query).where(Query.id == query.id).values(**values))
            await session.commit()
        for name, value in values.items():
            setattr(query, name, value)


async def _add_type_stats(session: DbSession, query_type: str, seconds: float, cost: float) -> None:
    """Upsert-increment one row of `type_stats` (one statement on both databases)."""
    values = {
        "query_type": query_type,
        "query_count": 1,
        "total_processing_time": seconds,
        "total_cost": cost,
        "last_updated": utcnow(),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(TypeStats).values(**values)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[TypeStats.query_type],
            set_={
                "query_count": TypeStats.query_count + 1,
                "total_processing_time": TypeStats.total_processing_time + seconds,
                "total_cost": TypeStats.total_cost + cost,
                "last_updated": values["last_updated"],
            },
        )
    )
