"""Who an API key names, and each user's standing, kept in memory so that a query's path
reads nothing from the store.

Every request with an API key used to read the key and its user from the store and write the
key's `last_used_at`, and every query read its user's ban and budget flags again (the
ledger's standing): under load, most of the broker's own work per query. Now each is read once
and then answered from here:

- an entry is dropped the moment what it says changes, by the repository that makes the
  change (the key revoked; its user banned, unbanned, renamed, registered or given another role
  or budget; idle guests swept), so a ban or a revocation holds on the very next request;
- a read that raced such a change is not kept (`generation`): it may say what was true before;
- in a cluster, each invalidation is also told to the other brokers (`announce`), whose
  caches drop the same entries;
- every entry also ends `ttl` seconds after it was read, which bounds how long a change made
  outside the brokers (a command run against the database) goes unseen;
- keys' usage stamps are kept here and written together, at most every `USAGE_FLUSH_SECONDS`
  (`CredentialRepository.flush_usage`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from rentahal.store.models import User

T = TypeVar("T")

TTL = 30.0  # seconds an entry is trusted without being read again
MAX_ENTRIES = 10_000  # the least recently used go first
USAGE_FLUSH_SECONDS = 30.0  # `last_used_at` is this exact, at worst


@dataclass(frozen=True, slots=True)
class UserFlags:
    """What a query's admission asks of its user every time (the ledger's standing)."""

    banned: bool
    budget_enforced: bool


@dataclass(frozen=True, slots=True)
class CachedCredential:
    """What an API key resolved to."""

    user: User
    scopes: tuple[str, ...]
    key_id: str


class CredentialCache:
    """API keys by the hash of their secret (the store's own key for them)."""

    def __init__(
        self,
        ttl: float = TTL,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedCredential]] = OrderedDict()
        self._flags: OrderedDict[str, tuple[float, UserFlags]] = OrderedDict()  # by user id
        self._used: dict[str, datetime] = {}  # key id → last use not written yet
        self.generation = 0  # counts invalidations; see `put`
        # Told of each invalidation made here, as ("user" | "key", id): a cluster's brokers
        # pass them on (`rentahal.cluster`).
        self.announce: Callable[[str, str], None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, secret_hash: str) -> CachedCredential | None:
        return self._fresh(self._entries, secret_hash)

    def put(self, secret_hash: str, credential: CachedCredential, *, read_in: int) -> None:
        """Keep what a read that began at generation `read_in` found, unless something was
        invalidated while it read (it may have read the old state)."""
        self._keep(self._entries, secret_hash, credential, read_in)

    def flags(self, user_id: str) -> UserFlags | None:
        return self._fresh(self._flags, user_id)

    def put_flags(self, user_id: str, flags: UserFlags, *, read_in: int) -> None:
        self._keep(self._flags, user_id, flags, read_in)

    def _fresh(self, entries: OrderedDict[str, tuple[float, T]], key: str) -> T | None:
        kept = entries.get(key)
        if kept is None:
            return None
        read_at, value = kept
        if self._clock() - read_at >= self._ttl:
            del entries[key]
            return None
        entries.move_to_end(key)
        return value

    def _keep(
        self, entries: OrderedDict[str, tuple[float, T]], key: str, value: T, read_in: int
    ) -> None:
        if read_in != self.generation:
            return
        entries[key] = (self._clock(), value)
        entries.move_to_end(key)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)

    def forget_user(self, user_id: str, *, announce: bool = True) -> None:
        """Every credential of the user, and its flags: its role, ban or name changed."""
        self._flags.pop(user_id, None)
        self._forget_where(lambda credential: credential.user.id == user_id)
        if announce and self.announce is not None:
            self.announce("user", user_id)

    def forget_key(self, key_id: str, *, announce: bool = True) -> None:
        self._forget_where(lambda credential: credential.key_id == key_id)
        if announce and self.announce is not None:
            self.announce("key", key_id)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._flags.clear()

    def _forget_where(self, matches: Callable[[CachedCredential], bool]) -> None:
        self.generation += 1
        for secret_hash in [h for h, (_, c) in self._entries.items() if matches(c)]:
            del self._entries[secret_hash]

    def mark_used(self, key_id: str, at: datetime) -> None:
        self._used[key_id] = at

    def take_usage(self) -> dict[str, datetime]:
        """The usage stamps not written yet, handed over to be written."""
        used, self._used = self._used, {}
        return used

    def return_usage(self, used: dict[str, datetime]) -> None:
        """Stamps whose write failed, kept for the next one (newer ones win)."""
        self._used = used | self._used
