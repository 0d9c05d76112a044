"""The credit ledger: append-only rows; a balance is the sum of a user's rows. And whose
budget is enforced (their queries need credit).

Query charges and worker earnings are written by `QueryRepository` in the same transaction
that finishes the query (so a query is never done but unbilled); grants come from a sysop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Select, func, insert, select

from rentahal.store.credential_cache import CredentialCache, UserFlags
from rentahal.store.database import Database
from rentahal.store.models import LedgerEntry, LedgerKind, User, utcnow

MICROS = 1_000_000  # micro-credits in a credit
_INSERT_ENTRY = insert(LedgerEntry)


@dataclass(frozen=True, slots=True)
class Standing:
    banned: bool
    balance: int | None  # micro-credits, when the user's budget is enforced


def _balance_of(user_id: str) -> Select[int]:
    """The sum of a user's rows: their balance."""
    return select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.user_id == user_id
    )


def to_micros(credits: float) -> int:
    return round(credits * MICROS)


def entry_values(
    user_id: str,
    kind: LedgerKind,
    amount: int,
    *,
    query_id: str | None = None,
    worker_name: str | None = None,
    actor_id: str | None = None,
    memo: str = "",
) -> dict[str, object]:
    """One row, as the parameters of an insert (for a caller's own transaction)."""
    return {
        "user_id": user_id,
        "kind": kind.value,
        "amount": amount,
        "query_id": query_id,
        "worker_name": worker_name,
        "actor_id": actor_id,
        "memo": memo[:256],
        "created_at": utcnow(),
    }


def append(conn: Connection, rows: Sequence[dict[str, object]]) -> None:
    """Add ledger rows within the caller's transaction (a job's own, or a grant's)."""
    if rows:
        conn.execute(_INSERT_ENTRY, list(rows))


class LedgerRepository:
    def __init__(self, db: Database, users: CredentialCache) -> None:
        self._db = db
        self._users = users  # users' ban and budget flags, kept true by UserRepository

    async def grant(self, user_id: str, amount: int, *, actor_id: str, memo: str) -> None:
        """A sysop's credit (or, negative, debit) to a user."""
        row = entry_values(user_id, LedgerKind.GRANT, amount, actor_id=actor_id, memo=memo)
        async with self._db.engine.begin() as conn:
            await conn.run_sync(append, [row])

    async def balance(self, user_id: str) -> int:
        async with self._db.session() as session:
            return int(await session.scalar(_balance_of(user_id)) or 0)

    async def standing(self, user_id: str, *, everyone: bool = False) -> Standing:
        """At submit: whether the user is banned (a ban a moment ago counts even for a
        request authenticated before it: the flags are kept in memory and dropped by the
        write that bans), and their balance if their budget is enforced (or `everyone`'s
        is) — summed, from the store, only then."""
        flags = self._users.flags(user_id)
        if flags is None:
            read_in = self._users.generation
            async with self._db.session() as session:
                row = (
                    await session.execute(
                        select(User.is_banned, User.budget_enforced).where(User.id == user_id)
                    )
                ).first()
            if row is None:
                return Standing(banned=True, balance=None)  # gone: nothing to run for
            flags = UserFlags(banned=row.is_banned, budget_enforced=row.budget_enforced)
            self._users.put_flags(user_id, flags, read_in=read_in)
        if not (flags.budget_enforced or everyone):
            return Standing(banned=flags.banned, balance=None)
        async with self._db.session() as session:
            balance = int(await session.scalar(_balance_of(user_id)) or 0)
        return Standing(banned=flags.banned, balance=balance)

    async def entries(self, user_id: str, limit: int = 50) -> Sequence[LedgerEntry]:
        """A user's newest rows first."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.user_id == user_id)
                .order_by(LedgerEntry.id.desc())
                .limit(limit)
            )
            return rows.all()

    async def every_entry(self, batch: int = 1000) -> AsyncIterator[LedgerEntry]:
        """All rows, oldest first, a batch at a time (an export never loads the table)."""
        after = 0
        while True:
            async with self._db.session() as session:
                rows = (
                    await session.scalars(
                        select(LedgerEntry)
                        .where(LedgerEntry.id > after)
                        .order_by(LedgerEntry.id)
                        .limit(batch)
                    )
                ).all()
            for row in rows:
                yield row
            if len(rows) < batch:
                return
            after = rows[-1].id
