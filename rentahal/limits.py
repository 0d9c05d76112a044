"""Token buckets: how many requests a caller may make now, and how long to wait if none.

A bucket holds up to `capacity` tokens and gains `capacity` per `period` seconds, evenly; a
request takes one. So a caller may burst up to the capacity, then goes at the refill rate —
the shape people expect of "60 a minute". Buckets live in memory, by key; the least recently
used are forgotten beyond `max_keys`, so a flood of new keys cannot grow the broker's memory
(a forgotten bucket comes back full, which only ever errs towards letting a request in).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    capacity: float
    period: float  # seconds to refill from empty
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.capacity / self.period)
        self.updated = now

    def wait(self) -> float:
        """Seconds until a token is there (0: one is there now). Call after `refill`."""
        missing = 1.0 - self.tokens
        return 0.0 if missing <= 0 else missing * self.period / self.capacity


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

    def _bucket(self, limit: Limit, now: float) -> TokenBucket:
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
