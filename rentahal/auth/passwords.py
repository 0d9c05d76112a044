"""Passwords, hashed with argon2id (SPEC §9).

`argon2-cffi`'s defaults are RFC 9106's low-memory profile: 64 MiB and three passes, about a
third of a second of one core. That work must never run on the event loop, so the async
functions here run it in a worker thread, and no more than a few at once: a burst of logins
waits its turn instead of taking every core and gigabytes of memory.
"""

from __future__ import annotations

import os

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 256

_hasher = PasswordHasher()
_limiter: anyio.CapacityLimiter | None = None
_dummy_hash: str | None = None


def hash_password(password: str) -> str:
    """An argon2id hash (`$argon2id$v=19$m=…`) with its own random salt. Blocking."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches `password_hash`; a damaged hash matches nothing. Blocking."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def _slots() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(max(1, min(4, os.cpu_count() or 1)))
    return _limiter


async def hash_password_async(password: str) -> str:
    return await anyio.to_thread.run_sync(hash_password, password, limiter=_slots())


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """Verify in a worker thread. With no hash (no such user, or one without a password) the
    same work is done against a throwaway hash, and the answer is False: how long a login
    takes does not tell whether the nickname exists."""
    global _dummy_hash
    if password_hash is None:
        if _dummy_hash is None:
            _dummy_hash = await hash_password_async(os.urandom(16).hex())
        await anyio.to_thread.run_sync(verify_password, _dummy_hash, password, limiter=_slots())
        return False
    return await anyio.to_thread.run_sync(
        verify_password, password_hash, password, limiter=_slots()
    )
