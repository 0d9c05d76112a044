"""`core/periodic.py`: the timer behind the health checks, the guest sweep and the bus
heartbeat. A failed round is reported and the rounds go on; `stop` ends them."""

from __future__ import annotations

from rentahal.core.periodic import Periodic
from rentahal.testing.waiting import eventually


class Counting(Periodic):
    def __init__(self) -> None:
        super().__init__("counting", 0.001)
        self.rounds = 0
        self.failures: list[Exception] = []

    async def tick(self) -> None:
        self.rounds += 1
        if self.rounds == 1:
            raise RuntimeError("the first round fails")

    def failed(self, exc: Exception) -> None:
        self.failures.append(exc)


async def test_a_failed_round_is_reported_and_the_rounds_go_on_until_stopped() -> None:
    work = Counting()
    work.start()

    async def rounds_after_the_failure() -> bool:
        return work.rounds >= 3

    await eventually(rounds_after_the_failure, within=5)
    task = work._task
    await work.stop()
    assert [str(exc) for exc in work.failures] == ["the first round fails"]
    assert task is not None and task.cancelled()  # no round can come after `stop`
    await work.stop()  # again: harmless
