"""System statistics: lifetime totals, per-type averages, most users ever connected, and
the recent past bucketed in time for charts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, select

from rentahal.store.database import Database, conflict_insert
from rentahal.store.models import INTERNAL_MODEL_TYPE, Counter, Query, QueryState, TypeStats

MAX_CONNECTED_USERS = "max_connected_users"


@dataclass(frozen=True, slots=True)
class TypeTotals:
    queries: int
    processing_time: float
    cost: float


@dataclass(slots=True)
class SystemStats:
    total_queries: int = 0
    total_processing_time: float = 0.0
    total_cost: float = 0.0
    last_updated: datetime | None = None
    max_connected_users: int = 0
    average_times: dict[str, float] = field(default_factory=dict)
    by_type: dict[str, TypeTotals] = field(default_factory=dict)


class Series:
    """One line of a timeline's chart: per bucket, how many queries ended and the mean
    processing time of those done (None where none was)."""

    __slots__ = ("_done", "_seconds", "counts")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self._done = [0] * buckets
        self._seconds = [0.0] * buckets

    def add(self, bucket: int, processing_time: float | None) -> None:
        self.counts[bucket] += 1
        if processing_time is not None:
            self._done[bucket] += 1
            self._seconds[bucket] += processing_time

    @property
    def latencies(self) -> list[float | None]:
        return [
            round(seconds / done, 4) if done else None
            for seconds, done in zip(self._seconds, self._done, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class Timeline:
    start: datetime
    bucket_seconds: int
    buckets: int
    by_type: dict[str, Series]
    by_worker: dict[str, Series]  # workers by name; a query that never reached one is left out


class StatsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        # The high-water mark of connected users as last read or written: it only rises, so
        # a count at or under it needs no write (one upsert per connection otherwise).
        self._max_connected = 0

    def forget_remembered(self) -> None:
        """Forget the mark last read or written (see `Store.forget_remembered`)."""
        self._max_connected = 0

    async def system(self) -> SystemStats:
        stats = SystemStats()
        async with self._db.session() as session:
            for row in await session.scalars(select(TypeStats)):
                stats.total_queries += row.query_count
                stats.total_processing_time += row.total_processing_time
                stats.total_cost += row.total_cost
                if stats.last_updated is None or row.last_updated > stats.last_updated:
                    stats.last_updated = row.last_updated
                if row.query_count:
                    stats.average_times[row.query_type] = (
                        row.total_processing_time / row.query_count
                    )
                stats.by_type[row.query_type] = TypeTotals(
                    row.query_count, row.total_processing_time, row.total_cost
                )
            counter = await session.get(Counter, MAX_CONNECTED_USERS)
            stats.max_connected_users = counter.value if counter else 0
        self._max_connected = max(self._max_connected, stats.max_connected_users)
        return stats

    async def record_connected_users(self, connected: int) -> int:
        """Raise the high-water mark if `connected` beats it; returns the mark.

        One upsert, so connections opening at the same moment cannot both insert it."""
        if connected <= self._max_connected:
            return self._max_connected
        async with self._db.engine.begin() as conn:
            insert = conflict_insert(conn.dialect.name, Counter).values(
                name=MAX_CONNECTED_USERS, value=connected
            )
            upsert = insert.on_conflict_do_update(
                index_elements=[Counter.name],
                set_={
                    "value": case(
                        (insert.excluded.value > Counter.value, insert.excluded.value),
                        else_=Counter.value,
                    )
                },
            ).returning(Counter.value)
            self._max_connected = int((await conn.execute(upsert)).scalar_one())
        return self._max_connected

    async def timeline(self, *, end: datetime, bucket_seconds: int, buckets: int) -> Timeline:
        """The users' queries that ended in the `buckets` buckets of `bucket_seconds` before
        `end`, by query type and by worker.

        Only the few columns needed are read, for the window alone, and streamed; buckets
        are counted here rather than by SQL date arithmetic, which SQLite and PostgreSQL
        spell differently."""
        size = timedelta(seconds=bucket_seconds)
        start = end - size * buckets
        statement = select(
            Query.finished_at,
            Query.query_type,
            Query.worker_name,
            Query.state,
            Query.processing_time,
        ).where(
            Query.finished_at >= start,
            Query.finished_at <= end,
            Query.model_type != INTERNAL_MODEL_TYPE,
        )
        timeline = Timeline(start, bucket_seconds, buckets, by_type={}, by_worker={})
        async with self._db.session() as session:
            rows = await session.stream(statement)
            async for finished_at, query_type, worker, state, seconds in rows:
                assert finished_at is not None  # as the WHERE clause says
                bucket = min((finished_at - start) // size, buckets - 1)
                latency = seconds if state == QueryState.DONE else None
                for lines, name in ((timeline.by_type, query_type), (timeline.by_worker, worker)):
                    if name is None:
                        continue
                    if name not in lines:
                        lines[name] = Series(buckets)
                    lines[name].add(bucket, latency)
        return timeline
