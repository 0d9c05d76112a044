"""Browser sessions and API keys. Only hashes of the secrets are stored."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, select, update

from rentahal.store.database import Database, affected_rows
from rentahal.store.models import ApiKey, Session, User, utcnow

API_KEY_PREFIX = "rah_"


def hash_secret(value: str) -> str:
    """SHA-256 is right here: the secrets are 256-bit random, so there is nothing to brute-force."""
    return hashlib.sha256(value.encode()).hexdigest()


class CredentialRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_session(self, user_id: str, ttl: timedelta) -> str:
        token = secrets.token_urlsafe(32)
        async with self._db.session() as session:
            session.add(
                Session(token_hash=hash_secret(token), user_id=user_id, expires_at=utcnow() + ttl)
            )
            await session.commit()
        return token

    async def resolve_session(self, token: str, ttl: timedelta) -> User | None:
        """The session's user if the session is alive; renews it (sessions slide while used)."""
        token_hash = hash_secret(token)
        now = utcnow()
        async with self._db.session() as session:
            row = await session.get(Session, token_hash)
            if row is None or row.expires_at <= now:
                return None
            user = await session.get(User, row.user_id)
            # Renew only when a tenth of the lifetime has passed, to spare a write per request.
            if row.expires_at - now < ttl * 0.9:
                row.expires_at = now + ttl
                await session.commit()
            return user

    async def delete_session(self, token: str) -> None:
        async with self._db.session() as session:
            await session.execute(delete(Session).where(Session.token_hash == hash_secret(token)))
            await session.commit()

    async def create_api_key(
        self, user_id: str, *, name: str = "default", scopes: list[str] | None = None
    ) -> str:
        """A new key for `user_id`; the plain key is returned once and never stored."""
        _, key = await self.issue_api_key(user_id, name=name, scopes=scopes)
        return key

    async def issue_api_key(
        self, user_id: str, *, name: str = "default", scopes: list[str] | None = None
    ) -> tuple[ApiKey, str]:
        """Like `create_api_key`, with the stored row (id, prefix, scopes) as well."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            user_id=user_id,
            name=name,
            prefix=key[:12],
            key_hash=hash_secret(key),
            scopes=scopes or ["*"],
        )
        async with self._db.session() as session:
            session.add(row)
            await session.commit()
        return row, key

    async def resolve_api_key(self, key: str) -> User | None:
        resolved = await self.resolve_api_key_scoped(key)
        return resolved[0] if resolved else None

    async def resolve_api_key_scoped(self, key: str) -> tuple[User, list[str], str] | None:
        """The key's owner, scopes and id, for a live (unrevoked) key."""
        if not key.startswith(API_KEY_PREFIX) or len(key) > 128:
            return None
        async with self._db.session() as session:
            api_key = await session.scalar(
                select(ApiKey).where(
                    ApiKey.key_hash == hash_secret(key), ApiKey.revoked_at.is_(None)
                )
            )
            if api_key is None:
                return None
            await session.execute(
                update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=utcnow())
            )
            user = await session.get(User, api_key.user_id)
            await session.commit()
            return (user, list(api_key.scopes), api_key.id) if user else None

    async def list_api_keys(self, user_id: str) -> Sequence[ApiKey]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at)
            )
            return rows.all()

    async def revoke_api_key(self, key_id: str, *, owner_id: str | None) -> bool:
        """Revoke a key (only the owner's, unless `owner_id` is None: a sysop)."""
        statement = update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        if owner_id is not None:
            statement = statement.where(ApiKey.user_id == owner_id)
        async with self._db.session() as session:
            result = await session.execute(statement.values(revoked_at=utcnow()))
            await session.commit()
            return affected_rows(result) > 0
