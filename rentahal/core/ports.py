"""The ports the scheduler talks to the rest of the broker through.

The scheduler decides (who runs next, on which worker, what happens after a failure); these
protocols are how it acts on the world. Each has today's in-process implementation (named in
its docstring), and the cluster will add shared ones (Redis, PostgreSQL) without touching the
scheduler's logic. They are generic in the records they carry (a query, a user, a job, a
worker, an event) because this module imports nothing of the project: the scheduler names
the concrete types (`Notifier[Query, User]`, `JobQueue[Job]`, `WorkerSlots[WorkerState]`).

Where a shared implementation needs I/O to answer (a queue, a slot count), the method is a
coroutine. Telling the world is not: an event is handed over and the caller goes on (the hub
queues it per connection; a shared fan-out would publish it from a buffer), so a slow client
never slows a job down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

Q_contra = TypeVar("Q_contra", contravariant=True)
U_contra = TypeVar("U_contra", contravariant=True)
E_contra = TypeVar("E_contra", contravariant=True)
W_contra = TypeVar("W_contra", contravariant=True)
J = TypeVar("J")


class Notifier(Protocol[Q_contra, U_contra]):
    """What the scheduler tells the world about its queries, in its own terms (no wire
    classes): `rentahal.bus.notifier.BusNotifier` turns each call into the bus's event and
    sends it to whoever should hear it."""

    def status(self, query: Q_contra, state: str, worker: str | None) -> None:
        """The query entered `state` (a `QueryState`), on `worker` if one has it."""

    def chunk(self, query: Q_contra, delta: str) -> None:
        """A piece of the answer as the worker streams it."""

    def speech_chunk(self, query: Q_contra, seq: int, text: str, audio: str) -> None:
        """One sentence of the query's spoken answer (base64 WAV), said while the rest of
        the answer is written; `seq` counts from 0."""

    def transcript(self, query: Q_contra, text: str) -> None:
        """A spoken query's transcript, before the steps that answer it."""

    def reaches_owner(self, query: Q_contra) -> bool:
        """Whether the query's final event would reach whoever it is for right now (if not,
        it waits in the store for the owner's next connection)."""

    def finished(self, query: Q_contra) -> bool:
        """The query's final outcome, sent once; True if it reached one of the owner's
        connections now."""

    def terminated(self, query: Q_contra) -> None:
        """A sysop ended the query (its owner is told who did, not just that it ended)."""

    def account_changed(self, user: U_contra) -> None:
        """The owner's account changed (a finished query's charge and totals)."""

    def queue_depths(self, depths: Mapping[str, int], workers: int, *, changed: bool) -> None:
        """How many queries wait in each realm, and how many workers there are; `changed`
        False: as last told, only which queries run is new (news for the sysops alone)."""


class EventFanout(Protocol[E_contra]):
    """Who gets an event: its owner, its owner once per query, the sysops, everybody. What
    the `Notifier` needs of the socket fan-out; `rentahal.bus.hub.Hub` is today's (every
    connection of this process)."""

    def is_connected(self, user_id: str) -> bool: ...

    def send_user(self, user_id: str, event: E_contra) -> bool:
        """To every connection of the user (and anyone watching the event's query); True if
        one took it."""

    def send_final(self, user_id: str, query_id: str, event: E_contra) -> bool:
        """A query's final event, once per connection; True if one took it."""

    def send_watchers(self, event: E_contra) -> None:
        """Only to those watching the event's query (an internal query has no owner)."""

    def broadcast(self, event: E_contra, *, sysops_only: bool = False) -> None:
        """To everybody connected, or only to the sysops."""


class JobQueue(Protocol[J]):
    """The jobs waiting for a worker, one fair line per realm (priority classes, then one
    turn per user). `rentahal.scheduler.queues.RealmQueues` keeps a `FairQueue` per realm in
    this process; `rentahal.cluster.queue.RedisQueue` shares the lines between brokers.

    Acknowledgement is explicit: a job leaves its line only by `take` (it is being
    dispatched) or `remove` (cancelled or expired); a job that fails its attempt is `push`ed
    back at the front of its owner's line."""

    async def push(self, realm: str, job: J, *, front: bool = False) -> int:
        """Queue a job (`front`: first in its owner's line); returns its place (1 = next)."""

    async def full(self, realm: str) -> bool: ...

    async def count_for(self, user_id: str) -> int:
        """How many jobs the user has waiting, in every realm."""

    async def realms(self) -> Sequence[str]:
        """The realms that have a line."""

    async def heads(self, realm: str) -> Sequence[J]:
        """Each user's next job in the realm, in the order they get their turns."""

    async def take(self, realm: str, job: J) -> bool:
        """The job is being dispatched: it leaves the line, its owner goes to the back of
        the turn order. False if it had left the line already (a shared line: another
        broker took it first)."""

    async def remove(self, realm: str, job: J) -> bool:
        """The job leaves the line without taking a turn (cancelled, expired); False if it
        was not waiting."""

    async def waiting(self) -> Sequence[tuple[str, J]]:
        """Every waiting job, with its realm."""

    def depths(self) -> dict[str, int]:
        """How many jobs wait in each realm, by realm name (sorted)."""

    def resize(self) -> None:
        """Apply the realms' queue limits again (a sysop changed them)."""


class WorkerSlots(Protocol[W_contra]):
    """A worker's concurrent jobs, at most its `max_concurrency`.
    `rentahal.scheduler.slots.RegistrySlots` is today's: the registry's live count."""

    async def acquire(self, worker: W_contra) -> bool:
        """Claim one of the worker's slots; False if they are all taken."""

    async def release(self, worker: W_contra) -> None:
        """Give back a slot `acquire` claimed."""


class UserSlots(Protocol):
    """A user's jobs running at once, at most `max_running_per_user` (sysops are not asked).
    `rentahal.scheduler.slots.UserCounts` counts this process's;
    `rentahal.cluster.slots.RedisUserSlots` every broker's."""

    async def acquire(self, user_id: str) -> bool:
        """Count one more running job of the user; False if they have their most."""

    async def release(self, user_id: str) -> None:
        """A job `acquire` counted has stopped running."""


class Cancelling(Protocol):
    """Stopping queries, queued or running: `rentahal.scheduler.scheduler.Scheduler` stops
    this process's; `rentahal.cluster.cancelling.ClusterCancelling` every broker's."""

    async def cancel(self, query_id: str, *, reason: str, by_sysop: bool = False) -> bool:
        """Cancel a query; False if it had ended already (or was never there)."""

    async def cancel_user(self, user_id: str, *, reason: str, by_sysop: bool) -> int:
        """Cancel every queued and running query of a user; how many (here)."""
