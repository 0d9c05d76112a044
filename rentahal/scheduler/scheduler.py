"""The scheduler's core: accepts queries, queues them fairly per realm, and dispatches each
to a worker with a free slot; many jobs run at once, one asyncio task each.

Every state change is in the store first, so a restarted broker resumes what the last one
accepted (`start`), and nothing is dispatched while the store is down. A query that need not
wait (nobody in its realm's line, a worker slot free) is dispatched as it is accepted: its row
is inserted with the attempt recorded, one write where a query that waits has two.

What a job does once it has a worker is `runner`'s; the job and its phases are `jobs`'. The
scheduler reaches the world only through the ports of `rentahal.core.ports`: the job queue,
the worker slots, and the `Notifier` (events to the owner and everybody).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import structlog

from rentahal import request_ids
from rentahal.config import Settings
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.ports import JobQueue, Notifier, UserSlots, WorkerSlots
from rentahal.core.specs import QuerySpec
from rentahal.core.spotting import COMMANDS
from rentahal.core.stages import model_for_step, servable, step_model, step_model_type, step_type
from rentahal.media import BadMedia
from rentahal.media.audio import normalize_for_speech
from rentahal.media.images import normalize_for_vision
from rentahal.metrics import Metrics
from rentahal.routing.registry import WorkerState
from rentahal.routing.router import Choice, Router
from rentahal.scheduler.alarm import Alarm
from rentahal.scheduler.jobs import CancelReason, Job
from rentahal.scheduler.runner import HealthListener, Runner
from rentahal.scheduler.slots import UserCounts
from rentahal.store import Query, QueryState, Role, Store, User, utcnow

log = structlog.get_logger(__name__)

QUEUE_UPDATE_INTERVAL = 0.25  # coalesce queue_update broadcasts to at most 4/s


def check_inputs(spec: QuerySpec, max_prompt_chars: int) -> None:
    """What each query type needs before it may wait in a queue."""
    if len(spec.prompt) > max_prompt_chars:
        raise ProtocolError(ErrorCode.INVALID, f"the prompt is over {max_prompt_chars} characters")
    if spec.query_type in ("stt", "speech"):
        if not spec.audio:
            raise ProtocolError(ErrorCode.INVALID, f"a {spec.query_type} query needs audio")
        return
    if not spec.prompt.strip():
        raise ProtocolError(ErrorCode.INVALID, "the prompt is empty")
    if spec.query_type == "vision" and not spec.image:
        raise ProtocolError(ErrorCode.INVALID, "a vision query needs an image")


async def normalized(convert: Callable[..., str], *args: Any) -> str:
    """An image or recording as every worker gets it (see `rentahal.media`), made in a
    thread; media that fails its checks is refused before it is queued."""
    try:
        return await asyncio.to_thread(convert, *args)
    except BadMedia as exc:
        raise ProtocolError(ErrorCode.INVALID, f"{exc.message} ({exc.code})") from None


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        router: Router,
        http: httpx.AsyncClient,
        metrics: Metrics,
        on_health_event: HealthListener,
        *,
        notifier: Notifier[Query, User],
        queue: JobQueue[Job],
        slots: WorkerSlots[WorkerState],
        user_slots: UserSlots | None = None,
        broker_id: str | None = None,
    ) -> None:
        """`user_slots` counts users' running jobs (default: in this process); `broker_id`
        names this broker on the jobs it accepts: in a cluster, the others take them over if
        it dies (`rentahal.cluster.reclaim`)."""
        self._settings = settings
        self._broker_id = broker_id
        self._store = store
        self._router = router
        self._metrics = metrics
        self._notifier = notifier
        self._queue = queue
        self._slots = slots
        self._runner = Runner(
            settings,
            store,
            router,
            http,
            metrics,
            notifier,
            slots,
            on_health_event,
            requeue=self._requeue,
            slot_freed=self.pump,
            vocabulary=lambda: self.vocabulary,
        )
        self._running: dict[str, Job] = {}
        self._user_slots = user_slots or UserCounts(settings.max_running_per_user)
        self._pump_wanted = asyncio.Event()
        self._queue_dirty = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._finished: dict[str, asyncio.Event] = {}
        self._wake = Alarm(self.pump)  # when the next retry's backoff is over
        store.health.on_recovered(self.pump)
        # The words a transcript is searched for when its query asks (`speech_to_text
        # {spot}`): the voice mode's commands, and the broker's intents' words once it has
        # loaded them (`Broker`).
        self.vocabulary: tuple[str, ...] = COMMANDS

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, *, resume: bool = True) -> None:
        """Resume the jobs a previous process accepted (unless a cluster's reclaim hands
        them over instead), then start dispatching and the housekeeping tasks."""
        if resume:
            await self.resume(await self._store.queries.unfinished())
        self._background = [
            asyncio.create_task(self._dispatch_loop(), name="dispatch"),
            asyncio.create_task(self._broadcast_queue_updates(), name="queue-updates"),
            asyncio.create_task(self._expire_loop(), name="queue-expiry"),
        ]
        self.pump()

    async def resume(self, queries: Sequence[Query]) -> None:
        """Queue again jobs a broker that is gone accepted (this one's previous process, or
        another of the cluster's)."""
        for query in queries:
            if query.state != QueryState.QUEUED:
                # Its worker may have been running it when its broker died; the attempt it
                # recorded counts towards `max_attempts`, so a job that kills brokers cannot
                # do so forever.
                await self._store.queries.requeue(query)
            owner = await self._store.users.get(query.user_id)
            role = owner.role if owner else Role.GUEST.value
            realm = query.realm or self._router.queue_realm(query.query_type, query.model_name)
            await self._queue.push(realm, Job(query, role=role, realm=realm))
        if queries:
            log.info("scheduler.resumed", jobs=len(queries))
            self._queue_dirty.set()
            self.pump()

    async def queue_held(self) -> None:
        """Queue again the waiting jobs this broker holds (a shared line that lost them:
        Redis restarted without its data); one waiting already is left as it is, and so is
        one this broker is dispatching now."""
        held = await self._store.queries.waiting_held_by(self._broker_id)
        await self.resume([q for q in held if q.id not in self._running])

    async def stop(self) -> None:
        """Stop without touching job state: running jobs stay `running` in the store and
        the next process re-dispatches them."""
        self._wake.cancel()
        tasks = self._background + [j.task for j in self._running.values() if j.task]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def resize_queues(self) -> None:
        """Apply realms' queue limits after a sysop changed them."""
        self._queue.resize()

    # --- queries in ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return sum(self._queue.depths().values())

    def depths(self) -> dict[str, int]:
        return self._queue.depths()

    async def submit(
        self, user: User, spec: QuerySpec, *, hops: Sequence[str] = ()
    ) -> tuple[Query, int]:
        """Accept a query or refuse it with a `ProtocolError`; returns it and its position.
        `hops`: the installations a query forwarded by federation has been through (it may
        be served by a peer installation only if none of them)."""
        if user.is_banned:
            raise ProtocolError(ErrorCode.BANNED, "You are banned from submitting queries")
        check_inputs(spec, self._settings.max_prompt_chars)
        for step, model in servable(spec.query_type, spec.options, spec.model_name):
            preferred = model_for_step(spec.query_type, step, spec.model_type)
            if not self._router.could_serve(step, model, model_type=preferred, hops=hops):
                wanted = f" with {model!r}" if model else ""
                of = f" (a step of a {spec.query_type} query)" if step != spec.query_type else ""
                raise ProtocolError(
                    ErrorCode.NO_WORKER, f"no live worker can serve a {step} query{wanted}{of}"
                )
        image = await normalized(normalize_for_vision, spec.image) if spec.image else None
        audio = (
            await normalized(normalize_for_speech, spec.audio, self._settings.max_audio_seconds)
            if spec.audio
            else None
        )
        realm = self._router.queue_realm(spec.query_type, spec.model_name)
        if await self._queue.full(realm):
            raise ProtocolError(ErrorCode.QUEUE_FULL, "Queue is full, please try again later")
        if user.role != Role.SYSOP.value:
            limit = self._settings.max_queued_per_user
            if await self._queue.count_for(user.id) >= limit:
                raise ProtocolError(
                    ErrorCode.USER_LIMIT, f"you already have {limit} queries waiting"
                )
        query = Query(
            user_id=user.id,
            query_type=spec.query_type,
            model_type=spec.model_type,
            model_name=spec.model_name,
            prompt=spec.prompt,
            options=spec.options,
            realm=realm,
            image=image,
            audio=audio,
            broker_id=self._broker_id,
            hops=list(hops),
            state=QueryState.QUEUED.value,
            stage=0,
            attempts=0,
        )
        job = Job(query, role=user.role, realm=realm)
        choice = await self._claim_at_once(realm, job)
        if choice is not None:
            # Its row says the attempt has begun: one write, where a job that waits has two.
            query.state = QueryState.DISPATCHED.value
            query.worker_name, query.attempts = choice.worker.name, 1
            query.created_at = query.dispatched_at = utcnow()
            job.attempt_recorded = True
        try:
            await self._store.queries.create(query)
        except BaseException:
            if choice is not None:
                await self._release(job, choice)
            raise
        if choice is not None:
            self._start(job, choice)
            return query, 1
        try:
            position = await self._queue.push(realm, job)
        except ProtocolError as exc:
            # A shared line out of reach: the query is refused, and recorded so.
            await self._runner.finish_unsuccessful(job, QueryState.FAILED, exc.code, exc.message)
            raise
        self._queue_dirty.set()
        self.pump()
        return query, position

    async def _requeue(self, job: Job) -> None:
        """A job back at the head of its owner's line (a retry, or its next step)."""
        await self._queue.push(job.realm, job, front=True)
        self._queue_dirty.set()

    # --- dispatch --------------------------------------------------------------------------

    def pump(self) -> None:
        """Ask for a dispatch pass: every queued job that has a free worker slot starts, in
        fair order. Passes asked for while one runs are one more pass, not one each."""
        self._pump_wanted.set()

    async def _dispatch_loop(self) -> None:
        while True:
            await self._pump_wanted.wait()
            self._pump_wanted.clear()
            try:
                await self._dispatch_all()
            except ProtocolError as exc:
                # A shared line out of reach (its outage is said where it is met); the jobs
                # wait, and its return pumps again.
                if exc.code != ErrorCode.UNAVAILABLE:
                    log.exception("scheduler.dispatch_failed")
            except Exception:
                # A bug in one pass must not end dispatching for the life of the process;
                # the jobs stay queued and the next pump tries again.
                log.exception("scheduler.dispatch_failed")

    async def _dispatch_all(self) -> None:
        """One pass over every realm's line (none while the store is down: the store says it
        is back by pumping again)."""
        if not self._store.health.available:
            return
        now = time.monotonic()
        for realm in await self._queue.realms():
            progress = True
            # Once every worker is busy, the waiting jobs are not looked at one by one: with
            # a long line, that scan was a tenth of the broker's work.
            while progress and self._router.any_free():
                progress = False
                for job in await self._queue.heads(realm):
                    if await self._dispatch(realm, job, now):
                        progress = True
                        break  # the turn order changed: look again from the start

    async def _dispatch(self, realm: str, job: Job, now: float) -> bool:
        if job.not_before > now:
            self._wake.at(job.not_before)
            return False
        choice = await self._claim(job, now)
        if choice is None:
            return False
        if not await self._queue.take(realm, job):  # another broker took it first
            await self._release(job, choice)
            return False
        job.query.broker_id = self._broker_id  # written with the attempt: who holds it now
        self._start(job, choice)
        return True

    async def _claim_at_once(self, realm: str, job: Job) -> Choice | None:
        """A new job's places, when it need not wait: nobody waits in its realm's line and
        they are free now. It is then dispatched as it is accepted, as the next dispatch pass
        would have done, without going through the line."""
        if not self._store.health.available or await self._queue.heads(realm):
            return None
        return await self._claim(job, time.monotonic())

    async def _claim(self, job: Job, now: float) -> Choice | None:
        """A worker slot for the job and a place among its owner's running jobs; None, and
        nothing held, if one of them is not to be had now (no free worker, the owner at
        `max_running_per_user`). Free workers are the scarcer, so they are looked for first."""
        choice = await self._worker_slot(job, now)
        if choice is None:
            return None
        if job.limited and not await self._user_slots.acquire(job.user_id):
            await self._slots.release(choice.worker)
            return None
        return choice

    async def _release(self, job: Job, choice: Choice) -> None:
        """Give back what `_claim` took, for a job that is not dispatched after all."""
        await self._slots.release(choice.worker)
        if job.limited:
            await self._user_slots.release(job.user_id)

    def _start(self, job: Job, choice: Choice) -> None:
        """Run the job, in a task of its own, on the worker `_claim` found for it."""
        worker = choice.worker
        worker.circuit.on_dispatch()
        job.dispatched(worker)
        self._running[job.query.id] = job
        if choice.cross_realm:
            self._metrics.cross_realm.labels(job.realm, choice.realm).inc()
        job.task = asyncio.create_task(self._run(job), name=f"job-{job.query.id}")
        job.task.add_done_callback(self._job_ended)
        self._queue_dirty.set()

    async def _worker_slot(self, job: Job, now: float) -> Choice | None:
        query = job.query
        forward_after = self._settings.federation_forward_after
        for _ in range(len(self._router.registry) + 1):
            choice = self._router.select(
                step_type(query),
                step_model(query),
                query.prompt,
                frozenset(job.excluded),
                model_type=step_model_type(query),
                hops=query.hops,
                # Waited long enough for a local worker: a peer installation may take it.
                overflow=forward_after > 0 and now - job.enqueued > forward_after,
            )
            if choice is None:
                return None
            # Shared slots may be taken by another broker since this one last looked: the
            # failed claim leaves the worker counted full, and the router chooses again.
            if await self._slots.acquire(choice.worker):
                return choice
        return None

    async def _run(self, job: Job) -> None:
        job.started = True
        query_id = job.query.id
        requeued = False  # for a retry, or the query's next step
        try:
            with request_ids.bound(job.request_id):
                requeued = await self._runner.run(job)
        finally:
            self._running.pop(query_id, None)
            if job.limited:
                await self._user_slots.release(job.user_id)
            if not requeued:
                self._signal_finished(query_id)
            self._queue_dirty.set()  # the sysops' list of running queries moved
            self.pump()

    @staticmethod
    def _job_ended(task: asyncio.Task[None]) -> None:
        """`_run` handles every outcome itself; an exception escaping it is a bug, and is said
        loudly rather than left as "Task exception was never retrieved"."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("job.task_died", task=task.get_name(), exc_info=exc)

    # --- cancellation and waiting ----------------------------------------------------------

    async def _find_queued(self, query_id: str) -> tuple[str, Job] | None:
        for realm, job in await self._queue.waiting():
            if job.query.id == query_id:
                return realm, job
        return None

    async def cancel(self, query_id: str, *, reason: str, by_sysop: bool = False) -> bool:
        """Cancel a queued or running job; a running job's worker request is closed."""
        why = CancelReason(QueryState.CANCELLED, ErrorCode.CANCELLED, reason)
        found = await self._find_queued(query_id)
        if found is not None and await self._drop_queued(*found, why, terminated=by_sysop):
            return True
        running = self._running.get(query_id)
        if running is None or not running.cancellable:
            return False
        assert running.task is not None
        running.cancel_reason = why
        # A task cancelled before its first step never runs its cleanup (its slots would
        # stay taken, its query unfinished for ever); one not started yet sees the reason
        # as it starts (`Runner.run`) instead.
        if running.started:
            running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task
        if by_sysop:
            self._notifier.terminated(running.query)
        return True

    async def cancel_user(self, user_id: str, *, reason: str, by_sysop: bool) -> int:
        """Cancel every queued and running job of a user; returns how many."""
        jobs = [job for _, job in await self._queue.waiting()]
        jobs += list(self._running.values())
        ids = [job.query.id for job in jobs if job.user_id == user_id]
        return sum([await self.cancel(i, reason=reason, by_sysop=by_sysop) for i in ids])

    async def clear(
        self, *, realm: str | None = None, user_id: str | None = None, reason: str
    ) -> list[Query]:
        """Cancel every waiting job (of `realm`, of `user_id`, of both, or all) as a sysop's
        cancel does; jobs already dispatched run on. Returns the queries cleared."""
        why = CancelReason(QueryState.CANCELLED, ErrorCode.CANCELLED, reason)
        cleared = []
        for job_realm, job in await self._queue.waiting():
            if realm is not None and job_realm != realm:
                continue
            if user_id is not None and job.user_id != user_id:
                continue
            if await self._drop_queued(job_realm, job, why, terminated=True):
                cleared.append(job.query)
        return cleared

    async def _drop_queued(
        self, realm: str, job: Job, why: CancelReason, *, terminated: bool = False
    ) -> bool:
        """End a waiting job without running it (cancelled, expired) and tell its owner;
        False if it had left the line meanwhile."""
        if not await self._queue.remove(realm, job):
            return False
        self._queue_dirty.set()
        await self._runner.finish_unsuccessful(
            job, why.state, why.code, why.message, terminated=terminated
        )
        self._signal_finished(job.query.id)
        return True

    async def wait_finished(self, query_id: str, within: float) -> None:
        """Wait until the job is no longer queued or running here (or the time is up)."""
        if query_id not in self._running and await self._find_queued(query_id) is None:
            return
        event = self._finished.setdefault(query_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)

    def _signal_finished(self, query_id: str) -> None:
        if (event := self._finished.pop(query_id, None)) is not None:
            event.set()

    # --- housekeeping ----------------------------------------------------------------------

    def workers_changed(self) -> None:
        """Workers came, went or changed: the number in `queue_update` may have moved."""
        self._queue_dirty.set()

    async def _broadcast_queue_updates(self) -> None:
        """`queue_update` when a line's depth or the number of workers has changed; when only
        which jobs run has (a query went straight to a free worker, or ended), to the sysops
        alone, whose list of running queries follows it. With many connections, one
        broadcast a dispatch would be most of the bus's traffic."""
        sent: tuple[dict[str, int], int] | None = None
        while True:
            await self._queue_dirty.wait()
            self._queue_dirty.clear()
            depths = self._queue.depths()
            for realm, depth in depths.items():
                self._metrics.queue_depth.labels(realm).set(depth)
            now = (depths, len(self._router.registry))
            self._notifier.queue_depths(*now, changed=now != sent)
            sent = now
            await asyncio.sleep(QUEUE_UPDATE_INTERVAL)

    async def _expire_loop(self) -> None:
        timeout = self._settings.queue_timeout
        why = CancelReason(
            QueryState.EXPIRED, ErrorCode.EXPIRED, f"no worker took the query within {timeout:g} s"
        )
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            self.pump()  # workers may have come back since the last look
            now = time.monotonic()
            with contextlib.suppress(ProtocolError):  # a shared line out of reach just now
                for realm, job in await self._queue.waiting():
                    if now - job.enqueued > timeout:
                        await self._drop_queued(realm, job, why)
