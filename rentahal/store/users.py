"""Users: guests, nicknames, roles and bans."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, case, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from rentahal.store.database import Database, affected_rows
from rentahal.store.models import Role, User, new_id, utcnow


class NicknameTaken(Exception):
    """Another user already has this nickname."""


class LastSysop(Exception):
    """The change would leave the realm without a sysop who can act (one not banned)."""


class NotRegistered(Exception):
    """Only an account with a password may become a sysop (a guest has only a cookie)."""


class UserRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

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
            nickname=nickname or f"user_{user_id[:8]}",
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

    async def set_banned(self, user_id: str, banned: bool) -> bool:
        """Returns False when no such user exists."""
        return await self._update(user_id, is_banned=banned)

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
            return affected_rows(result) > 0
