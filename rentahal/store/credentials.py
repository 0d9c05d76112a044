"""Browser sessions and API keys. Only hashes of the secrets are stored.

An API key, once read, is answered from a `CredentialCache` (see there for why, and how it
stays true); revoking one drops it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Sequence
from datetime import timedelta

import structlog
from sqlalchemy import bindparam, delete, select, update

from rentahal.store.credential_cache import USAGE_FLUSH_SECONDS, CachedCredential, CredentialCache
from rentahal.store.database import Database, affected_rows
from rentahal.store.models import ApiKey, Session, User, utcnow

log = structlog.get_logger(__name__)

API_KEY_PREFIX = "rah_"


def hash_secret(value: str) -> str:
    """SHA-256 is right here: the secrets are 256-bit random, so there is nothing to brute-force."""
    return hashlib.sha256(value.encode()).hexdigest()


class CredentialRepository:
    def __init__(self, db: Database, cache: CredentialCache) -> None:
        self._db = db
        self._cache = cache
        self._usage_flush: asyncio.TimerHandle | None = None
        self._usage_writes: set[asyncio.Task[None]] = set()

    async def create_session(self, user_id: str, ttl: timedelta) -> str:
        token = secrets.token_urlsafe(32)
        async with self._db.session() as session:
            session.add(
                Session(token_hash=hash_secret(token), user_id=user_id, expires_at=utcnow() + ttl)
            )
            await session.commit()
        return token

    async def resolve_session(self, token: str, ttl: timedelta) -> User | None:
        """The session's user if the session is alive; renews it (sessions slide while used).
        Read from the store each time: a browser authenticates once per socket, and a
        session's expiry is the store's to say."""
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
        key_hash = hash_secret(key)
        cached = self._cache.get(key_hash)
        if cached is None:
            read_in = self._cache.generation
            async with self._db.session() as session:
                api_key = await session.scalar(
                    select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
                )
                user = await session.get(User, api_key.user_id) if api_key else None
            if api_key is None or user is None:
                return None
            cached = CachedCredential(user, tuple(api_key.scopes), api_key.id)
            self._cache.put(key_hash, cached, read_in=read_in)
        self._mark_used(cached.key_id)
        return cached.user, list(cached.scopes), cached.key_id

    def _mark_used(self, key_id: str) -> None:
        self._cache.mark_used(key_id, utcnow())
        if self._usage_flush is None:
            loop = asyncio.get_running_loop()
            self._usage_flush = loop.call_later(USAGE_FLUSH_SECONDS, self._flush_later)

    def _flush_later(self) -> None:
        self._usage_flush = None
        task = asyncio.create_task(self.flush_usage(), name="api-key-usage")
        self._usage_writes.add(task)
        task.add_done_callback(self._usage_writes.discard)

    async def flush_usage(self) -> None:
        """Write the keys' usage stamps gathered since the last time, in one transaction.
        A failed write keeps them for the next (they say when a key was last used, nothing
        depends on them being on time)."""
        used = self._cache.take_usage()
        if not used:
            return
        statement = (
            update(ApiKey.__table__)  # type: ignore[arg-type]
            .where(ApiKey.__table__.c.id == bindparam("key_id"))
            .values(last_used_at=bindparam("used_at"))
        )
        try:
            async with self._db.engine.begin() as connection:
                await connection.execute(
                    statement, [{"key_id": k, "used_at": at} for k, at in used.items()]
                )
        except Exception as exc:  # an outage is reported by StoreHealth; no traceback here
            self._cache.return_usage(used)
            log.info("api_keys.usage_not_written", keys=len(used), error=str(exc)[:200])

    async def close(self) -> None:
        """Write what is pending; the store closes after."""
        if self._usage_flush is not None:
            self._usage_flush.cancel()
            self._usage_flush = None
        for task in list(self._usage_writes):
            with contextlib.suppress(Exception):
                await task
        await self.flush_usage()

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
        self._cache.forget_key(key_id)
        return affected_rows(result) > 0
