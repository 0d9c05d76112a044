"""An alarm for the earliest of several moments: when the next retry's backoff is over.

It keeps the moment it is set for itself: asyncio's `TimerHandle.when()` is not part of
every loop's handles (uvloop's `call_later` returns a plain `Handle`), and the broker runs
on uvloop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


class Alarm:
    """Calls `ring` once, at the earliest moment (`time.monotonic()` seconds) it was set
    for since it last rang; setting a later moment while an earlier one is pending does
    nothing."""

    def __init__(self, ring: Callable[[], None]) -> None:
        self._ring = ring
        self._handle: asyncio.Handle | None = None
        self._due = math.inf

    @property
    def due(self) -> float:
        """When it will ring; infinity when it is not set."""
        return self._due

    def at(self, moment: float) -> None:
        if moment >= self._due:
            return
        self.cancel()
        self._due = moment
        delay = max(0.0, moment - time.monotonic())
        self._handle = asyncio.get_running_loop().call_later(delay, self._rang)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._due = math.inf

    def _rang(self) -> None:
        self._handle = None
        self._due = math.inf
        self._ring()
