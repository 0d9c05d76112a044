"""Throttling password guessing: so many failed logins per client address and per nickname
in a sliding window, then a lockout until the oldest of them ages out.

Small and in-process on purpose: a dict of recent failure times per key, each list at most
`max_failures` long, expired keys pruned as it goes, and at most `max_keys` keys (the least
recently failed go first), so a flood of attempts from many addresses or at many names cannot
grow it without bound. An attempt is counted when it starts, not when its (slow) password
check ends, so a burst of parallel guesses cannot slip in before the first one fails.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

MAX_FAILURES = 5
WINDOW = 300.0  # seconds
MAX_KEYS = 50_000


def ip_key(address: str) -> str:
    return f"ip:{address}"


def nickname_key(nickname: str) -> str:
    return f"nick:{nickname.strip().lower()}"


class LoginLimiter:
    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def attempt(self, keys: Iterable[str]) -> float | None:
        """Start a login attempt. If any key is locked out, returns the seconds until it is
        free (and counts nothing); else counts the attempt as a failure against every key
        (`succeeded` takes it back) and returns None."""
        now = self._clock()
        keys = list(keys)
        wait = max((self._locked_for(key, now) for key in keys), default=0.0)
        if wait > 0:
            return wait
        for key in keys:
            self._record(key, now)
        return None

    def succeeded(self, *, forget: Iterable[str] = (), forgive: Iterable[str] = ()) -> None:
        """The attempt was right: the `forget` keys start afresh (the nickname), the `forgive`
        keys lose just this attempt (the address, which may still be guessing elsewhere)."""
        for key in forget:
            self._failures.pop(key, None)
        for key in forgive:
            times = self._failures.get(key)
            if times:
                times.pop()
                if not times:
                    del self._failures[key]

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again (0 when it may now)."""
        return self._locked_for(key, self._clock())

    def _locked_for(self, key: str, now: float) -> float:
        times = self._failures.get(key)
        if times is None:
            return 0.0
        self._expire(key, times, now)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def _expire(self, key: str, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            self._failures.pop(key, None)

    def _record(self, key: str, now: float) -> None:
        times = self._failures.pop(key, None)
        if times is None:
            times = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures[key] = times  # now the most recent
        if len(self._failures) > self.max_keys:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop every expired key; if still too many, the least recently failed, down to
        nine tenths of the limit so that the next scan is many failures away."""
        for key, times in list(self._failures.items()):
            self._expire(key, times, now)
        while len(self._failures) > self.max_keys * 9 // 10:
            self._failures.popitem(last=False)
