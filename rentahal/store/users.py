"""Users: guests, nicknames, roles and bans."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, aliased

from rentahal.store.credential_cache import CredentialCache
from rentahal.store.credentials import hash_secret
from rentahal.store.database import Database, affected_rows
from rentahal.store.models import (
    ApiKey,
    LedgerEntry,
    OAuthToken,
    Query,
    Role,
    Session,
    User,
    Worker,
    new_id,
    utcnow,
)


class NicknameTaken(Exception):
    """Another user already has this nickname."""


class LastSysop(Exception):
    """The change would leave the realm without a sysop who can act (one not banned)."""


class NotRegistered(Exception):
    """Only an account with a password may become a sysop (a guest has only a cookie)."""


def guest_nickname(user_id: str) -> str:
    """The seed's `user_xxxxxxxx`: the nickname of a user who chose none."""
    return f"user_{user_id[:8]}"


def unsaved_guest(user_id: str) -> User:
    """A guest as it is before it is stored (`UserRepository.save_guest`), every field set."""
    now = utcnow()
    return User(
        id=user_id,
        nickname=guest_nickname(user_id),
        role=Role.GUEST.value,
        is_banned=False,
        created_at=now,
        last_seen_at=now,
        query_count=0,
        total_query_time=0.0,
        total_cost=0.0,
        password_hash=None,
        budget_enforced=False,
    )


class UserRepository:
    """Users. Every change to a stored user drops its credentials from the cache, whose
    resolved users would say otherwise (`CredentialCache`)."""

    def __init__(self, db: Database, credentials: CredentialCache) -> None:
        self._db = db
        self._credentials = credentials

    async def create(
        self,
        *,
        role: Role = Role.GUEST,
        nickname: str | None = None,
        password_hash: str | None = None,
    ) -> User:
        """A new user; without a nickname it gets the seed's `user_xxxxxxxx` form."""
        user_id = new_id()
        user = User(
            id=user_id,
            nickname=nickname or guest_nickname(user_id),
            role=role.value,
            password_hash=password_hash,
        )
        async with self._db.session() as session:
            session.add(user)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise NicknameTaken(user.nickname) from exc
        return user

    async def save_guest(
        self, user_id: str, session_token: str, expires_at: datetime
    ) -> User | None:
        """Store a guest that so far lived only in its cookie, with the cookie's session, both
        in one transaction. Returns the stored user, also when another connection of the same
        cookie stored it a moment before; None when a user with this id exists whose session
        this is not (the cookie was logged out or replaced): the cookie is over.

        The short nickname has only 32 bits of the id: on the rare clash the guest gets the
        whole id in it, which nobody can choose (longer than a chosen nickname may be by
        default)."""
        token_hash = hash_secret(session_token)
        for nickname in (guest_nickname(user_id), f"user_{user_id}"):
            async with self._db.session() as session:
                if await session.get(User, user_id) is not None:
                    break
                session.add(User(id=user_id, nickname=nickname, role=Role.GUEST.value))
                try:
                    await session.flush()  # the user before its session (the foreign key)
                    session.add(
                        Session(token_hash=token_hash, user_id=user_id, expires_at=expires_at)
                    )
                    await session.commit()
                except IntegrityError:
                    continue  # the nickname is taken, or the guest was stored meanwhile
            return await self.get(user_id)
        async with self._db.session() as session:
            ours = await session.get(Session, token_hash)
            if ours is None or ours.user_id != user_id:
                return None
            return await session.get(User, user_id)

    async def delete_idle_guests(self, *, seen_before: datetime) -> int:
        """Delete the guests last seen before `seen_before` who left nothing behind: no
        password, no ban (the sysop's record), no queries, credit, API keys, Gmail link or
        workers. Their sessions go with them. Returns how many."""

        def none_in(column: InstrumentedAttribute[Any]) -> ColumnElement[bool]:
            return ~exists().where(column == User.id)

        statement = delete(User).where(
            User.role == Role.GUEST.value,
            User.password_hash.is_(None),
            User.is_banned.is_(False),
            User.query_count == 0,
            User.last_seen_at < seen_before,
            none_in(Query.user_id),
            none_in(LedgerEntry.user_id),
            none_in(ApiKey.user_id),
            none_in(OAuthToken.user_id),
            none_in(Worker.owner_id),
        )
        async with self._db.session() as session:
            result = await session.execute(statement.execution_options(synchronize_session=False))
            await session.commit()
        if deleted := affected_rows(result):
            self._credentials.clear()  # which ones went is not known, and it is rare
        return deleted

    async def get(self, user_id: str) -> User | None:
        async with self._db.session() as session:
            return await session.get(User, user_id)

    async def get_by_nickname(self, nickname: str) -> User | None:
        async with self._db.session() as session:
            return await session.scalar(
                select(User).where(func.lower(User.nickname) == nickname.lower())
            )

    async def list(self, limit: int = 500) -> Sequence[User]:
        async with self._db.session() as session:
            rows = await session.scalars(select(User).order_by(User.created_at).limit(limit))
            return rows.all()

    async def set_nickname(self, user_id: str, nickname: str) -> None:
        async with self._db.session() as session:
            try:
                await session.execute(
                    update(User).where(User.id == user_id).values(nickname=nickname)
                )
                await session.commit()
            except IntegrityError as exc:
                raise NicknameTaken(nickname) from exc
        self._credentials.forget_user(user_id)

    async def set_banned(self, user_id: str, banned: bool) -> bool:
        """Returns False when no such user exists."""
        return await self._update(user_id, is_banned=banned)

    async def set_budget_enforced(self, user_id: str, enforced: bool) -> bool:
        """Whether the user's queries need credit (the ledger's rule)."""
        return await self._update(user_id, budget_enforced=enforced)

    async def set_role(self, user_id: str, role: Role) -> bool:
        return await self._update(user_id, role=role.value)

    async def register(self, user_id: str, nickname: str, password_hash: str) -> User | None:
        """Give an account without a password its nickname and password; a guest becomes a
        `user` (any other role stays). Its id, and so its history, stay. None when there is
        no such user or it has a password already (also when two registrations race)."""
        async with self._db.session() as session:
            try:
                result = await session.execute(
                    update(User)
                    .where(User.id == user_id, User.password_hash.is_(None))
                    .values(
                        nickname=nickname,
                        password_hash=password_hash,
                        role=case(
                            (User.role == Role.GUEST.value, Role.USER.value), else_=User.role
                        ),
                    )
                )
                await session.commit()
            except IntegrityError as exc:
                raise NicknameTaken(nickname) from exc
        self._credentials.forget_user(user_id)
        return await self.get(user_id) if affected_rows(result) else None

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        """Replace the stored hash (a rehash with stronger parameters, at login)."""
        return await self._update(user_id, password_hash=password_hash)

    async def change_role(self, user_id: str, role: Role) -> tuple[User, str] | None:
        """Give a user a role; returns the user as now stored and their previous role, or
        None when there is no such user. Raises `NotRegistered` for a sysop without a
        password and `LastSysop` for a demotion that would leave no sysop able to act.

        The checks are in the UPDATE itself, so they hold against concurrent changes; on
        PostgreSQL the live sysops' rows are locked first, so two sysops demoting each other
        at once cannot both succeed."""
        other = aliased(User)
        conditions: list[ColumnElement[bool]] = [User.id == user_id]
        if role == Role.SYSOP:
            conditions.append(or_(User.password_hash.is_not(None), User.role == Role.SYSOP.value))
        else:
            another_sysop = exists().where(
                other.role == Role.SYSOP.value,
                other.is_banned.is_(False),
                other.id != user_id,
            )
            conditions.append(or_(User.role != Role.SYSOP.value, another_sysop))
        async with self._db.session() as session:
            await session.execute(
                select(User.id)
                .where(User.role == Role.SYSOP.value, User.is_banned.is_(False))
                .with_for_update()
            )
            before = await session.get(User, user_id)
            if before is None:
                return None
            previous = before.role
            result = await session.execute(
                update(User)
                .where(*conditions)
                .values(role=role.value)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
        self._credentials.forget_user(user_id)
        user = await self.get(user_id)
        if user is None:
            return None
        if not affected_rows(result):
            raise NotRegistered(user_id) if role == Role.SYSOP else LastSysop(user_id)
        return user, previous

    async def touch(self, user_id: str) -> bool:
        return await self._update(user_id, last_seen_at=utcnow())

    async def _update(self, user_id: str, **values: object) -> bool:
        async with self._db.session() as session:
            result = await session.execute(update(User).where(User.id == user_id).values(**values))
            await session.commit()
        self._credentials.forget_user(user_id)
        return affected_rows(result) > 0
