"""One realm's queue: priority classes first, then round-robin across users within a class.

A user with 100 jobs queued gets one turn per round like everyone else, so a newcomer's one
job waits for at most one job per other user (not for the whole backlog). Within a user,
jobs keep their order.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class QueuedJob(Protocol):
    @property
    def user_id(self) -> str: ...

    @property
    def priority(self) -> int: ...


J = TypeVar("J", bound=QueuedJob)


class FairQueue(Generic[J]):
    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        # priority (0 first) → users in turn order → their jobs, oldest first
        self._classes: dict[int, OrderedDict[str, deque[J]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[J]:
        for priority in sorted(self._classes):
            for jobs in self._classes[priority].values():
                yield from jobs

    @property
    def full(self) -> bool:
        return self._size >= self.limit

    def count_for(self, user_id: str) -> int:
        return sum(len(users.get(user_id, ())) for users in self._classes.values())

    def push(self, job: J, *, front: bool = False) -> None:
        """Queue a job; `front` puts it first in its user's line (a retry keeps its place)."""
        users = self._classes.setdefault(job.priority, OrderedDict())
        jobs = users.setdefault(job.user_id, deque())
        if front:
            jobs.appendleft(job)
        else:
            jobs.append(job)
        self._size += 1

    def heads(self) -> list[J]:
        """Each user's next job, in the order they get their turns."""
        return [jobs[0] for p in sorted(self._classes) for jobs in self._classes[p].values()]

    def take(self, job: J) -> None:
        """Remove a job being dispatched; its user goes to the back of the turn order."""
        users = self._classes[job.priority]
        jobs = users[job.user_id]
        jobs.remove(job)
        self._size -= 1
        if jobs:
            users.move_to_end(job.user_id)
        else:
            del users[job.user_id]
        if not users:
            del self._classes[job.priority]

    def remove(self, job: J) -> bool:
        """Remove a job without touching the turn order (cancelled or expired)."""
        users = self._classes.get(job.priority)
        jobs = users.get(job.user_id) if users else None
        if users is None or jobs is None or job not in jobs:
            return False
        jobs.remove(job)
        self._size -= 1
        if not jobs:
            del users[job.user_id]
            if not users:
                del self._classes[job.priority]
        return True

    def position(self, job: J) -> int:
        """Where the job stands in dispatch order (1 = next), if every job ran in turn."""
        ahead = 0
        for priority in sorted(self._classes):
            users = self._classes[priority]
            if priority < job.priority:
                ahead += sum(len(jobs) for jobs in users.values())
                continue
            if priority > job.priority:
                break
            mine = users.get(job.user_id, deque())
            try:
                rounds = mine.index(job)
            except ValueError:
                rounds = len(mine)
            # Users ahead in the turn order get one more turn before this job's round. (One
            # pass: this runs for every job accepted while the line is long.)
            before = 1
            for user_id, jobs in users.items():
                if user_id == job.user_id:
                    before = 0
                    continue
                ahead += min(len(jobs), rounds + before)
            ahead += rounds
        return ahead + 1
