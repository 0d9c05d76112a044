"""The credential cache's own rules: how long an entry is trusted, how many are kept, and that
a read racing an invalidation is not kept. (What it spares the store, and that every change
holds on the next request, is in test_store.py and test_accounts.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

from rentahal.store.credential_cache import CachedCredential, CredentialCache
from rentahal.store.models import User


def credential(user_id: str, key_id: str = "key") -> CachedCredential:
    return CachedCredential(User(id=user_id, nickname=user_id, role="user"), ("*",), key_id)


def test_an_entry_is_trusted_for_its_ttl_only() -> None:
    now = [0.0]
    cache = CredentialCache(ttl=30, clock=lambda: now[0])
    cache.put("h1", credential("u1"), read_in=cache.generation)
    now[0] = 29.9
    assert cache.get("h1") is not None
    now[0] = 30.0
    assert cache.get("h1") is None and len(cache) == 0


def test_the_least_recently_used_go_first() -> None:
    cache = CredentialCache(max_entries=3)
    for name in ("a", "b", "c"):
        cache.put(name, credential(name), read_in=cache.generation)
    assert cache.get("a") is not None  # now the most recently used
    cache.put("d", credential("d"), read_in=cache.generation)
    assert cache.get("b") is None
    assert all(cache.get(name) is not None for name in ("a", "c", "d"))


def test_a_read_that_raced_an_invalidation_is_not_kept() -> None:
    cache = CredentialCache()
    read_in = cache.generation  # a read begins…
    cache.forget_user("u1")  # …a ban lands while it reads…
    cache.put("h1", credential("u1"), read_in=read_in)  # …what it read may predate the ban
    assert cache.get("h1") is None
    cache.put("h1", credential("u1"), read_in=cache.generation)
    assert cache.get("h1") is not None


def test_forgetting_by_user_and_by_key_drops_only_theirs() -> None:
    cache = CredentialCache()
    cache.put("k1", credential("u1", "key1"), read_in=0)
    cache.put("k2", credential("u1", "key2"), read_in=0)
    cache.put("k4", credential("u1", "key4"), read_in=0)
    cache.put("k3", credential("u2", "key3"), read_in=0)
    cache.forget_key("key1")
    assert cache.get("k1") is None and cache.get("k2") is not None
    cache.forget_user("u1")
    assert [cache.get(h) is not None for h in ("k2", "k4", "k3")] == [False, False, True]


def test_usage_stamps_whose_write_failed_are_kept_and_newer_ones_win() -> None:
    cache = CredentialCache()
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    cache.mark_used("key1", early)
    cache.mark_used("key2", early)
    taken = cache.take_usage()
    assert taken == {"key1": early, "key2": early} and cache.take_usage() == {}
    cache.mark_used("key1", late)  # used again while the write failed
    cache.return_usage(taken)
    assert cache.take_usage() == {"key1": late, "key2": early}
