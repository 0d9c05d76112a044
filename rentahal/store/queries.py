"""Queries: each row is a job and its lifecycle, plus the statistics its completion updates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import undefer_group

from rentahal.core.vocabulary import UNFINISHED_STATES
from rentahal.store.database import Database, conflict_insert
from rentahal.store.group_commit import GroupCommitter
from rentahal.store.ledger import append as append_to_ledger
from rentahal.store.models import (
    INTERNAL_MODEL_TYPE,
    Query,
    QueryState,
    TypeStats,
    User,
    new_id,
    utcnow,
)


@dataclass(frozen=True, slots=True)
class UnfinishedQuery:
    """A job still queued or running, as a list of them shows it: its owner's nickname, the
    head of its prompt, and none of its media."""

    id: str
    user_id: str
    nickname: str
    query_type: str
    model_name: str
    state: str
    worker_name: str | None
    realm: str
    prompt: str
    created_at: datetime


_UNFINISHED = [s.value for s in UNFINISHED_STATES]

# The hot path's statements are built once, with bound parameters, so each execution reuses
# SQLAlchemy's compiled form instead of building and hashing a new expression tree.
_INSERT_QUERY = insert(Query)
# Executed with {"_id": ..., <column>: <value>, ...}: the other keys become the SET clause.
_UPDATE_QUERY = update(Query).where(Query.id == bindparam("_id"))
_ADD_TO_USER = (
    update(User)
    .where(User.id == bindparam("_user"))
    .values(
        query_count=User.query_count + 1,
        total_query_time=User.total_query_time + bindparam("_seconds"),
        total_cost=User.total_cost + bindparam("_cost"),
    )
    .returning(*User.__table__.columns)
)


def _upsert_type_stats(dialect_name: str) -> Any:
    upsert = conflict_insert(dialect_name, TypeStats).values(
        query_type=bindparam("query_type"),
        query_count=1,
        total_processing_time=bindparam("seconds"),
        total_cost=bindparam("cost"),
        last_updated=bindparam("now"),
    )
    return upsert.on_conflict_do_update(
        index_elements=[TypeStats.query_type],
        set_={
            "query_count": TypeStats.query_count + 1,
            "total_processing_time": TypeStats.total_processing_time + bindparam("seconds"),
            "total_cost": TypeStats.total_cost + bindparam("cost"),
            "last_updated": bindparam("now"),
        },
    )


_UPSERT_TYPE_STATS = {name: _upsert_type_stats(name) for name in ("postgresql", "sqlite")}


class QueryRepository:
    """Reads go through sessions; every write of a job's lifecycle goes through the group
    committer as a Core statement (no ORM unit of work on the hot path)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._writes = GroupCommitter(db.engine, db.writer)

    async def close(self) -> None:
        await self._writes.close()

    async def create(self, query: Query) -> Query:
        """Insert a new job; fills in its id and creation time. A job dispatched as it was
        accepted comes with its first attempt (`state`, `worker_name`, `attempts`,
        `dispatched_at`): one write for both."""
        query.id = query.id or new_id()
        query.created_at = query.created_at or utcnow()
        values = {
            "id": query.id,
            "user_id": query.user_id,
            "query_type": query.query_type,
            "model_type": query.model_type or "worker_node",
            "model_name": query.model_name or "",
            "prompt": query.prompt,
            "options": query.options or {},
            "state": query.state or QueryState.QUEUED.value,
            "realm": query.realm or "",
            "attempts": query.attempts or 0,
            "worker_name": query.worker_name,
            "dispatched_at": query.dispatched_at,
            "delivered": False,
            "created_at": query.created_at,
            "image": query.image,
            "audio": query.audio,
            "stage": query.stage or 0,
            "broker_id": query.broker_id,
            "hops": query.hops or [],
        }
        await self._writes.run(lambda conn: conn.execute(_INSERT_QUERY, values))
        for name, value in values.items():
            setattr(query, name, value)
        return query

    async def get(self, query_id: str, *, with_media: bool = False) -> Query | None:
        async with self._db.session() as session:
            options = [undefer_group("media")] if with_media else []
            return await session.get(Query, query_id, options=options)

    async def history(self, user_id: str, limit: int = 10) -> Sequence[Query]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Query)
                .where(Query.user_id == user_id, Query.model_type != INTERNAL_MODEL_TYPE)
                .order_by(Query.created_at.desc())
                .limit(limit)
            )
            return rows.all()

    async def latest_submissions(self, user_id: str, since: datetime, limit: int) -> list[datetime]:
        """When the user submitted their latest `limit` queries since `since` (the broker's
        own on their behalf not counted), oldest first."""
        async with self._db.session() as session:
            times = await session.scalars(
                select(Query.created_at)
                .where(
                    Query.user_id == user_id,
                    Query.created_at >= since,
                    Query.model_type != INTERNAL_MODEL_TYPE,
                )
                .order_by(Query.created_at.desc())
                .limit(limit)
            )
            return sorted(times)

    async def every_query(self, batch: int = 1000) -> AsyncIterator[Query]:
        """Every query, oldest first, a batch at a time (an export never loads the table)."""
        after: tuple[datetime, str] | None = None
        while True:
            statement = select(Query).order_by(Query.created_at, Query.id).limit(batch)
            if after is not None:
                statement = statement.where(tuple_(Query.created_at, Query.id) > after)
            async with self._db.session() as session:
                rows = (await session.scalars(statement)).all()
            for row in rows:
                yield row
            if len(rows) < batch:
                return
            after = (rows[-1].created_at, rows[-1].id)

    async def unfinished(self) -> Sequence[Query]:
        """Jobs a previous broker process accepted and did not finish, oldest first."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Query)
                .options(undefer_group("media"))
                .where(Query.state.in_(_UNFINISHED))
                .order_by(Query.created_at)
            )
            return rows.all()

    async def holders(self) -> set[str | None]:
        """The brokers holding unfinished jobs (None: one from before brokers were named)."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Query.broker_id).where(Query.state.in_(_UNFINISHED)).distinct()
            )
            return set(rows.all())

    async def with_idempotency_key(self, user_id: str, key: str) -> Query | None:
        async with self._db.session() as session:
            return await session.scalar(
                select(Query).where(Query.user_id == user_id, Query.idempotency_key == key)
            )

    async def set_idempotency_key(self, query: Query, key: str) -> bool:
        """Name the query by `key`; False if another of its owner's has that key already."""
        try:
            await self._set(query, idempotency_key=key)
        except IntegrityError:
            return False
        return True

    async def waiting_held_by(self, holder: str | None) -> Sequence[Query]:
        """The queued jobs a broker holds, oldest first, media included."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Query)
                .options(undefer_group("media"))
                .where(Query.broker_id == holder, Query.state == QueryState.QUEUED.value)
                .order_by(Query.created_at)
            )
            return rows.all()

    async def claim(self, holder: str | None, claimant: str) -> Sequence[Query]:
        """Take over the unfinished jobs `holder` held, oldest first. One statement moves
        them: when two brokers claim the same dead one's jobs, each job goes to one of them
        (the second's update finds them held by the first)."""
        held = Query.broker_id.is_(None) if holder is None else Query.broker_id == holder
        async with self._db.session() as session:
            ids = (
                await session.scalars(
                    update(Query)
                    .where(held, Query.state.in_(_UNFINISHED))
                    .values(broker_id=claimant)
                    .returning(Query.id)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            await session.commit()
            if not ids:
                return []
            rows = await session.scalars(
                select(Query)
                .options(undefer_group("media"))
                .where(Query.id.in_(ids), Query.broker_id == claimant)
                .order_by(Query.created_at)
                .execution_options(populate_existing=True)
            )
            return rows.all()

    async def running(self, *, limit: int, prompt_chars: int) -> list[UnfinishedQuery]:
        """The users' unfinished jobs (not the broker's internal ones), oldest first, at most
        `limit`; each prompt is cut to `prompt_chars` by the database, so a page of long
        prompts is never read whole."""
        statement = (
            select(
                Query.id,
                Query.user_id,
                User.nickname,
                Query.query_type,
                Query.model_name,
                Query.state,
                Query.worker_name,
                Query.realm,
                func.substr(Query.prompt, 1, prompt_chars),
                Query.created_at,
            )
            .join(User, User.id == Query.user_id)
            .where(
                Query.state.in_([s.value for s in UNFINISHED_STATES]),
                Query.model_type != INTERNAL_MODEL_TYPE,
            )
            .order_by(Query.created_at, Query.id)
            .limit(limit)
        )
        async with self._db.session() as session:
            rows = await session.execute(statement)
            return [UnfinishedQuery(*row) for row in rows]

    async def undelivered(self, user_id: str) -> Sequence[Query]:
        """Finished jobs whose result never reached the owner (they were away)."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Query)
                .options(undefer_group("media"))
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
        statement = update(Query).where(Query.id.in_(list(query_ids))).values(delivered=True)
        await self._writes.run(lambda conn: conn.execute(statement))

    # The lifecycle methods below update `query` in place as well as in the store, so the
    # caller's object always says what the store says.

    async def requeue(self, query: Query) -> None:
        await self._set(query, state=QueryState.QUEUED.value, worker_name=None)

    async def advance(
        self,
        query: Query,
        *,
        prompt: str,
        result: str | None,
        processing_time: float,
        ledger: Sequence[dict[str, object]] = (),
    ) -> None:
        """A step of a multi-step query is done: queue the next one with what it made (the
        transcript becomes the prompt; the chat answer waits to be spoken). Processing time
        adds up over the steps; `ledger` rows (the step's worker's earning) go in with it."""
        await self._set(
            query,
            ledger,
            state=QueryState.QUEUED.value,
            worker_name=None,
            stage=query.stage + 1,
            prompt=prompt,
            result=result,
            attempts=0,
            processing_time=(query.processing_time or 0.0) + processing_time,
        )

    async def mark_dispatched(
        self, query: Query, worker_name: str, attempts: int, at: datetime
    ) -> None:
        """The attempt begins, by the broker the query names (`broker_id`) now."""
        await self._set(
            query,
            state=QueryState.DISPATCHED.value,
            worker_name=worker_name,
            attempts=attempts,
            dispatched_at=at,
            broker_id=query.broker_id,
        )

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
        energy_kwh: float | None = None,
        output: str | None = None,
        delivered: bool = False,
        ledger: Sequence[dict[str, object]] = (),
    ) -> User | None:
        """Store the result and add it to the user's and the system's statistics, and the
        `ledger` rows (the charge, the worker's earning), in one transaction; returns the owner
        with their new totals. `delivered` says the owner is connected and is being sent the
        result now."""
        values = {
            "state": QueryState.DONE.value,
            "worker_name": query.worker_name,  # another installation's may name its own
            "result": result,
            "result_type": result_type,
            "processing_time": processing_time,
            "cost": cost,
            "queue_wait": queue_wait,
            "energy_kwh": energy_kwh,
            "finished_at": utcnow(),
            "delivered": delivered,
            "output": output,
        }

        def write(conn: Connection) -> User | None:
            conn.execute(_UPDATE_QUERY, {"_id": query.id, **values})
            append_to_ledger(conn, ledger)  # first: the owner comes back with their balance
            owner = conn.execute(
                _ADD_TO_USER, {"_user": query.user_id, "_seconds": processing_time, "_cost": cost}
            )
            conn.execute(
                _UPSERT_TYPE_STATS[conn.dialect.name],
                {
                    "query_type": query.query_type,
                    "seconds": processing_time,
                    "cost": cost,
                    "now": values["finished_at"],
                },
            )
            row = owner.mappings().first()
            return User(**row) if row else None

        owner = await self._writes.run(write)
        for name, value in values.items():
            setattr(query, name, value)
        return owner

    async def finish_unsuccessful(
        self,
        query: Query,
        state: QueryState,
        *,
        code: str,
        message: str,
        delivered: bool = False,
    ) -> None:
        await self._set(
            query,
            state=state.value,
            error_code=code,
            error=message,
            finished_at=utcnow(),
            delivered=delivered,
        )

    async def _set(
        self, query: Query, ledger: Sequence[dict[str, object]] = (), **values: Any
    ) -> None:
        parameters = {"_id": query.id, **values}

        def write(conn: Connection) -> None:
            conn.execute(_UPDATE_QUERY, parameters)
            append_to_ledger(conn, ledger)

        await self._writes.run(write)
        for name, value in values.items():
            setattr(query, name, value)
