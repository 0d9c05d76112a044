"""The database engine: SQLite (WAL) by default, PostgreSQL when `database_url` says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, Engine, Result, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from rentahal.store.migrations import upgrade_to_head

__all__ = ["Database", "DbSession", "affected_rows", "conflict_insert"]

# The advisory lock that brokers migrating one PostgreSQL database take turns on.
MIGRATION_LOCK = 0x52454E5441484148


def affected_rows(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (only cursor results carry the count)."""
    return result.rowcount if isinstance(result, CursorResult) else 0


def conflict_insert(dialect_name: str, entity: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say what a conflict does (`ON CONFLICT …`), in the dialect's own
    form: both engines take it, with the same methods."""
    return (postgresql if dialect_name == "postgresql" else sqlite).insert(entity)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers work beside the one writer; busy_timeout waits out a held lock
    # instead of failing at once; foreign keys are off in SQLite unless asked for.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """Owns the async engine and hands out sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        # SQLite: the jobs' lifecycle writes go through a synchronous connection of their own,
        # written from one thread (`GroupCommitter`); PostgreSQL: through `engine`.
        self.writer: Engine | None = None
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self.writer = create_engine(parsed.set(drivername="sqlite"), pool_size=1)
            event.listen(self.writer, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision.

        Brokers starting together on one PostgreSQL database take turns: each migrates
        holding a transaction-scoped advisory lock, so the first does the work and the others
        then find the schema at head (without it, two creating the same table at once failed
        to start). SQLite is one broker's file."""
        async with self.engine.begin() as connection:
            if not self.is_sqlite:
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await connection.run_sync(upgrade_to_head)

    def session(self) -> DbSession:
        return self.sessions()

    async def close(self) -> None:
        await self.engine.dispose()
        if self.writer is not None:
            self.writer.dispose()  # closes its idle connection: no I/O to wait for
