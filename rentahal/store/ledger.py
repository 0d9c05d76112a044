"""The credit ledger: append-only rows; a balance is the sum of a user's rows, kept on the
user's own row as the rows are added (so reading it costs the same however long the history).
And whose budget is enforced (their queries need credit).

Query charges and worker earnings are written by `QueryRepository` in the same transaction
that finishes the query (so a query is never done but unbilled); grants come from a sysop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, bindparam, insert, select, update

from rentahal.store.credential_cache import CredentialCache, UserFlags
from rentahal.store.database import Database
from rentahal.store.models import LedgerEntry, LedgerKind, User, utcnow

MICROS = 1_000_000  # micro-credits in a credit
_INSERT_ENTRY = insert(LedgerEntry)
_ADD_TO_BALANCE = (
    update(User)
    .where(User.id == bindparam("_user"))
    .values(balance=User.balance + bindparam("_amount"))
)


@dataclass(frozen=True, slots=True)
class Standing:
    banned: bool
    balance: int | None  # micro-credits, when the user's budget is enforced


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
    """Add ledger rows, and each to its user's balance, within the caller's transaction (a
    job's own, or a grant's)."""
    if not rows:
        return
    conn.execute(_INSERT_ENTRY, list(rows))
    added: defaultdict[object, int] = defaultdict(int)
    for row in rows:
        added[row["user_id"]] += cast(int, row["amount"])
    # Users in one order, so brokers adding to the same two balances cannot deadlock.
    changes = [{"_user": user, "_amount": added[user]} for user in sorted(added, key=str)]
    conn.execute(_ADD_TO_BALANCE, changes)


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
            return int(await session.scalar(select(User.balance).where(User.id == user_id)) or 0)

    async def standing(self, user_id: str, *, everyone: bool = False) -> Standing:
        """At submit: whether the user is banned (a ban a moment ago counts even for a
        request authenticated before it: the flags are kept in memory and dropped by the
        write that bans), and their balance if their budget is enforced (or `everyone`'s
        is) — read from the store, only then."""
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
        return Standing(banned=flags.banned, balance=await self.balance(user_id))

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
