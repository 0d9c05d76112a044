"""The scheduler's alarm for retries' backoffs, on the loop the broker runs on (uvloop),
whose handles cannot say when they are due."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine
from typing import Any

import uvloop

from rentahal.scheduler.alarm import Alarm


def on_uvloop(main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def test_the_alarm_rings_once_at_the_earliest_moment_set() -> None:
    async def main() -> None:
        rang: list[float] = []
        ringing = asyncio.Event()
        alarm = Alarm(lambda: (rang.append(time.monotonic()), ringing.set()))
        start = time.monotonic()
        alarm.at(start + 5)
        alarm.at(start + 0.05)  # earlier: replaces the 5 s
        alarm.at(start + 2)  # later than pending: ignored
        assert alarm.due == start + 0.05
        await asyncio.wait_for(ringing.wait(), 1.5)
        assert len(rang) == 1 and start + 0.05 <= rang[0] < start + 1.5
        assert alarm.due == math.inf  # rung: the next moment set starts afresh

    on_uvloop(main())


def test_a_cancelled_alarm_forgets_its_moment() -> None:
    async def main() -> None:
        ringing = asyncio.Event()
        alarm = Alarm(ringing.set)
        alarm.at(time.monotonic() + 0.01)
        alarm.cancel()
        assert alarm.due == math.inf
        alarm.at(time.monotonic() + 0.02)  # a later moment than the cancelled one is taken
        await asyncio.wait_for(ringing.wait(), 1.5)

    on_uvloop(main())
