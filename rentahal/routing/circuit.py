"""A circuit breaker per worker (SPEC §5; the seed's client-side breaker, moved to the broker).

Health checks run every minute; a worker that fails real jobs in between should stop getting
them at once. After `threshold` consecutive failures the circuit opens for `open_seconds`;
then one job is let through as a probe: success closes it, failure opens it again. A health
check that passes while it is open lets the probe go at once: a worker restarted after a
crash (every job it was running failed together) is back within a check, not 30 s later.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        # Told when failures here open the circuit (a cluster's brokers open theirs too).
        self.on_open: Callable[[], None] | None = None

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self.open_seconds:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allows(self) -> bool:
        """May a job be sent now? In half-open state only one job (the probe) at a time."""
        state = self.state
        return state is CircuitState.CLOSED or (
            state is CircuitState.HALF_OPEN and not self._probe_in_flight
        )

    def on_dispatch(self) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._probe_in_flight = True

    def on_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def release(self) -> None:
        """The job ended without a verdict on the worker (cancelled): free the probe slot."""
        self._probe_in_flight = False

    def on_healthy(self) -> None:
        """An active health check passed: an open circuit goes half-open now."""
        if self.state is CircuitState.OPEN:
            self._opened_at = self._clock() - self.open_seconds

    def on_failure(self) -> None:
        self._failures += 1
        if self.state is CircuitState.HALF_OPEN or self._failures >= self.threshold:
            was_open = self.state is CircuitState.OPEN
            self.trip()
            if not was_open and self.on_open is not None:
                self.on_open()
        self._probe_in_flight = False

    def trip(self) -> None:
        """Open now (failures here, or another broker's: `rentahal.cluster`)."""
        self._opened_at = self._clock()
