"""Resolving a request or WebSocket to a user.

Browsers carry `rentahal_session`: a random token, signed with the broker's secret key so a
forged or tampered cookie is refused before any database lookup, and checked against the
sessions table (which holds only its hash) so it can expire and be revoked. Programs send
`Authorization: Bearer <API key>`. There is no other way in: no client-chosen ids, no
"first visitor is the sysop".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import Headers

from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.store import Role, Store, User

SESSION_COOKIE = "rentahal_session"
# What an API key may be scoped to; "*" is everything but `worker`, which only a sysop
# grants and only by name: a worker token lets a machine join the realm, nothing else.
Scope = Literal["chat", "vision", "imagine", "speech", "admin", "worker", "*"]
QUERY_SCOPES = {"speech": "speech", "stt": "speech", "tts": "speech"}


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    via: Literal["session", "api_key"]
    scopes: frozenset[str] = frozenset({"*"})  # a session may do all its user may
    key_id: str | None = None  # the API key used, if any (its own rate limit)
    client_ip: str | None = None  # where the request came from (its own rate limit)

    def seen_at(self, client_ip: str | None) -> Principal:
        """The same caller, with the address its request came from."""
        return replace(self, client_ip=client_ip)

    def allows(self, scope: str) -> bool:
        if scope == "worker":
            return scope in self.scopes
        return "*" in self.scopes or scope in self.scopes

    @property
    def is_sysop(self) -> bool:
        """A sysop acting with the `admin` scope (a narrower key cannot act as sysop)."""
        return self.user.role == Role.SYSOP.value and self.allows("admin")

    def check_query_scope(self, query_type: str) -> None:
        """Refuse a query its key is not scoped for."""
        scope = QUERY_SCOPES.get(query_type, query_type)
        if not self.allows(scope):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"this API key may not make {scope} queries")


@dataclass(frozen=True, slots=True)
class NewSession:
    """A guest session just made; the caller must set `cookie` on its response."""

    principal: Principal
    cookie: str


class Authenticator:
    def __init__(self, store: Store, secret_key: str, session_ttl: int) -> None:
        self._store = store
        self._signer = URLSafeSerializer(secret_key, salt="rentahal.session")
        self.session_ttl = timedelta(seconds=session_ttl)

    def sign(self, token: str) -> str:
        return self._signer.dumps(token)

    def _unsign(self, cookie: str) -> str | None:
        if len(cookie) > 512:
            return None
        try:
            token = self._signer.loads(cookie)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None

    async def from_headers(self, headers: Headers, cookies: dict[str, str]) -> Principal | None:
        """The caller's identity, or None when it presents no valid credential."""
        authorization = headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "bearer" and credential:
            resolved = await self._store.credentials.resolve_api_key_scoped(credential.strip())
            if resolved is None:
                return None
            user, scopes, key_id = resolved
            return Principal(user, "api_key", frozenset(scopes), key_id)
        cookie = cookies.get(SESSION_COOKIE)
        if cookie and (token := self._unsign(cookie)):
            owner = await self._store.credentials.resolve_session(token, self.session_ttl)
            if owner is not None:
                return Principal(owner, "session")
        return None

    async def new_guest(self) -> NewSession:
        user = await self._store.users.create(role=Role.GUEST)
        return NewSession(Principal(user, "session"), await self.new_session(user))

    async def new_session(self, user: User) -> str:
        """A fresh browser session for `user`; returns the signed cookie value."""
        token = await self._store.credentials.create_session(user.id, self.session_ttl)
        return self.sign(token)

    async def end_session(self, cookies: dict[str, str]) -> None:
        cookie = cookies.get(SESSION_COOKIE)
        if cookie and (token := self._unsign(cookie)):
            await self._store.credentials.delete_session(token)
