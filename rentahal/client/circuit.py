"""A circuit breaker: stop calling a service that keeps failing, and probe it gently.

States: *closed* (calls pass; consecutive failures are counted), *open* (calls are refused
at once with `CircuitOpen` until `reset_timeout` has passed since the last failure), and
*half-open* (exactly one trial call is let through; its success closes the circuit, its
failure opens it again for another `reset_timeout`).

Two defects of the developer guide's breaker are fixed here: a success while closed resets
the failure count (so `failure_threshold` means *consecutive* failures, not failures since
the process started), and half-open admits one trial at a time rather than every caller.
The defaults are the guide's: 5 failures, 60 s. The clock is injectable for tests.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rentahal.client.errors import CircuitOpen, counts_as_failure

T = TypeVar("T")


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Guards calls to one service; share one instance among the calls it should protect."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 60.0,
        *,
        is_failure: Callable[[BaseException], bool] = counts_as_failure,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout < 0:
            raise ValueError("need failure_threshold >= 1 and reset_timeout >= 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.is_failure = is_failure
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> CircuitState:
        """The state now: an open circuit whose timeout has passed reads as half-open."""
        if self._state is CircuitState.OPEN and self._retry_after() <= 0:
            self._state = CircuitState.HALF_OPEN
            self._trial_running = False
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    def _retry_after(self) -> float:
        return self._opened_at + self.reset_timeout - self._clock()

    def acquire(self) -> None:
        """Take permission for one call, or raise `CircuitOpen`. Every successful `acquire`
        must be followed by `record_success`, `record_failure` or `release`."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return
        # Open, or half-open with its one trial under way.
        raise CircuitOpen(max(self._retry_after(), 0.0))

    def record_success(self) -> None:
        """The service answered: a closed circuit forgets past failures; a trial closes it."""
        self._failures = 0
        self._state = CircuitState.CLOSED
        self._trial_running = False

    def record_failure(self) -> None:
        """The service failed: count it, and open the circuit at the threshold or when a
        half-open trial failed."""
        if self._state is CircuitState.HALF_OPEN or (
            self._state is CircuitState.CLOSED and self._failures + 1 >= self.failure_threshold
        ):
            self._open()
        elif self._state is CircuitState.CLOSED:
            self._failures += 1

    def release(self) -> None:
        """The call ended with no verdict (it was cancelled): let another trial through."""
        if self._state is CircuitState.HALF_OPEN:
            self._trial_running = False

    def reset(self) -> None:
        """Close the circuit by hand (e.g. after the operator fixed the service)."""
        self.record_success()

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._failures = self.failure_threshold
        self._trial_running = False

    async def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run `factory()` under the breaker. Exceptions pass through unchanged; `is_failure`
        decides whether they count against the service (a caller's mistake does not)."""
        self.acquire()
        try:
            result = await factory()
        except Exception as exc:
            if self.is_failure(exc):
                self.record_failure()
            else:
                self.record_success()  # the service answered, if only to say no
            raise
        except BaseException:  # cancelled: no verdict on the service
            self.release()
            raise
        self.record_success()
        return result

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value!r}, failures={self._failures}/"
            f"{self.failure_threshold}, reset_timeout={self.reset_timeout})"
        )
