"""Token buckets: how many requests a caller may make now, and how long to wait if none; and
connection slots: how many connections a room holds open, in all and per client address.

A bucket holds up to `capacity` tokens and gains `capacity` per `period` seconds, evenly; a
request takes one. So a caller may burst up to the capacity, then goes at the refill rate —
the shape people expect of "60 a minute". Buckets live in memory, by key (in a cluster,
in Redis: `rentahal.cluster.rate_limits`). A forgotten bucket
comes back full, so a bucket that has had time to refill carries nothing worth keeping: those
are forgotten as they go (least recently used first), and beyond `max_keys` the least recently
used are forgotten anyway, so neither a flood of new keys nor a long uptime grows the broker's
memory (forgetting only ever errs towards letting a request in).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(slots=True)
class TokenBucket:
    capacity: float
    period: float  # seconds to refill from empty
    tokens: float
    updated: float

    def full_by(self, now: float) -> bool:
        """Whether it has refilled by `now` (then it is as good as forgotten)."""
        return now - self.updated >= self.period

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.capacity / self.period)
        self.updated = now

    def wait(self) -> float:
        """Seconds until a token is there (0: one is there now). Call after `refill`."""
        missing = 1.0 - self.tokens
        return 0.0 if missing <= 0 else missing * self.period / self.capacity


class Buckets(Protocol):
    """Token buckets as the callers use them: `RateLimiter` in one process, and in a
    cluster `rentahal.cluster.rate_limits.RedisBuckets`, shared by every broker."""

    async def take(self, limits: Sequence[Limit]) -> float:
        """`RateLimiter.acquire`: a token from each limit's bucket and 0, or none and the
        seconds until each has one."""
        ...


@dataclass(frozen=True, slots=True)
class Limit:
    key: str  # e.g. "user:<id>", "ip:127.0.0.1"
    capacity: float  # requests per `period`; 0 or less: no limit
    period: float = 60.0


class RateLimiter:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def acquire(self, limits: Sequence[Limit]) -> float:
        """Take a token from every limit's bucket and return 0, or, if any is empty, take
        none and return the seconds until all of them have one."""
        now = self._clock()
        buckets = [self._bucket(limit, now) for limit in limits if limit.capacity > 0]
        wait = max((bucket.wait() for bucket in buckets), default=0.0)
        if wait == 0.0:
            for bucket in buckets:
                bucket.tokens -= 1.0
        return wait

    async def take(self, limits: Sequence[Limit]) -> float:
        """`acquire`, as a `Buckets`."""
        return self.acquire(limits)

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, limit: Limit, now: float) -> TokenBucket:
        self._forget_refilled(now)
        bucket = self._buckets.get(limit.key)
        if bucket is None or (bucket.capacity, bucket.period) != (limit.capacity, limit.period):
            bucket = TokenBucket(limit.capacity, limit.period, limit.capacity, now)
            self._buckets[limit.key] = bucket
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            bucket.refill(now)
        self._buckets.move_to_end(limit.key)
        return bucket

    def _forget_refilled(self, now: float, at_most: int = 8) -> None:
        """Forget a few of the least recently used buckets that have refilled by now: a few
        per request keeps up with any rate of new keys, at a bounded cost per request."""
        for _ in range(at_most):
            oldest = next(iter(self._buckets.values()), None)
            if oldest is None or not oldest.full_by(now):
                return
            self._buckets.popitem(last=False)


class SubmissionWindows:
    """Each user's latest submissions within a sliding window (a day, for daily quotas), in
    memory, so that a quota is checked without a store read per query.

    A user's window is filled once from the store (`fill`, the caller's read) and kept up to
    date by `record`; only the latest `keep` submissions matter for a quota of `keep`, so no
    more are kept. Windows whose newest submission has aged out are forgotten as they go,
    and beyond `max_users` the least recently used are (filled again from the store if that
    user comes back), so memory stays bounded whatever the number of users.
    """

    def __init__(
        self, span: float, *, clock: Callable[[], float] = time.time, max_users: int = 100_000
    ) -> None:
        self.span = span
        self._clock = clock
        self._max_users = max_users
        self._windows: OrderedDict[str, deque[float]] = OrderedDict()

    def known(self, user_id: str, keep: int) -> bool:
        """Whether the user's window is here, filled for a quota of `keep` (a role changed
        since is filled again)."""
        window = self._windows.get(user_id)
        return window is not None and window.maxlen == keep

    def fill(self, user_id: str, times: Sequence[float], keep: int) -> None:
        """The user's submissions in the window as the store has them (oldest first), for a
        quota of `keep` (at least 1)."""
        self._windows[user_id] = deque(times[-keep:], maxlen=keep)
        self._windows.move_to_end(user_id)
        while len(self._windows) > self._max_users:
            self._windows.popitem(last=False)

    def used(self, user_id: str) -> tuple[int, float | None]:
        """How many of the kept submissions are within the window, and when the oldest of
        them was (None if none)."""
        now = self._clock()
        window = self._windows.get(user_id)
        if window is None:
            return 0, None
        self._windows.move_to_end(user_id)
        self._forget_aged(now, spare=user_id)
        while window and window[0] <= now - self.span:
            window.popleft()
        return len(window), (window[0] if window else None)

    def record(self, user_id: str) -> None:
        """One more submission now, for a user whose window is known."""
        if (window := self._windows.get(user_id)) is not None:
            window.append(self._clock())

    def _forget_aged(self, now: float, *, spare: str, at_most: int = 8) -> None:
        """Forget a few least recently used windows with nothing left in the span (not
        `spare`'s, the one being asked about): a few per call keeps up with any number of
        users, at a bounded cost per call."""
        for _ in range(at_most):
            user_id, window = next(iter(self._windows.items()), (spare, None))
            if user_id == spare or (window and window[-1] > now - self.span):
                return
            self._windows.popitem(last=False)


# Which limit a connection went over: its room's, or its client address's share of it.
Over = Literal["room", "key"]


class ConnectionSlots:
    """The connections one room holds open: at most `limit` in all and `per_key` from one key
    (a client address; 0: no such limit).

    `take` always counts the connection and says whether it was one too many, so the caller
    may refuse it, or let it in regardless (a sysop), and gives it back with `release` either
    way. Counts live only while their connections do: an address with none open is forgotten.
    """

    def __init__(self, limit: int, *, per_key: int = 0) -> None:
        self.limit = limit
        self.per_key = per_key
        self.open = 0
        self._by_key: dict[str, int] = {}

    def take(self, key: str | None) -> Over | None:
        """Count one more connection from `key`; None if it is within the limits, else which
        limit it went over."""
        held = self._by_key.get(key, 0) if key is not None else 0
        self.open += 1
        if key is not None:
            self._by_key[key] = held + 1
        if self.open > self.limit:
            return "room"
        if self.per_key and held >= self.per_key:
            return "key"
        return None

    def release(self, key: str | None) -> None:
        """A connection counted by `take` ended."""
        self.open -= 1
        if key is not None:
            held = self._by_key.pop(key, 0) - 1
            if held > 0:
                self._by_key[key] = held

    def held_by(self, key: str) -> int:
        return self._by_key.get(key, 0)

    @property
    def keys(self) -> int:
        """How many addresses have connections open."""
        return len(self._by_key)
