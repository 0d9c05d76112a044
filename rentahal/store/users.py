"""Users: guests, nicknames, roles and bans."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from rentahal.store.database import Database, affected_rows
from rentahal.store.models import Role, User, new_id, utcnow


class NicknameTaken(Exception):
    """Another user already has this nickname."""


class UserRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, *, role: Role = Role.GUEST, nickname: str | None = None) -> User:
        """A new user; without a nickname it gets the seed's `user_xxxxxxxx` form."""
        user_id = new_id()
        user = User(id=user_id, nickname=nickname or f"user_{user_id[:8]}", role=role.value)
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

    async def touch(self, user_id: str) -> bool:
        return await self._update(user_id, last_seen_at=utcnow())

    async def _update(self, user_id: str, **values: object) -> bool:
        async with self._db.session() as session:
            result = await session.execute(update(User).where(User.id == user_id).values(**values))
            await session.commit()
            return affected_rows(result) > 0
