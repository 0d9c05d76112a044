"""Per-user OAuth grants (tokens the broker holds to read a user's Gmail) and the
authorizations in progress (PKCE), both encrypted at rest.

A row is useless without the broker's secret key: the tokens, their expiry, the granted
scope and the account's address are one Fernet token, made with a key derived from the
secret key by HKDF-SHA-256 under a purpose label, and bound to its row (user, provider), so a
row copied onto another user's does not open. Authorization states are stored as hashes, like
session tokens; their PKCE verifier is sealed the same way. A state is good once, for ten
minutes, and only for the user who started it.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from rentahal.store.credentials import hash_secret
from rentahal.store.database import Database, affected_rows
from rentahal.store.models import OAuthState, OAuthToken, utcnow

__all__ = [
    "MAX_PENDING_PER_USER",
    "STATE_TTL",
    "OAuthGrant",
    "OAuthTokenRepository",
    "PendingAuthorization",
    "TokenCipher",
]

STATE_TTL = timedelta(minutes=10)
MAX_PENDING_PER_USER = 5  # a user clicking "connect" over and over keeps only the newest
_PURPOSE = b"rentahal/oauth-tokens/v1"


class TokenCipher:
    """Seals small JSON records with a Fernet key derived from the broker's secret key."""

    def __init__(self, secret_key: str, *, purpose: bytes = _PURPOSE) -> None:
        """`purpose` keeps apart the keys derived for different records (OAuth tokens,
        federation peers' keys)."""
        if not secret_key:
            raise ValueError("the broker's secret key is empty")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
            secret_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, data: dict[str, Any], *, bound_to: str) -> str:
        payload = json.dumps({"to": bound_to, "data": data}, separators=(",", ":"))
        return self._fernet.encrypt(payload.encode()).decode("ascii")

    def open(self, sealed: str, *, bound_to: str) -> dict[str, Any] | None:
        """The record, or None if it was sealed with another key or for another row."""
        try:
            payload = json.loads(self._fernet.decrypt(sealed.encode("ascii")))
        except (InvalidToken, ValueError, UnicodeError):
            return None
        if not isinstance(payload, dict) or payload.get("to") != bound_to:
            return None
        data = payload.get("data")
        return data if isinstance(data, dict) else None

    def __repr__(self) -> str:
        return "TokenCipher(…)"


@dataclass(frozen=True, slots=True)
class OAuthGrant:
    """What the provider granted: the tokens (never in a repr), expiry, scope and account."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime | None
    scope: str = ""
    email: str | None = None

    def expires_within(self, margin: timedelta) -> bool:
        return self.expires_at is not None and self.expires_at - margin <= utcnow()

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    def to_record(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at.timestamp() if self.expires_at else None,
            "scope": self.scope,
            "email": self.email,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> OAuthGrant | None:
        access_token = record.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            return None
        expires = record.get("expires_at")
        refresh = record.get("refresh_token")
        email = record.get("email")
        return cls(
            access_token=access_token,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=(
                datetime.fromtimestamp(expires, UTC) if isinstance(expires, int | float) else None
            ),
            scope=str(record.get("scope") or ""),
            email=email if isinstance(email, str) and email else None,
        )


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """An authorization the user started: what the code exchange needs."""

    user_id: str
    provider: str
    code_verifier: str = field(repr=False)
    redirect_uri: str
    created_at: datetime


def _token_row(user_id: str, provider: str) -> str:
    return f"oauth_tokens:{user_id}:{provider}"


def _state_row(state_hash: str, user_id: str, provider: str) -> str:
    return f"oauth_states:{state_hash}:{user_id}:{provider}"


class OAuthTokenRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------------ grants

    async def save(
        self, user_id: str, provider: str, grant: OAuthGrant, cipher: TokenCipher
    ) -> None:
        """Keep `grant` for (user, provider), replacing any earlier one."""
        sealed = cipher.seal(grant.to_record(), bound_to=_token_row(user_id, provider))
        now = utcnow()
        replace = (
            update(OAuthToken)
            .where(OAuthToken.user_id == user_id, OAuthToken.provider == provider)
            .values(sealed=sealed, updated_at=now)
        )
        async with self._db.session() as session:
            if affected_rows(await session.execute(replace)) == 0:
                session.add(
                    OAuthToken(
                        user_id=user_id,
                        provider=provider,
                        sealed=sealed,
                        created_at=now,
                        updated_at=now,
                    )
                )
                try:
                    await session.commit()
                except IntegrityError:  # saved by a concurrent call in between: replace it
                    await session.rollback()
                    await session.execute(replace)
                    await session.commit()
                return
            await session.commit()

    async def get(self, user_id: str, provider: str, cipher: TokenCipher) -> OAuthGrant | None:
        """The grant, or None when there is none or it cannot be opened (another secret key)."""
        async with self._db.session() as session:
            row = await session.get(OAuthToken, (user_id, provider))
        if row is None:
            return None
        record = cipher.open(row.sealed, bound_to=_token_row(user_id, provider))
        return OAuthGrant.from_record(record) if record is not None else None

    async def exists(self, user_id: str, provider: str) -> bool:
        async with self._db.session() as session:
            return await session.get(OAuthToken, (user_id, provider)) is not None

    async def delete(self, user_id: str, provider: str) -> bool:
        async with self._db.session() as session:
            result = await session.execute(
                delete(OAuthToken).where(
                    OAuthToken.user_id == user_id, OAuthToken.provider == provider
                )
            )
            await session.commit()
            return affected_rows(result) > 0

    # ------------------------------------------------------- authorizations in progress

    async def begin_authorization(
        self,
        user_id: str,
        provider: str,
        *,
        code_verifier: str,
        redirect_uri: str,
        cipher: TokenCipher,
    ) -> str:
        """Record an authorization the user is starting; returns the `state` to send."""
        state = secrets.token_urlsafe(32)
        state_hash = hash_secret(state)
        now = utcnow()
        sealed = cipher.seal(
            {"code_verifier": code_verifier, "redirect_uri": redirect_uri},
            bound_to=_state_row(state_hash, user_id, provider),
        )
        async with self._db.session() as session:
            await session.execute(delete(OAuthState).where(OAuthState.created_at < now - STATE_TTL))
            older = await session.scalars(
                select(OAuthState.state_hash)
                .where(OAuthState.user_id == user_id)
                .order_by(OAuthState.created_at.desc())
                .offset(MAX_PENDING_PER_USER - 1)
            )
            stale = list(older)
            if stale:
                await session.execute(delete(OAuthState).where(OAuthState.state_hash.in_(stale)))
            session.add(
                OAuthState(
                    state_hash=state_hash,
                    user_id=user_id,
                    provider=provider,
                    sealed=sealed,
                    created_at=now,
                )
            )
            await session.commit()
        return state

    async def take_authorization(
        self, state: str, user_id: str, provider: str, cipher: TokenCipher
    ) -> PendingAuthorization | None:
        """Use up `state`: the pending authorization if `user_id` started it for `provider`
        less than `STATE_TTL` ago and nobody used it before; None otherwise. Someone else's
        state is left alone (its owner can still finish)."""
        if not state or len(state) > 256:
            return None
        state_hash = hash_secret(state)
        async with self._db.session() as session:
            row = await session.get(OAuthState, state_hash)
            if row is None or row.user_id != user_id or row.provider != provider:
                return None
            taken = await session.execute(
                delete(OAuthState).where(
                    OAuthState.state_hash == state_hash, OAuthState.user_id == user_id
                )
            )
            await session.commit()
        if affected_rows(taken) != 1 or row.created_at < utcnow() - STATE_TTL:
            return None  # used by a concurrent callback, or stale
        record = cipher.open(row.sealed, bound_to=_state_row(state_hash, user_id, provider))
        if record is None:
            return None
        verifier, redirect_uri = record.get("code_verifier"), record.get("redirect_uri")
        if not isinstance(verifier, str) or not isinstance(redirect_uri, str):
            return None
        return PendingAuthorization(
            user_id=user_id,
            provider=provider,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            created_at=row.created_at,
        )
