"""Browser sessions and API keys. Only hashes of the secrets are stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, select, update

from rentahal.store.database import Database
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
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        async with self._db.session() as session:
            session.add(
                ApiKey(
                    user_id=user_id,
                    name=name,
                    prefix=key[:12],
                    key_hash=hash_secret(key),
                    scopes=scopes or ["*"],
                )
            )
            await session.commit()
        return key

    async def resolve_api_key(self, key: str) -> User | None:
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
            return user
