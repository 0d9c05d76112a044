"""Registered accounts: registration (a guest keeps their id and history) and password login.

Login answers a wrong password and an unknown nickname alike: the same error, and the same
argon2 work (against a throwaway hash when there is no password to check), so neither the
reply nor its timing tells which nicknames exist. Failed logins are throttled per client
address and per nickname (`rentahal.auth.login_limits`).
"""

from __future__ import annotations

import math

import structlog

from rentahal.auth.identity import BANNED_MESSAGE
from rentahal.auth.login_limits import LoginLimiter, ip_key, nickname_key
from rentahal.auth.nicknames import TAKEN, check_nickname
from rentahal.auth.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    hash_password_async,
    needs_rehash,
    verify_password_async,
)
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.limits import Buckets, Limit, RateLimiter
from rentahal.store import NicknameTaken, Role, Store, User

log = structlog.get_logger(__name__)

WRONG_CREDENTIALS = "wrong nickname or password"
ALREADY_REGISTERED = "this account is registered already: log in instead"


class Accounts:
    def __init__(
        self,
        store: Store,
        max_nickname_chars: int,
        limiter: LoginLimiter | None = None,
        *,
        registrations_per_hour: float = 0,
        registrations: Buckets | None = None,
    ) -> None:
        self._store = store
        self._max_nickname_chars = max_nickname_chars
        self.limiter = limiter or LoginLimiter()
        # Each registration costs an argon2 hash and makes an account: so many an hour per
        # client address (0: no limit).
        self._registrations = registrations or RateLimiter()
        self._registrations_per_hour = registrations_per_hour

    async def register(
        self, caller: User | None, nickname: str, password: str, client_ip: str | None = None
    ) -> User:
        """Give `caller` (a guest, or any account without a password) a nickname and a
        password, keeping their id; with no caller, a new `user`. Raises `ProtocolError`."""
        check_nickname(nickname, self._max_nickname_chars)
        check_password(password)
        limit = Limit(ip_key(client_ip or "unknown"), self._registrations_per_hour, 3600.0)
        if (wait := await self._registrations.take([limit])) > 0:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"too many registrations from your address: try again in {math.ceil(wait)} s",
                retry_after=round(wait, 3),
            )
        if caller is not None and caller.is_registered:
            raise ProtocolError(ErrorCode.CONFLICT, ALREADY_REGISTERED)
        users = self._store.users
        holder = await users.get_by_nickname(nickname)
        if holder is not None and (caller is None or holder.id != caller.id):
            raise ProtocolError(ErrorCode.CONFLICT, TAKEN)  # before the costly hash
        password_hash = await hash_password_async(password)
        try:
            if caller is None:
                user = await users.create(
                    role=Role.USER, nickname=nickname, password_hash=password_hash
                )
            else:
                registered = await users.register(caller.id, nickname, password_hash)
                if registered is None:
                    raise ProtocolError(ErrorCode.CONFLICT, ALREADY_REGISTERED)
                user = registered
        except NicknameTaken:
            raise ProtocolError(ErrorCode.CONFLICT, TAKEN) from None
        log.info("account.registered", user_id=user.id, was_guest=caller is not None)
        return user

    async def login(self, nickname: str, password: str, client_ip: str | None) -> User:
        """The account these credentials open, or `ProtocolError`: `rate_limited` (with
        `retry_after`) while the address or the nickname is locked out, even for the right
        password; `unauthorized` for a wrong nickname or password; `banned`."""
        keys = [ip_key(client_ip or "unknown"), nickname_key(nickname)]
        wait = self.limiter.attempt(keys)
        if wait is not None:
            log.info("account.login_throttled", client_ip=client_ip)
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"too many failed logins: try again in {math.ceil(wait)} s",
                retry_after=round(wait, 3),
            )
        user = await self._store.users.get_by_nickname(nickname.strip())
        # No such user, one without a password, or a password no account can have: the
        # same work, against the throwaway hash, and the same answer.
        usable = user is not None and len(password) <= MAX_LENGTH
        password_hash = user.password_hash if user is not None and usable else None
        if not await verify_password_async(password_hash, password[:MAX_LENGTH]) or user is None:
            log.info("account.login_failed", client_ip=client_ip)
            raise ProtocolError(ErrorCode.UNAUTHORIZED, WRONG_CREDENTIALS)
        self.limiter.succeeded(forget=keys[1:], forgive=keys[:1])
        if user.is_banned:
            raise ProtocolError(ErrorCode.BANNED, BANNED_MESSAGE)
        if password_hash is not None and needs_rehash(password_hash):
            await self._store.users.set_password_hash(user.id, await hash_password_async(password))
        log.info("account.logged_in", user_id=user.id)
        return user


def check_password(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ProtocolError(
            ErrorCode.INVALID, f"a password is {MIN_LENGTH} to {MAX_LENGTH} characters"
        )
