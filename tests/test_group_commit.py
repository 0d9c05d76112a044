"""Group commit against a real PostgreSQL: a batch that loses a deadlock to another
broker's is rolled back by the database and committed again, whole."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from rentahal.store.group_commit import GroupCommitter


def _both_rows(first: int, second: int) -> Callable[[Connection], int]:
    """A write that bumps two rows, holding the first row's lock a moment before taking the
    second's: two of them in opposite orders deadlock."""

    def write(connection: Connection) -> int:
        connection.execute(text("UPDATE counts SET n = n + 1 WHERE id = :id"), {"id": first})
        connection.execute(text("SELECT pg_sleep(0.3)"))
        connection.execute(text("UPDATE counts SET n = n + 1 WHERE id = :id"), {"id": second})
        return first

    return write


async def test_a_batch_that_loses_a_deadlock_is_committed_again(fresh_pg_url: str) -> None:
    engine = create_async_engine(fresh_pg_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE counts (id int PRIMARY KEY, n int)"))
            await connection.execute(text("INSERT INTO counts VALUES (1, 0), (2, 0)"))
        one, other = GroupCommitter(engine), GroupCommitter(engine)
        try:
            done = await asyncio.gather(one.run(_both_rows(1, 2)), other.run(_both_rows(2, 1)))
        finally:
            await one.close()
            await other.close()
        assert sorted(done) == [1, 2]
        async with engine.connect() as connection:
            counts = (await connection.execute(text("SELECT n FROM counts ORDER BY id"))).all()
        assert [n for (n,) in counts] == [2, 2]  # each write counted once, none lost
    finally:
        await engine.dispose()
