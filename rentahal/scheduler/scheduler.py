"""The scheduler: accepts queries, queues them fairly per realm, runs each on a free slot.

Many jobs run at once, one asyncio task each, bounded by the workers' `max_concurrency`
slots (the seed ran one query at a time for the whole system). Every state change is in the
store first, so a restarted broker resumes what the last one accepted. A worker that fails
a job (error status, lost connection, timeout) loses health at once, trips its circuit
breaker after repeated failures, and the job goes back to the head of its owner's line to be
retried on another worker, up to `max_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from rentahal.accounting import owner_earning, query_cost
from rentahal.backends import BACKENDS, BackendError, BackendRequest
from rentahal.bus import events
from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.bus.hub import Hub
from rentahal.bus.messages import QuerySpec
from rentahal.bus.views import final_event, user_view
from rentahal.config import Settings
from rentahal.intents.spotting import COMMANDS
from rentahal.media import BadMedia
from rentahal.media.audio import normalize_for_speech
from rentahal.media.images import normalize_for_vision
from rentahal.metrics import Metrics
from rentahal.routing.health import Probe
from rentahal.routing.registry import WorkerState
from rentahal.routing.router import Router
from rentahal.scheduler.fair_queue import FairQueue
from rentahal.scheduler.stages import (
    is_last_step,
    servable,
    step_model,
    step_prompt,
    step_type,
)
from rentahal.store import Query, QueryState, Role, Store, User, utcnow
from rentahal.store.ledger import entry_values, to_micros
from rentahal.store.models import LedgerKind

log = structlog.get_logger(__name__)

QUEUE_UPDATE_INTERVAL = 0.25  # coalesce queue_update broadcasts to at most 4/s
PRIORITY = {Role.SYSOP.value: 0, Role.PREMIUM.value: 1}  # everyone else: 2

HealthListener = Callable[[list[tuple[WorkerState, str]]], Awaitable[None]]


@dataclass(eq=False, slots=True)
class Job:
    query: Query
    role: str = Role.GUEST.value
    realm: str = ""
    task: asyncio.Task[None] | None = None
    worker: WorkerState | None = None
    cancel_reason: tuple[QueryState, ErrorCode, str] | None = None
    excluded: set[str] = field(default_factory=set)  # workers that failed this job
    not_before: float = 0.0  # retry backoff
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def user_id(self) -> str:
        return self.query.user_id

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.role, 2)

    @property
    def premium(self) -> bool:
        return self.priority < 2


class WorkerFailed(Exception):
    """One attempt failed on the worker's side; carries how it affects the worker's health."""

    def __init__(self, probe: Probe, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.probe, self.code, self.message = probe, code, message


class InputRefused(Exception):
    """The worker refused the query's input as invalid (HTTP 400/413/422)."""


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
        hub: Hub,
        http: httpx.AsyncClient,
        metrics: Metrics,
        on_health_event: HealthListener,
    ) -> None:
        self._settings = settings
        self._store = store
        self._router = router
        self._hub = hub
        self._http = http
        self._metrics = metrics
        self._on_health_event = on_health_event
        self._queues: dict[str, FairQueue[Job]] = {}
        self._running: dict[str, Job] = {}
        self._running_per_user: dict[str, int] = {}
        self._queue_dirty = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._finished: dict[str, asyncio.Event] = {}
        self._wake: asyncio.TimerHandle | None = None
        # The words a transcript is searched for when its query asks (`speech_to_text
        # {spot}`): the voice mode's commands, and the broker's intents' words once it has
        # loaded them (`Broker`).
        self.vocabulary: tuple[str, ...] = COMMANDS

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the jobs a previous process accepted, then start the housekeeping tasks."""
        resumed = await self._store.queries.unfinished()
        for query in resumed:
            if query.state != QueryState.QUEUED:
                await self._store.queries.requeue(query)
            owner = await self._store.users.get(query.user_id)
            role = owner.role if owner else Role.GUEST.value
            realm = query.realm or self._router.queue_realm(query.query_type, query.model_name)
            self._queue(realm).push(Job(query, role=role, realm=realm))
        if resumed:
            log.info("scheduler.resumed", jobs=len(resumed))
        self._background = [
            asyncio.create_task(self._broadcast_queue_updates(), name="queue-updates"),
            asyncio.create_task(self._expire_loop(), name="queue-expiry"),
        ]
        self.pump()

    async def stop(self) -> None:
        """Stop without touching job state: running jobs stay `running` in the store and
        the next process re-dispatches them."""
        if self._wake is not None:
            self._wake.cancel()
        tasks = self._background + [j.task for j in self._running.values() if j.task]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _queue(self, realm: str) -> FairQueue[Job]:
        queue = self._queues.get(realm)
        if queue is None:
            state = self._router.realms.get(realm)
            limit = state.max_queue_size if state else self._settings.max_queue_size
            queue = self._queues[realm] = FairQueue(realm, limit)
        return queue

    def resize_queues(self) -> None:
        """Apply realms' queue limits after a sysop changed them."""
        for name, queue in self._queues.items():
            if (state := self._router.realms.get(name)) is not None:
                queue.limit = state.max_queue_size

    # --- queries in ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def depths(self) -> dict[str, int]:
        return {name: len(queue) for name, queue in sorted(self._queues.items())}

    async def submit(self, user: User, spec: QuerySpec) -> tuple[Query, int]:
        """Accept a query or refuse it with a `ProtocolError`; returns it and its position."""
        if user.is_banned:
            raise ProtocolError(ErrorCode.BANNED, "You are banned from submitting queries")
        check_inputs(spec, self._settings.max_prompt_chars)
        for step, model in servable(spec.query_type, spec.options, spec.model_name):
            if not self._router.could_serve(step, model):
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
        queue = self._queue(realm)
        if queue.full:
            raise ProtocolError(ErrorCode.QUEUE_FULL, "Queue is full, please try again later")
        if user.role != Role.SYSOP.value:
            limit = self._settings.max_queued_per_user
            if sum(q.count_for(user.id) for q in self._queues.values()) >= limit:
                raise ProtocolError(
                    ErrorCode.USER_LIMIT, f"you already have {limit} queries waiting"
                )
        query = await self._store.queries.create(
            Query(
                user_id=user.id,
                query_type=spec.query_type,
                model_type=spec.model_type,
                model_name=spec.model_name,
                prompt=spec.prompt,
                options=spec.options,
                realm=realm,
                image=image,
                audio=audio,
            )
        )
        job = Job(query, role=user.role, realm=realm)
        queue.push(job)
        position = queue.position(job)
        self._queue_dirty.set()
        self.pump()
        return query, position

    def pump(self) -> None:
        """Start every queued job that has a free worker slot, in fair order."""
        now = time.monotonic()
        started = 0
        for queue in self._queues.values():
            progress = True
            while progress:
                progress = False
                for job in queue.heads():
                    if self._dispatch(queue, job, now):
                        started += 1
                        progress = True
                        break  # the turn order changed: look again from the start
        if started:
            self._queue_dirty.set()

    def _dispatch(self, queue: FairQueue[Job], job: Job, now: float) -> bool:
        query = job.query
        if job.not_before > now:
            self._wake_at(job.not_before)
            return False
        limit = self._settings.max_running_per_user
        if job.priority > 0 and self._running_per_user.get(job.user_id, 0) >= limit:
            return False
        choice = self._router.select(
            step_type(query), step_model(query), query.prompt, frozenset(job.excluded)
        )
        if choice is None:
            return False
        queue.take(job)
        worker = choice.worker
        worker.in_flight += 1
        worker.circuit.on_dispatch()
        job.worker = worker
        self._running[query.id] = job
        self._running_per_user[job.user_id] = self._running_per_user.get(job.user_id, 0) + 1
        if choice.cross_realm:
            self._metrics.cross_realm.labels(job.realm, choice.realm).inc()
        job.task = asyncio.create_task(self._run(job), name=f"job-{query.id}")
        return True

    def _wake_at(self, when: float) -> None:
        """Pump again when a retry's backoff is over."""
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - time.monotonic())
        if self._wake is None or self._wake.when() > loop.time() + delay:
            if self._wake is not None:
                self._wake.cancel()
            self._wake = loop.call_later(delay, self._woken)

    def _woken(self) -> None:
        self._wake = None
        self.pump()

    # --- cancellation ----------------------------------------------------------------------

    def _find_queued(self, query_id: str) -> tuple[FairQueue[Job], Job] | None:
        for queue in self._queues.values():
            for job in queue:
                if job.query.id == query_id:
                    return queue, job
        return None

    async def cancel(self, query_id: str, *, reason: str, by_sysop: bool = False) -> bool:
        """Cancel a queued or running job; a running job's worker request is closed."""
        state_reason = (QueryState.CANCELLED, ErrorCode.CANCELLED, reason)
        if (found := self._find_queued(query_id)) is not None:
            queue, job = found
            queue.remove(job)
            self._queue_dirty.set()
            await self._finish_unsuccessful(job, *state_reason, terminated=by_sysop)
            return True
        running = self._running.get(query_id)
        if running is None or running.task is None or running.task.done():
            return False
        running.cancel_reason = state_reason
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task
        if by_sysop:
            self._hub.send_user(
                running.user_id, events.QueryTerminated(guid=running.user_id, query_id=query_id)
            )
        return True

    async def cancel_user(self, user_id: str, *, reason: str, by_sysop: bool) -> int:
        """Cancel every queued and running job of a user; returns how many."""
        jobs = [job for queue in self._queues.values() for job in queue]
        jobs += list(self._running.values())
        ids = [job.query.id for job in jobs if job.user_id == user_id]
        return sum([await self.cancel(i, reason=reason, by_sysop=by_sysop) for i in ids])

    async def wait_finished(self, query_id: str, within: float) -> None:
        """Wait until the job is no longer queued or running here (or the time is up)."""
        if query_id not in self._running and self._find_queued(query_id) is None:
            return
        event = self._finished.setdefault(query_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)

    # --- running a job ---------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        query, worker = job.query, job.worker
        assert worker is not None
        requeued = False  # for a retry, or the query's next step
        holds_slot = True
        # State writes made while the worker runs are not waited for before the request goes
        # out (a crash before they commit just means a re-dispatch after restart); they are
        # all committed before the job's outcome is handled.
        writes: list[asyncio.Task[Any]] = []
        try:
            dispatched_at = utcnow()
            writes.append(
                asyncio.create_task(
                    self._store.queries.mark_dispatched(
                        query, worker.name, query.attempts + 1, dispatched_at
                    )
                )
            )
            queue_wait = max(0.0, (dispatched_at - query.created_at).total_seconds())
            self._metrics.queue_wait.labels(job.realm).observe(queue_wait)
            self._status(query, QueryState.DISPATCHED, worker.name)
            started = time.perf_counter()
            try:
                result, result_type = await self._attempt(job, worker, writes)
            finally:
                for outcome in await asyncio.gather(*writes, return_exceptions=True):
                    if isinstance(outcome, Exception):
                        log.error("job.state_write_failed", query_id=query.id, error=str(outcome))
            processing_time = time.perf_counter() - started
            # The worker is done: its slot is free before the bookkeeping, not after it.
            worker.in_flight -= 1
            holds_slot = False
            self.pump()
            requeued = await self._succeeded(
                job, worker, result, result_type, processing_time, queue_wait
            )
        except asyncio.CancelledError:
            worker.circuit.release()
            if job.cancel_reason is None:
                raise  # broker shutdown: the job stays in the store and resumes on restart
            await self._finish_unsuccessful(job, *job.cancel_reason)
        except InputRefused as refusal:
            # The worker says the input is bad (not audio, an unknown speaker…): another
            # worker would say the same, and this one is healthy.
            worker.circuit.on_success()
            await self._finish_unsuccessful(job, QueryState.FAILED, ErrorCode.INVALID, str(refusal))
        except WorkerFailed as failure:
            log.warning(
                "job.attempt_failed", query_id=query.id, worker=worker.name, error=failure.message
            )
            await self._worker_health(worker, failure.probe)
            worker.circuit.on_failure()
            requeued = await self._retry_or_fail(job, worker, failure)
        except Exception:
            worker.circuit.release()
            log.exception("job.crashed", query_id=query.id)
            await self._finish_unsuccessful(
                job, QueryState.FAILED, ErrorCode.INTERNAL, "the broker failed to run the query"
            )
        finally:
            if holds_slot:
                worker.in_flight -= 1
            self._running.pop(query.id, None)
            self._running_per_user[job.user_id] -= 1
            if not self._running_per_user[job.user_id]:
                del self._running_per_user[job.user_id]
            if not requeued:
                self._signal_finished(query.id)
            self.pump()

    def _step_options(self, query: Query, step: str) -> dict[str, Any]:
        """The query's options for this step. A transcript that will be searched for the
        voice mode's words tells the transcriber to expect them (a small model hears an
        isolated "chat" as "jet" otherwise), and to answer at once rather than retry a
        garbled clip for seconds: the person can say it again."""
        if step == "stt" and query.options.get("spot"):
            return {**query.options, "hotwords": ", ".join(self.vocabulary), "temperature": 0.0}
        return query.options

    async def _attempt(
        self, job: Job, worker: WorkerState, writes: list[asyncio.Task[Any]]
    ) -> tuple[str, str]:
        """Run the query's current step on the worker, streaming text deltas to the owner;
        returns the result (text, or base64 media) and its type."""
        query = job.query
        stream = bool(query.options.get("stream", True))
        step = step_type(query)
        request = BackendRequest(
            prompt=step_prompt(query),
            query_type=step,
            model=worker.model_for(step_model(query)),
            model_type=query.model_type,
            model_name=step_model(query),
            stream=stream,
            options=self._step_options(query, step),
            image=query.image,
            audio=query.audio,
        )
        parts: list[str] = []
        timeout = self._settings.query_timeout
        try:
            backend = BACKENDS[worker.kind]
            # Generated text is worth showing as it comes; a transcript or media (base64)
            # only as a whole.
            pieces = backend.streams and step in ("chat", "vision")
            async with asyncio.timeout(timeout):
                async for delta in backend.generate(self._http, worker, request):
                    if not parts and pieces:
                        writes.append(asyncio.create_task(self._store.queries.mark_running(query)))
                        self._status(query, QueryState.RUNNING, worker.name)
                    parts.append(delta)
                    if stream and pieces:
                        self._to_owner(query, events.QueryChunk(query_id=query.id, delta=delta))
        except TimeoutError:
            raise WorkerFailed(
                Probe.ERROR, ErrorCode.TIMEOUT, f"worker {worker.name} took over {timeout:g} s"
            ) from None
        except BackendError as exc:
            if exc.input_refused:
                raise InputRefused(f"worker {worker.name} refused the input: {exc}") from exc
            probe = Probe.BAD_STATUS if exc.status is not None else Probe.ERROR
            raise WorkerFailed(
                probe, ErrorCode.WORKER_ERROR, f"worker {worker.name}: {exc}"
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            message = f"worker {worker.name} unreachable: {exc or type(exc).__name__}"
            raise WorkerFailed(Probe.ERROR, ErrorCode.WORKER_ERROR, message) from exc
        return "".join(parts), backend.result_type(step)

    async def _succeeded(
        self,
        job: Job,
        worker: WorkerState,
        result: str,
        result_type: str,
        processing_time: float,
        queue_wait: float,
    ) -> bool:
        """Record a successful attempt; True when the query goes on to its next step."""
        query = job.query
        worker.last_active = utcnow()
        worker.circuit.on_success()
        worker.record_latency(processing_time)
        if processing_time > self._settings.slow_job_seconds:
            await self._worker_health(worker, Probe.SLOW)
        earning = self._earning(query, worker, processing_time)
        if not is_last_step(query):
            await self._next_step(job, result, processing_time, earning)
            return True
        total_time = (query.processing_time or 0.0) + processing_time
        priced = query_cost(self._settings, total_time, premium=job.premium)
        cost = priced.cost
        charge = entry_values(
            query.user_id,
            LedgerKind.QUERY,
            -to_micros(cost),
            query_id=query.id,
            memo=query.query_type,
        )
        media = result_type in ("audio", "image")
        owner = await self._store.queries.finish_done(
            query,
            # A spoken answer keeps, as its text, the chat answer it speaks.
            result=(query.result or "") if media else result,
            result_type=result_type,
            processing_time=total_time,
            cost=cost,
            queue_wait=queue_wait,
            energy_kwh=priced.energy_kwh,
            output=result if media else None,
            delivered=self._reaches_owner(query),
            ledger=[charge, *earning],
        )
        self._metrics.queries.labels(job.realm, query.query_type, "done").inc()
        self._metrics.processing.labels(job.realm, query.query_type, worker.name).observe(
            processing_time
        )
        self._metrics.cost.labels(job.realm).inc(cost)
        self._status(query, QueryState.DONE, worker.name)
        await self._deliver(query)
        if owner is not None:
            self._hub.send_user(owner.id, events.UserInfo(data=user_view(owner)))
        return False

    def _earning(
        self, query: Query, worker: WorkerState, processing_time: float
    ) -> list[dict[str, object]]:
        """The ledger row paying the worker's owner for this step (none for a worker nobody
        owns, such as a cloud API the realm configured)."""
        amount = to_micros(owner_earning(self._settings, processing_time))
        if worker.owner_id is None or amount == 0:
            return []
        row = entry_values(
            worker.owner_id,
            LedgerKind.EARNING,
            amount,
            query_id=query.id,
            worker_name=worker.name,
            memo=step_type(query),
        )
        return [row]

    async def _next_step(
        self,
        job: Job,
        result: str,
        processing_time: float,
        earning: list[dict[str, object]],
    ) -> None:
        """Queue the query's next step at the head of its owner's line."""
        query = job.query
        transcribed = step_type(query) == "stt"
        await self._store.queries.advance(
            query,
            prompt=result if transcribed else query.prompt,
            result=None if transcribed else result,
            processing_time=processing_time,
            ledger=earning,
        )
        if transcribed:
            self._to_owner(
                query, events.TranscriptionResult(query_id=query.id, text=result, final=False)
            )
        job.excluded.clear()
        job.worker = None
        self._queue(job.realm).push(job, front=True)
        self._status(query, QueryState.QUEUED, None)
        self._queue_dirty.set()

    async def _worker_health(self, worker: WorkerState, probe: Probe) -> None:
        """Passive health: a real job's failure or slowness counts at once, by the same rules
        as a health check."""
        event = worker.apply_health(probe, no_blacklist_imagine=self._settings.no_blacklist_imagine)
        if event:
            await self._on_health_event([(worker, event)])

    async def _retry_or_fail(self, job: Job, worker: WorkerState, failure: WorkerFailed) -> bool:
        """Send the job back for another worker if one exists and attempts remain."""
        query = job.query
        job.excluded.add(worker.name)
        attempts_left = query.attempts < self._settings.max_attempts
        if not attempts_left or not self._router.could_serve(
            step_type(query), step_model(query), frozenset(job.excluded)
        ):
            await self._finish_unsuccessful(job, QueryState.FAILED, failure.code, failure.message)
            return False
        backoff = self._settings.retry_backoff * 2 ** (query.attempts - 1)
        job.not_before = time.monotonic() + backoff
        job.worker = None
        await self._store.queries.requeue(query)
        self._queue(job.realm).push(job, front=True)
        self._metrics.retries.labels(job.realm).inc()
        self._status(query, QueryState.QUEUED, None)
        self._queue_dirty.set()
        return True

    async def _finish_unsuccessful(
        self,
        job: Job,
        state: QueryState,
        code: ErrorCode,
        message: str,
        *,
        terminated: bool = False,
    ) -> None:
        query = job.query
        await self._store.queries.finish_unsuccessful(
            query,
            state,
            code=code,
            message=message,
            delivered=self._reaches_owner(query),
        )
        self._metrics.queries.labels(job.realm, query.query_type, state.value).inc()
        self._status(query, state, job.worker.name if job.worker else None)
        await self._deliver(query)
        if terminated:
            self._hub.send_user(
                query.user_id, events.QueryTerminated(guid=query.user_id, query_id=query.id)
            )
        self._signal_finished(query.id)

    def _signal_finished(self, query_id: str) -> None:
        if (event := self._finished.pop(query_id, None)) is not None:
            event.set()

    def _status(self, query: Query, state: QueryState, worker: str | None) -> None:
        query.state = state.value
        self._to_owner(
            query, events.QueryStatus(query_id=query.id, state=state.value, worker=worker)
        )

    def _reaches_owner(self, query: Query) -> bool:
        """Whether the query's final event reaches whoever it is for right now (else it
        waits for the owner's next connection)."""
        return query.is_internal or self._hub.is_connected(query.user_id)

    def _to_owner(self, query: Query, event: events.Outbound) -> None:
        """A query's event goes to its owner's connections; an internal query's (the broker
        asking a worker for itself) only to the code watching it."""
        if query.is_internal:
            self._hub.send_watchers(event)
        else:
            self._hub.send_user(query.user_id, event)

    async def _deliver(self, query: Query) -> None:
        """Send the final event. The store already marked it delivered if the owner was
        connected when it finished; if they connected just after, mark it now, or it would
        be sent again at their next reconnect. Otherwise it goes out when they reconnect."""
        event = final_event(query, self.vocabulary)
        if query.is_internal:
            self._hub.send_watchers(event)
            return
        sent = self._hub.send_final(query.user_id, query.id, event)
        if sent and not query.delivered:
            await self._store.queries.mark_delivered([query.id])
            query.delivered = True

    # --- housekeeping ----------------------------------------------------------------------

    async def _broadcast_queue_updates(self) -> None:
        while True:
            await self._queue_dirty.wait()
            self._queue_dirty.clear()
            depths = self.depths()
            for realm, depth in depths.items():
                self._metrics.queue_depth.labels(realm).set(depth)
            self._hub.broadcast(
                events.QueueUpdate(
                    depth=sum(depths.values()), total=len(self._router.registry), realms=depths
                )
            )
            await asyncio.sleep(QUEUE_UPDATE_INTERVAL)

    async def _expire_loop(self) -> None:
        timeout = self._settings.queue_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            self.pump()  # workers may have come back since the last look
            now = time.monotonic()
            for queue in self._queues.values():
                for job in [j for j in queue if now - j.enqueued > timeout]:
                    queue.remove(job)
                    self._queue_dirty.set()
                    await self._finish_unsuccessful(
                        job,
                        QueryState.EXPIRED,
                        ErrorCode.EXPIRED,
                        f"no worker took the query within {timeout:g} s",
                    )
