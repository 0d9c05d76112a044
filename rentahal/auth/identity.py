"""Resolving a request or WebSocket to a user.

Browsers carry `rentahal_session`: a random token, signed with the broker's secret key so a
forged or tampered cookie is refused before any database lookup, and checked against the
sessions table (which holds only its hash) so it can expire and be revoked. Programs send
`Authorization: Bearer <API key>`. There is no other way in: no client-chosen ids, no
"first visitor is the sysop".

Guests are stored lazily. A new guest's cookie holds a token of its own form (`guest.…`) and
nothing is written: the guest's id is derived from the token, so it is the same on every
reconnect with that cookie, before and after it is stored. The user row and the session row
are written together when the guest first does something that needs them (`save`: a query, a
nickname, any REST call), so a flood of sockets or page loads that never ask anything leaves
no rows. Once a guest with that id is stored, only a live session makes the cookie good again:
a logged-out or replaced guest cookie is nobody, as before.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import Headers

from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.store import Role, Store, User, utcnow
from rentahal.store.users import unsaved_guest

BANNED_MESSAGE = "You are banned from this service."

SESSION_COOKIE = "rentahal_session"
# What an API key may be scoped to; "*" is everything but `worker` and `federation`, which
# only a sysop grants and only by name: a worker token lets a machine join the realm, a peer
# key lets another installation forward queries (`rentahal.federation`), nothing else.
Scope = Literal["chat", "vision", "imagine", "speech", "admin", "worker", "federation", "*"]
NAMED_ONLY_SCOPES = frozenset({"worker", "federation"})
QUERY_SCOPES = {"speech": "speech", "stt": "speech", "tts": "speech"}
GUEST_TOKEN_PREFIX = "guest."  # not in token_urlsafe's alphabet: no other token has it


def guest_id(token: str) -> str:
    """The id of the guest whose session token is `token`. A hash, so the id (which sysops see)
    tells nothing of the token, and the same token always names the same guest."""
    return hashlib.sha256(b"rentahal.guest:" + token.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    via: Literal["session", "api_key"]
    scopes: frozenset[str] = frozenset({"*"})  # a session may do all its user may
    key_id: str | None = None  # the API key used, if any (its own rate limit)
    client_ip: str | None = None  # where the request came from (its own rate limit)
    # A guest not stored yet: its session token, for `Authenticator.save` (None once stored).
    guest_token: str | None = field(default=None, repr=False)

    @property
    def is_stored(self) -> bool:
        return self.guest_token is None

    def seen_at(self, client_ip: str | None) -> Principal:
        """The same caller, with the address its request came from."""
        return replace(self, client_ip=client_ip)

    def allows(self, scope: str) -> bool:
        if scope in NAMED_ONLY_SCOPES:
            return scope in self.scopes
        return "*" in self.scopes or scope in self.scopes

    @property
    def is_peer_key(self) -> bool:
        """Another installation's key: good on the federation routes and nowhere else."""
        return self.scopes == {"federation"}

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

    async def authenticate(
        self, headers: Headers, cookies: dict[str, str], *, lazy: bool = False
    ) -> Principal | None:
        """The caller, None when it presents no valid credential, or a `ProtocolError`
        (`banned`) for a banned account: the one check every transport makes (REST, the
        OpenAI API, the bus, outbound workers, the Gmail callback), each answering it in its
        own way. `lazy` as for `from_headers`."""
        principal = await self.from_headers(headers, cookies, lazy=lazy)
        if principal is not None and principal.user.is_banned:
            raise ProtocolError(ErrorCode.BANNED, BANNED_MESSAGE)
        return principal

    async def from_headers(
        self, headers: Headers, cookies: dict[str, str], *, lazy: bool = False
    ) -> Principal | None:
        """The caller's identity, or None when it presents no valid credential.

        A guest not stored yet is stored now, unless `lazy`: then it comes as it is (not
        `is_stored`), and the caller stores it with `save` when it acts (the bus, the page)."""
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
            guest = await self._unsaved_guest(token)
            if guest is not None:
                return guest if lazy else await self.save(guest)
        return None

    async def _unsaved_guest(self, token: str) -> Principal | None:
        """The guest a guest token names, if it was never stored. A guest who was stored
        has a session row; without a live one (logged out, replaced, expired) it is nobody."""
        if not token.startswith(GUEST_TOKEN_PREFIX):
            return None
        user_id = guest_id(token)
        if await self._store.users.get(user_id) is not None:
            return None
        return Principal(unsaved_guest(user_id), "session", guest_token=token)

    def new_guest(self) -> NewSession:
        """A new guest: a cookie, and nothing stored until it acts (`save`)."""
        token = GUEST_TOKEN_PREFIX + secrets.token_urlsafe(32)
        principal = Principal(unsaved_guest(guest_id(token)), "session", guest_token=token)
        return NewSession(principal, self.sign(token))

    async def save(self, principal: Principal) -> Principal:
        """The same caller, stored: a guest not stored yet gets its user and session rows now.
        Raises `ProtocolError` (unauthorized) when its cookie ended meanwhile (a logout)."""
        if principal.guest_token is None:
            return principal
        user = await self._store.users.save_guest(
            principal.user.id, principal.guest_token, utcnow() + self.session_ttl
        )
        if user is None:
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED, "this guest session has ended; reload to start anew"
            )
        return replace(principal, user=user, guest_token=None)

    async def new_session(self, user: User) -> str:
        """A fresh browser session for `user`; returns the signed cookie value."""
        token = await self._store.credentials.create_session(user.id, self.session_ttl)
        return self.sign(token)

    async def end_session(self, cookies: dict[str, str]) -> None:
        cookie = cookies.get(SESSION_COOKIE)
        if cookie and (token := self._unsign(cookie)):
            await self._store.credentials.delete_session(token)
