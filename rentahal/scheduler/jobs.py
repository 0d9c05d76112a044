"""A job: one accepted query as the scheduler holds it, and the phases it moves through.

The store keeps the query's own state (`QueryState`), which outlives the process; the job
keeps what only this process needs while it runs the query: which worker has it, the workers
that failed it, a retry's backoff, and its phase. Each phase change is one method here, so
the rules (only a running job may be cancelled, a finishing one's outcome is recorded
whatever else happens) read in one place.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field

from rentahal import request_ids
from rentahal.core.errors import ErrorCode
from rentahal.core.vocabulary import QueryState, Role
from rentahal.routing.registry import WorkerState
from rentahal.scheduler.speaking import Spoken
from rentahal.store import Query

PRIORITY = {Role.SYSOP.value: 0, Role.PREMIUM.value: 1}  # everyone else: 2


class Phase(enum.StrEnum):
    WAITING = "waiting"  # in its realm's line
    RUNNING = "running"  # a worker has it; it may be cancelled
    FINISHING = "finishing"  # the worker is done: its outcome is recorded, not cancelled


@dataclass(frozen=True, slots=True)
class CancelReason:
    """Why a job ends without a result, to be recorded as its outcome: a running job's task
    cancelled, or a waiting job dropped from its line (cancelled, cleared, expired)."""

    state: QueryState
    code: ErrorCode
    message: str


@dataclass(eq=False, slots=True)
class Job:
    query: Query
    role: str = Role.GUEST.value
    realm: str = ""
    phase: Phase = Phase.WAITING
    task: asyncio.Task[None] | None = None
    worker: WorkerState | None = None
    cancel_reason: CancelReason | None = None
    started: bool = False  # its task has begun (a cancel before that is seen as it begins)
    # Dispatched as it was accepted: its row was inserted with the attempt already recorded.
    attempt_recorded: bool = False
    excluded: set[str] = field(default_factory=set)  # workers that failed this job
    not_before: float = 0.0  # retry backoff, `time.monotonic()`
    enqueued: float = field(default_factory=time.monotonic)
    # The request that submitted it (`request_ids`): its run logs under it, its worker hears it.
    request_id: str | None = field(default_factory=request_ids.current)
    # Its answer, said while it was written (`speaking.py`): its speaking step is done.
    spoken: Spoken | None = None

    @property
    def user_id(self) -> str:
        return self.query.user_id

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.role, 2)

    @property
    def limited(self) -> bool:
        """Whether its owner's running jobs are limited (`max_running_per_user`: not a
        sysop's)."""
        return self.priority > 0

    @property
    def premium(self) -> bool:
        return self.priority < 2

    @property
    def cancellable(self) -> bool:
        """A running job whose task can still be stopped."""
        return self.phase is Phase.RUNNING and self.task is not None and not self.task.done()

    def dispatched(self, worker: WorkerState) -> None:
        self.phase, self.worker = Phase.RUNNING, worker

    def worker_done(self) -> None:
        """The worker answered (or the broker failed around it): from here the outcome is
        recorded, and a cancel comes too late."""
        self.phase = Phase.FINISHING

    def failed_on(self, worker: WorkerState) -> None:
        """The attempt failed on its worker: that worker is not asked again."""
        self.excluded.add(worker.name)

    def retry_after(self, backoff: float) -> None:
        """Back in line after a failed attempt, for another worker after `backoff` seconds."""
        self.not_before = time.monotonic() + backoff
        self.phase, self.worker = Phase.WAITING, None

    def next_step(self) -> None:
        """The step is done and the query has another: every worker may take it."""
        self.excluded.clear()
        self.phase, self.worker = Phase.WAITING, None
