"""One job's life on a worker: the attempt, then its outcome (the next step, a retry on
another worker, or the end), each recorded in the store before anyone is told.

A worker that fails a job (error status, lost connection, timeout) loses health at once and
trips its circuit breaker after repeated failures; the job goes back to the head of its
owner's line for another worker, up to `max_attempts`. The writes that report an outcome are
retried through a store outage rather than lost with the job's task (`StoreHealth.persist`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import httpx
import structlog

from rentahal.backends import BACKENDS, BackendError, BackendRequest
from rentahal.backends.base import ServedBy
from rentahal.config import Settings
from rentahal.core.errors import ErrorCode
from rentahal.core.ports import Notifier, WorkerSlots
from rentahal.core.stages import (
    is_last_step,
    speaks,
    step_model,
    step_model_type,
    step_prompt,
    step_type,
)
from rentahal.core.validation import storable
from rentahal.metrics import Metrics
from rentahal.routing.health import Probe
from rentahal.routing.registry import WorkerState
from rentahal.routing.router import Router
from rentahal.scheduler import billing
from rentahal.scheduler.jobs import Job
from rentahal.scheduler.speaking import SpokenAnswer
from rentahal.speech.speakable import SILENT_NOTE, speakable
from rentahal.store import Query, QueryState, Store, User, utcnow

log = structlog.get_logger(__name__)

HealthListener = Callable[[list[tuple[WorkerState, str]]], Awaitable[None]]


class WorkerFailed(Exception):
    """One attempt failed on the worker's side; carries how it affects the worker's health."""

    def __init__(self, probe: Probe, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.probe, self.code, self.message = probe, code, message


class InputRefused(Exception):
    """The worker refused the query's input as invalid (HTTP 400/413/422)."""


class Runner:
    """Runs dispatched jobs; the scheduler hands each one over with its worker's slot held,
    and is called back to put a job back in line (`requeue`) and when a slot is free again
    (`slot_freed`)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        router: Router,
        http: httpx.AsyncClient,
        metrics: Metrics,
        notifier: Notifier[Query, User],
        slots: WorkerSlots[WorkerState],
        on_health_event: HealthListener,
        *,
        requeue: Callable[[Job], Awaitable[None]],
        slot_freed: Callable[[], None],
        vocabulary: Callable[[], Sequence[str]],
    ) -> None:
        self._settings = settings
        self._store = store
        self._router = router
        self._http = http
        self._metrics = metrics
        self._notifier = notifier
        self._slots = slots
        self._on_health_event = on_health_event
        self._requeue = requeue
        self._slot_freed = slot_freed
        self._vocabulary = vocabulary
        self._durable = store.health.persist

    async def run(self, job: Job) -> bool:
        """Attempt the job's current step and record what came of it; True when it went back
        in line (a retry, or the query's next step)."""
        query, worker = job.query, job.worker
        assert worker is not None
        holds_slot = True
        # The writes made while the worker works (the attempt, `running`) are not waited for
        # on the way: they are committed before the job's outcome is handled, and the
        # outcome's writes come after them.
        writes: list[asyncio.Task[Any]] = []
        try:
            if job.cancel_reason is not None:  # cancelled before its task began
                raise asyncio.CancelledError
            # The attempt is written as the worker hears of it, so that a restarted broker
            # knows this job may have run, and counts the attempt. Waiting for its commit
            # first would leave the worker idle for a round trip through the store on every
            # job; a broker that dies within that millisecond runs the job again uncounted.
            if job.attempt_recorded and query.dispatched_at is not None:  # with the job's row
                job.attempt_recorded = False
                dispatched_at = query.dispatched_at
            else:
                dispatched_at = utcnow()
                attempt = query.attempts + 1
                recorded = self._durable(
                    lambda: self._store.queries.mark_dispatched(
                        query, worker.name, attempt, dispatched_at
                    )
                )
                writes.append(asyncio.create_task(recorded))
            queue_wait = max(0.0, (dispatched_at - query.created_at).total_seconds())
            self._metrics.queue_wait.labels(job.realm).observe(queue_wait)
            self._status(query, QueryState.DISPATCHED, worker.name)
            started = time.perf_counter()
            try:
                result, result_type = await self._attempt(job, worker, writes)
                processing_time = time.perf_counter() - started
                job.worker_done()
                # The worker is done: its slot is free before the bookkeeping, not after it
                # (the `running` write's commit included), and its time is the worker's own.
                await self._slots.release(worker)
                holds_slot = False
                self._slot_freed()
            finally:
                for outcome in await asyncio.gather(*writes, return_exceptions=True):
                    if isinstance(outcome, Exception):
                        log.error("job.state_write_failed", query_id=query.id, error=str(outcome))
            return await self._succeeded(
                job, worker, result, result_type, processing_time, queue_wait
            )
        except asyncio.CancelledError:
            worker.circuit.release()
            if job.cancel_reason is None:
                raise  # broker shutdown: the job stays in the store and resumes on restart
            reason = job.cancel_reason
            await self.finish_unsuccessful(job, reason.state, reason.code, reason.message)
        except InputRefused as refusal:
            # The worker says the input is bad (not audio, an unknown speaker…): another
            # worker would say the same, and this one is healthy.
            worker.circuit.on_success()
            await self.finish_unsuccessful(job, QueryState.FAILED, ErrorCode.INVALID, str(refusal))
        except WorkerFailed as failure:
            log.warning(
                "job.attempt_failed", query_id=query.id, worker=worker.name, error=failure.message
            )
            await self._worker_health(worker, failure.probe)
            worker.circuit.on_failure()
            return await self._retry_or_fail(job, worker, failure)
        except Exception:
            worker.circuit.release()
            log.exception("job.crashed", query_id=query.id)
            job.worker_done()
            await self.finish_unsuccessful(
                job, QueryState.FAILED, ErrorCode.INTERNAL, "the broker failed to run the query"
            )
        finally:
            if holds_slot:
                await self._slots.release(worker)
        return False

    def _step_options(self, query: Query, step: str) -> dict[str, Any]:
        """The query's options for this step. A transcript that will be searched for the
        voice mode's words tells the transcriber to expect them (a small model hears an
        isolated "chat" as "jet" otherwise), and to answer at once rather than retry a
        garbled clip for seconds: the person can say it again."""
        if step == "stt" and query.options.get("spot"):
            hotwords = ", ".join(self._vocabulary())
            return {**query.options, "hotwords": hotwords, "temperature": 0.0}
        return query.options

    def _step_text(self, query: Query, step: str) -> str:
        """What the step works on; a spoken answer is said as speech suits (no markdown or
        code read aloud, capped, a note if nothing can be said), while the text answer stays
        whole."""
        text = step_prompt(query)
        if step == "tts" and speaks(query.query_type, query.options):
            spoken = speakable(
                text,
                max_sentences=self._settings.spoken_answer_max_sentences,
                max_seconds=self._settings.spoken_answer_max_seconds,
            )
            return spoken or SILENT_NOTE
        return text

    async def _attempt(
        self, job: Job, worker: WorkerState, writes: list[asyncio.Task[Any]]
    ) -> tuple[str, str]:
        """Run the query's current step on the worker, streaming text deltas to the owner;
        returns the result (text, or base64 media) and its type."""
        query = job.query
        stream = bool(query.options.get("stream", True))
        step = step_type(query)
        request = BackendRequest(
            prompt=self._step_text(query, step),
            query_type=step,
            model=worker.model_for(step_model(query)),
            model_type=query.model_type,
            model_name=step_model(query),
            stream=stream,
            options=self._step_options(query, step),
            image=query.image,
            audio=query.audio,
            job_id=f"{query.id}.{query.stage}",
            hops=(*query.hops, self._settings.federation_id),
        )
        async with self._speaking(job, step) as speaker:
            result, result_type = await self._generate(job, worker, request, writes, speaker)
            if speaker is not None:
                job.spoken = await speaker.finish(self._settings.query_timeout)
        return result, result_type

    async def _generate(
        self,
        job: Job,
        worker: WorkerState,
        request: BackendRequest,
        writes: list[asyncio.Task[Any]],
        speaker: SpokenAnswer | None,
    ) -> tuple[str, str]:
        """The worker's answer to `request`, its text shown and spoken as it comes."""
        query, step = job.query, request.query_type
        parts: list[str] = []
        timeout = self._settings.query_timeout
        try:
            backend = BACKENDS[worker.kind]
            # Generated text is worth showing as it comes, when it is asked for so; a
            # transcript or media (base64) only as a whole. A query is `running` while its
            # answer streams: one that waits for the whole answer goes from dispatched to done.
            pieces = request.stream and backend.streams and step in ("chat", "vision")
            async with asyncio.timeout(timeout):
                async for delta in backend.generate(self._http, worker.endpoint, request):
                    if isinstance(delta, ServedBy):
                        query.worker_name = f"{worker.name}/{delta.worker}"
                        continue
                    if not parts and pieces:
                        running = self._durable(lambda: self._store.queries.mark_running(query))
                        writes.append(asyncio.create_task(running))
                        self._status(query, QueryState.RUNNING, worker.name)
                    parts.append(delta)
                    if pieces:
                        self._notifier.chunk(query, delta)
                    if speaker is not None:
                        speaker.feed(delta)
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
        result_type = backend.result_type(step)
        result = "".join(parts)
        return (storable(result) if result_type == "text" else result), result_type

    @contextlib.asynccontextmanager
    async def _speaking(self, job: Job, step: str) -> AsyncIterator[SpokenAnswer | None]:
        """A speaker for the answering step of a query that speaks its answer, on a TTS
        worker slot held while it writes (`speaking.py`); None when the query does not speak
        or no TTS slot is free now (its speaking step then says the answer)."""
        query = job.query
        if step in ("stt", "tts") or not speaks(query.query_type, query.options):
            yield None
            return
        choice = self._router.select("tts", "")
        if choice is None or not await self._slots.acquire(choice.worker):
            yield None
            return
        tts = choice.worker
        tts.circuit.on_dispatch()
        speaker = SpokenAnswer(
            query,
            self._notifier,
            partial(self._say, job, tts),
            worker=tts.name,
            owner_id=tts.owner_id,
            max_sentences=self._settings.spoken_answer_max_sentences,
            max_seconds=self._settings.spoken_answer_max_seconds,
        )
        try:
            yield speaker
        finally:
            speaker.abort()  # nothing left to stop once it has finished
            if speaker.failed:
                tts.circuit.on_failure()
            elif job.spoken is not None:
                tts.circuit.on_success()
            else:
                tts.circuit.release()
            await self._slots.release(tts)
            self._slot_freed()

    async def _say(self, job: Job, tts: WorkerState, text: str, seq: int) -> str:
        """One sentence of the answer, spoken by `tts`: its audio, base64 WAV."""
        query = job.query
        request = BackendRequest(
            prompt=text,
            query_type="tts",
            model=tts.model_for(""),
            model_type=query.model_type,
            model_name="",
            stream=False,
            options=self._step_options(query, "tts"),
            job_id=f"{query.id}.{query.stage}.{seq}",
        )
        backend = BACKENDS[tts.kind]
        parts = backend.generate(self._http, tts.endpoint, request)
        return "".join([part async for part in parts if isinstance(part, str)])

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
        spoken = job.spoken
        if spoken is not None:
            # The answering worker's own time; the TTS worker's is counted on its own.
            processing_time -= spoken.waited
        worker.last_active = utcnow()
        worker.circuit.on_success()
        worker.record_latency(processing_time)
        if processing_time > self._settings.slow_job_seconds:
            await self._worker_health(worker, Probe.SLOW)
        earning = billing.earning(
            self._settings, query, worker.name, worker.owner_id, processing_time
        )
        if not is_last_step(query) and spoken is None:
            await self._next_step(job, result, processing_time, earning)
            return True
        # The seconds the workers served: each step's, and the sentences said while written.
        served = processing_time + (spoken.seconds if spoken is not None else 0.0)
        total_time = (query.processing_time or 0.0) + served
        charge = billing.charge(self._settings, query, total_time, premium=job.premium)
        # A spoken answer keeps, as its text, the chat answer it speaks.
        text, output = result, None
        if spoken is not None:  # said while written: its speaking step is done
            text, output, result_type = result, spoken.audio, "audio"
            earning += billing.earning(
                self._settings, query, spoken.worker, spoken.owner_id, spoken.seconds, "tts"
            )
        elif result_type in ("audio", "image"):
            text, output = query.result or "", result
        owner = await self._durable(
            lambda: self._store.queries.finish_done(
                query,
                result=text,
                result_type=result_type,
                processing_time=total_time,
                cost=charge.cost,
                queue_wait=queue_wait,
                energy_kwh=charge.energy_kwh,
                output=output,
                delivered=self._notifier.reaches_owner(query),
                ledger=[charge.row, *earning],
            )
        )
        self._metrics.queries.labels(job.realm, query.query_type, "done").inc()
        self._metrics.processing.labels(job.realm, query.query_type, worker.name).observe(
            processing_time
        )
        self._metrics.cost.labels(job.realm).inc(charge.cost)
        self._status(query, QueryState.DONE, worker.name)
        await self._deliver(query)
        if owner is not None:
            self._notifier.account_changed(owner)
        return False

    async def _next_step(
        self,
        job: Job,
        result: str,
        processing_time: float,
        earning: list[billing.LedgerRow],
    ) -> None:
        """Queue the query's next step at the head of its owner's line."""
        query = job.query
        transcribed = step_type(query) == "stt"
        await self._durable(
            lambda: self._store.queries.advance(
                query,
                prompt=result if transcribed else query.prompt,
                result=None if transcribed else result,
                processing_time=processing_time,
                ledger=earning,
            )
        )
        if transcribed:
            self._notifier.transcript(query, result)
        job.next_step()
        await self._requeue(job)
        self._status(query, QueryState.QUEUED, None)

    async def _worker_health(self, worker: WorkerState, probe: Probe) -> None:
        """Passive health: a real job's failure or slowness counts at once, by the same rules
        as a health check."""
        event = worker.apply_health(probe, no_blacklist_imagine=self._settings.no_blacklist_imagine)
        if event:
            await self._on_health_event([(worker, event)])

    async def _retry_or_fail(self, job: Job, worker: WorkerState, failure: WorkerFailed) -> bool:
        """Send the job back for another worker if one exists and attempts remain."""
        query = job.query
        job.failed_on(worker)
        attempts_left = query.attempts < self._settings.max_attempts
        if not attempts_left or not self._router.could_serve(
            step_type(query),
            step_model(query),
            frozenset(job.excluded),
            model_type=step_model_type(query),
            hops=query.hops,
        ):
            await self.finish_unsuccessful(job, QueryState.FAILED, failure.code, failure.message)
            return False
        job.retry_after(self._settings.retry_backoff * 2 ** (query.attempts - 1))
        await self._durable(lambda: self._store.queries.requeue(query))
        await self._requeue(job)
        self._metrics.retries.labels(job.realm).inc()
        self._status(query, QueryState.QUEUED, None)
        return True

    async def finish_unsuccessful(
        self,
        job: Job,
        state: QueryState,
        code: ErrorCode,
        message: str,
        *,
        terminated: bool = False,
    ) -> None:
        """Record the job's end without a result (failed, cancelled, expired) and tell its
        owner; `terminated`: a sysop ended it."""
        query = job.query
        await self._durable(
            lambda: self._store.queries.finish_unsuccessful(
                query,
                state,
                code=code,
                message=message,
                delivered=self._notifier.reaches_owner(query),
            )
        )
        self._metrics.queries.labels(job.realm, query.query_type, state.value).inc()
        self._status(query, state, job.worker.name if job.worker else None)
        await self._deliver(query)
        if terminated:
            self._notifier.terminated(query)

    def _status(self, query: Query, state: QueryState, worker: str | None) -> None:
        query.state = state.value
        self._notifier.status(query, state.value, worker)

    async def _deliver(self, query: Query) -> None:
        """Send the final event. The store already marked it delivered if the owner was
        connected when it finished; if they connected just after, mark it now, or it would
        be sent again at their next reconnect. Otherwise it goes out when they reconnect."""
        if self._notifier.finished(query) and not query.delivered:
            await self._durable(lambda: self._store.queries.mark_delivered([query.id]))
            query.delivered = True
