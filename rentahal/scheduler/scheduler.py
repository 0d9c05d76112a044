"""The scheduler: accepts queries, queues them, runs each on a free worker slot.

Many jobs run at once, one asyncio task each, bounded by the workers' `max_concurrency`
slots (the seed ran one query at a time for the whole system). The store holds every job's
state, so a restarted broker resumes what the last one accepted. The queue is FIFO, skipping
over jobs whose workers are busy; fairness between users, priorities, retries and failover
build on this in the scheduler issue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

import httpx
import structlog

from rentahal.accounting import query_cost
from rentahal.backends import BACKENDS, BackendError, BackendRequest
from rentahal.bus import events
from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.bus.hub import Hub
from rentahal.bus.messages import QuerySpec
from rentahal.bus.views import final_event, user_view
from rentahal.config import Settings
from rentahal.routing.registry import Registry, WorkerState
from rentahal.store import Query, QueryState, Role, Store, User, utcnow

log = structlog.get_logger(__name__)

QUEUE_UPDATE_INTERVAL = 0.1  # coalesce queue_update broadcasts to at most ~10/s


@dataclass(eq=False, slots=True)
class Job:
    query: Query
    premium: bool = False
    task: asyncio.Task[None] | None = None
    worker: WorkerState | None = None
    cancel_reason: tuple[QueryState, ErrorCode, str] | None = None
    enqueued: float = field(default_factory=time.monotonic)


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        hub: Hub,
        http: httpx.AsyncClient,
    ) -> None:
        self._settings = settings
        self._store = store
        self._registry = registry
        self._hub = hub
        self._http = http
        self._pending: deque[Job] = deque()
        self._running: dict[str, Job] = {}
        self._queue_dirty = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._finished: dict[str, asyncio.Event] = {}

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the jobs a previous process accepted, then start the housekeeping tasks."""
        resumed = await self._store.queries.unfinished()
        for query in resumed:
            if query.state != QueryState.QUEUED:
                await self._store.queries.requeue(query.id)
                query.state = QueryState.QUEUED.value
            owner = await self._store.users.get(query.user_id)
            self._pending.append(Job(query, premium=_is_premium(owner)))
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
        tasks = self._background + [j.task for j in self._running.values() if j.task]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- queries in ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def submit(self, user: User, spec: QuerySpec) -> tuple[Query, int]:
        """Accept a query or refuse it with a `ProtocolError`; returns it and its position."""
        if user.is_banned:
            raise ProtocolError(ErrorCode.BANNED, "You are banned from submitting queries")
        if not spec.prompt.strip():
            raise ProtocolError(ErrorCode.INVALID, "the prompt is empty")
        if len(spec.prompt) > self._settings.max_prompt_chars:
            raise ProtocolError(
                ErrorCode.INVALID,
                f"the prompt is over {self._settings.max_prompt_chars} characters",
            )
        if not self._registry.could_serve(spec.query_type, spec.model_name):
            wanted = f" with model {spec.model_name!r}" if spec.model_name else ""
            raise ProtocolError(
                ErrorCode.NO_WORKER, f"no live worker can serve a {spec.query_type} query{wanted}"
            )
        if len(self._pending) >= self._settings.max_queue_size:
            raise ProtocolError(ErrorCode.QUEUE_FULL, "Queue is full, please try again later")
        query = await self._store.queries.create(
            Query(
                user_id=user.id,
                query_type=spec.query_type,
                model_type=spec.model_type,
                model_name=spec.model_name,
                prompt=spec.prompt,
                options=spec.options,
            )
        )
        self._pending.append(Job(query, premium=_is_premium(user)))
        position = len(self._pending)
        self._queue_dirty.set()
        self.pump()
        return query, position

    def pump(self) -> None:
        """Start every queued job that has a free worker slot, oldest first."""
        if not self._pending:
            return
        depth = len(self._pending)
        waiting: deque[Job] = deque()
        while self._pending:
            job = self._pending.popleft()
            worker = self._registry.select(job.query.query_type, job.query.model_name)
            if worker is None:
                waiting.append(job)
                continue
            worker.in_flight += 1
            job.worker = worker
            self._running[job.query.id] = job
            job.task = asyncio.create_task(self._run(job), name=f"job-{job.query.id}")
        self._pending = waiting
        if len(waiting) != depth:
            self._queue_dirty.set()

    # --- cancellation ----------------------------------------------------------------------

    async def cancel(self, query_id: str, *, reason: str, by_sysop: bool = False) -> bool:
        """Cancel a queued or running job; a running job's worker request is closed."""
        state_reason = (QueryState.CANCELLED, ErrorCode.CANCELLED, reason)
        for job in self._pending:
            if job.query.id == query_id:
                self._pending.remove(job)
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
                running.query.user_id,
                events.QueryTerminated(guid=running.query.user_id, query_id=query_id),
            )
        return True

    def active_jobs(self, user_id: str | None = None) -> list[Query]:
        jobs = [*self._pending, *self._running.values()]
        return [j.query for j in jobs if user_id is None or j.query.user_id == user_id]

    async def cancel_user(self, user_id: str, *, reason: str, by_sysop: bool) -> int:
        queries = self.active_jobs(user_id)
        cancelled = [await self.cancel(q.id, reason=reason, by_sysop=by_sysop) for q in queries]
        return sum(cancelled)

    async def wait_finished(self, query_id: str, within: float) -> None:
        """Wait until the job is no longer queued or running here (or the timeout passes)."""
        if all(j.query.id != query_id for j in (*self._pending, *self._running.values())):
            return
        event = self._finished.setdefault(query_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)

    # --- running a job ---------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        query, worker = job.query, job.worker
        assert worker is not None
        backend = BACKENDS[worker.kind]
        stream = bool(query.options.get("stream", True))
        request = BackendRequest(
            prompt=query.prompt,
            query_type=query.query_type,
            model=worker.model_for(query.model_name),
            model_type=query.model_type,
            model_name=query.model_name,
            stream=stream,
            options=query.options,
        )
        try:
            query.attempts += 1
            dispatched_at = await self._store.queries.mark_dispatched(
                query.id, worker.name, query.attempts
            )
            queue_wait = (dispatched_at - query.created_at).total_seconds()
            self._status(query, QueryState.DISPATCHED, worker.name)
            started = time.perf_counter()
            parts: list[str] = []
            async with asyncio.timeout(self._settings.query_timeout):
                async for delta in backend.generate(self._http, worker, request):
                    if not parts:
                        await self._store.queries.mark_running(query.id)
                        self._status(query, QueryState.RUNNING, worker.name)
                    parts.append(delta)
                    if stream:
                        self._hub.send_user(
                            query.user_id, events.QueryChunk(query_id=query.id, delta=delta)
                        )
            processing_time = time.perf_counter() - started
            result = "".join(parts)
            cost = query_cost(self._settings, processing_time, premium=job.premium).cost
            await self._store.queries.finish_done(
                query,
                result=result,
                result_type="text",
                processing_time=processing_time,
                cost=cost,
                queue_wait=max(0.0, queue_wait),
            )
            worker.last_active = utcnow()
            self._status(query, QueryState.DONE, worker.name)
            await self._deliver(query)
            if owner := await self._store.users.get(query.user_id):
                self._hub.send_user(owner.id, events.UserInfo(data=user_view(owner)))
        except asyncio.CancelledError:
            if job.cancel_reason is None:
                raise  # broker shutdown: the job stays in the store and resumes on restart
            await self._finish_unsuccessful(job, *job.cancel_reason)
        except TimeoutError:
            await self._finish_unsuccessful(
                job,
                QueryState.FAILED,
                ErrorCode.TIMEOUT,
                f"worker {worker.name} took longer than {self._settings.query_timeout:g} s",
            )
        except (BackendError, httpx.HTTPError) as exc:
            log.warning("job.worker_failed", query_id=query.id, worker=worker.name, error=str(exc))
            await self._finish_unsuccessful(
                job, QueryState.FAILED, ErrorCode.WORKER_ERROR, f"worker {worker.name}: {exc}"
            )
        except Exception:
            log.exception("job.crashed", query_id=query.id)
            await self._finish_unsuccessful(
                job, QueryState.FAILED, ErrorCode.INTERNAL, "the broker failed to run the query"
            )
        finally:
            worker.in_flight -= 1
            self._running.pop(query.id, None)
            self._signal_finished(query.id)
            self.pump()

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
        await self._store.queries.finish_unsuccessful(query, state, code=code, message=message)
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
        self._hub.send_user(
            query.user_id, events.QueryStatus(query_id=query.id, state=state.value, worker=worker)
        )

    async def _deliver(self, query: Query) -> None:
        """Send the final event; if the owner is connected, the job counts as delivered
        (otherwise it is sent when they reconnect)."""
        if self._hub.send_user(query.user_id, final_event(query)):
            await self._store.queries.mark_delivered([query.id])

    # --- housekeeping ----------------------------------------------------------------------

    async def _broadcast_queue_updates(self) -> None:
        while True:
            await self._queue_dirty.wait()
            self._queue_dirty.clear()
            self._hub.broadcast(events.QueueUpdate(depth=self.depth, total=len(self._registry)))
            await asyncio.sleep(QUEUE_UPDATE_INTERVAL)

    async def _expire_loop(self) -> None:
        timeout = self._settings.queue_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            self.pump()  # workers may have come back since the last look
            now = time.monotonic()
            expired = [j for j in self._pending if now - j.enqueued > timeout]
            for job in expired:
                self._pending.remove(job)
                await self._finish_unsuccessful(
                    job,
                    QueryState.EXPIRED,
                    ErrorCode.EXPIRED,
                    f"no worker took the query within {timeout:g} s",
                )
            if expired:
                self._queue_dirty.set()


def _is_premium(user: User | None) -> bool:
    return user is not None and user.role in (Role.PREMIUM.value, Role.SYSOP.value)
