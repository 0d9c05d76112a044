"""Worker slots as this process keeps them: the registry's live `in_flight` count against
each worker's `max_concurrency` (the in-process `WorkerSlots` of `rentahal.core.ports`)."""

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
