"""The job queue as this process keeps it: one `FairQueue` per realm, in memory (the
in-process `JobQueue` of `rentahal.core.ports`)."""

from __future__ import annotations

from typing import Generic

from rentahal.routing.realms import RealmTable
from rentahal.scheduler.fair_queue import FairQueue, J


class RealmQueues(Generic[J]):
    """A realm's line is made the first time a job joins it, with the realm's queue limit
    (`default` for a name that is no realm), and keeps it until `resize`."""

    def __init__(self, realms: RealmTable, default: int) -> None:
        self._realms = realms
        self._default = default
        self._queues: dict[str, FairQueue[J]] = {}

    def _queue(self, realm: str) -> FairQueue[J]:
        queue = self._queues.get(realm)
        if queue is None:
            queue = self._queues[realm] = FairQueue(realm, self._limit(realm))
        return queue

    def _limit(self, realm: str) -> int:
        state = self._realms.get(realm)
        return state.max_queue_size if state else self._default

    async def push(self, realm: str, job: J, *, front: bool = False) -> int:
        queue = self._queue(realm)
        queue.push(job, front=front)
        return queue.position(job)

    async def full(self, realm: str) -> bool:
        return self._queue(realm).full

    async def count_for(self, user_id: str) -> int:
        return sum(queue.count_for(user_id) for queue in self._queues.values())

    async def realms(self) -> list[str]:
        return list(self._queues)

    async def heads(self, realm: str) -> list[J]:
        return self._queue(realm).heads()

    async def take(self, realm: str, job: J) -> bool:
        self._queue(realm).take(job)
        return True

    async def remove(self, realm: str, job: J) -> bool:
        return self._queue(realm).remove(job)

    async def waiting(self) -> list[tuple[str, J]]:
        return [(realm, job) for realm, queue in self._queues.items() for job in queue]

    def depths(self) -> dict[str, int]:
        return {name: len(queue) for name, queue in sorted(self._queues.items())}

    def resize(self) -> None:
        for name, queue in self._queues.items():
            if (state := self._realms.get(name)) is not None:  # a removed realm keeps its own
                queue.limit = state.max_queue_size
