"""Retrying with exponential backoff.

The developer guide's retry helper re-awaited one coroutine object, which Python forbids
after its first await; a retry must make a *fresh* awaitable per attempt, so everything here
takes a factory (`lambda: client.chat("hi")`), never a coroutine. The defaults are the
guide's: 3 retries after the first try, waiting 1 s, 2 s, 4 s, only on transient trouble
(connection errors and timeouts). The sleep is injectable so tests need not wait.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from rentahal.client.errors import is_transient

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays that start at `initial` seconds and grow by `multiplier`, capped at `maximum`.

    `jitter` spreads each delay by up to that fraction either way, so many clients that lost
    the broker at the same moment do not all come back in the same instant.
    """

    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float | None = None
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("need initial >= 0, multiplier >= 1 and 0 <= jitter < 1")

    def delays(self) -> Iterator[float]:
        """An endless sequence of delays."""
        delay = self.initial
        while True:
            capped = delay if self.maximum is None else min(delay, self.maximum)
            if self.jitter:
                capped *= 1 + random.uniform(-self.jitter, self.jitter)
            yield capped
            delay *= self.multiplier


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to try again.

    `retry_if` decides which exceptions are worth another attempt; anything else propagates
    at once, as does the last failure when the retries are used up (with a note saying so).
    """

    retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    retry_if: Callable[[BaseException], bool] = is_transient
    sleep: Sleep = asyncio.sleep

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")

    async def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Await `factory()`, and again after a delay while it fails transiently."""
        if inspect.isawaitable(factory):
            raise TypeError(
                "retry needs a factory that makes a new awaitable per attempt "
                "(e.g. `lambda: client.chat('hi')`), not an awaitable: one cannot be awaited twice"
            )
        delays = self.backoff.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await factory()
            except Exception as exc:
                if attempt > self.retries or not self.retry_if(exc):
                    if attempt > 1:
                        exc.add_note(f"gave up after {attempt} attempts")
                    raise
                await self.sleep(next(delays))

    def with_retry_if(self, retry_if: Callable[[BaseException], bool]) -> RetryPolicy:
        """The same policy with another test for what is worth retrying."""
        return RetryPolicy(self.retries, self.backoff, retry_if, self.sleep)


async def retry(
    factory: Callable[[], Awaitable[T]],
    *,
    retries: int = 3,
    initial_delay: float = 1.0,
    multiplier: float = 2.0,
    max_delay: float | None = None,
    retry_if: Callable[[BaseException], bool] = is_transient,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Await `factory()`, retrying transient failures with exponential backoff.

    `await retry(lambda: client.chat("hello"))` tries up to four times, waiting 1, 2 and 4 s.
    """
    policy = RetryPolicy(retries, Backoff(initial_delay, multiplier, max_delay), retry_if, sleep)
    return await policy.call(factory)
