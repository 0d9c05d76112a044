"""System statistics: lifetime totals, per-type averages, most users ever connected."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite

from rentahal.store.database import Database
from rentahal.store.models import Counter, TypeStats

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


class StatsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

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
        return stats

    async def record_connected_users(self, connected: int) -> int:
        """Raise the high-water mark if `connected` beats it; returns the mark.

        One upsert, so connections opening at the same moment cannot both insert it."""
        async with self._db.engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(Counter).values(name=MAX_CONNECTED_USERS, value=connected)
            upsert = insert.on_conflict_do_update(
                index_elements=[Counter.name],
                set_={
                    "value": case(
                        (insert.excluded.value > Counter.value, insert.excluded.value),
                        else_=Counter.value,
                    )
                },
            ).returning(Counter.value)
            return int((await conn.execute(upsert)).scalar_one())
