"""Slots as this process keeps them: the registry's live `in_flight` count against each
worker's `max_concurrency` (the in-process `WorkerSlots` of `rentahal.core.ports`), and each
user's running jobs against `max_running_per_user` (`UserSlots`)."""

from __future__ import annotations

from rentahal.routing.registry import WorkerState


class RegistrySlots:
    """The count lives on the worker's live record, where the router reads it to choose
    a worker with a free slot (`WorkerState.available`)."""

    async def acquire(self, worker: WorkerState) -> bool:
        if worker.in_flight >= worker.max_concurrency:
            return False
        worker.in_flight += 1
        return True

    async def release(self, worker: WorkerState) -> None:
        worker.in_flight -= 1


class UserCounts:
    """Each user's running jobs in this process, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: dict[str, int] = {}

    async def acquire(self, user_id: str) -> bool:
        running = self._running.get(user_id, 0)
        if running >= self._limit:
            return False
        self._running[user_id] = running + 1
        return True

    async def release(self, user_id: str) -> None:
        running = self._running.pop(user_id, 0) - 1
        if running > 0:
            self._running[user_id] = running
