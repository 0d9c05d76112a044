"""`AsyncClient`: a program's connection to a RENT A HAL broker over its WebSocket bus.

Every request carries a fresh `id`; the broker's direct reply echoes it as `response_to`
and resolves the future waiting on it (SPEC §3), so any number of requests can be in
flight at once. A submitted query becomes a `QueryHandle` keyed by its `query_id`, fed by
the query's later events (status, streamed text, the final result) whichever socket they
arrive on, so a handle outlives reconnects. Everything else the broker sends reaches
`subscribe` handlers and `events()` iterators.

Calls go through a circuit breaker and a retry policy (see `circuit` and `retry`). A
request that may already have reached the broker is never re-sent automatically: a
re-sent `submit_query` would run, and charge, the query twice.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from rentahal.client.circuit import CircuitBreaker
from rentahal.client.connection import RECONNECT_BACKOFF, Connection, endpoints
from rentahal.client.errors import (
    Conflict,
    ConnectionLost,
    InvalidRequest,
    QueryFailed,
    RentahalError,
    RequestTimeout,
    Unauthorized,
    error_from_event,
    is_safe_to_resend,
)
from rentahal.client.handle import QueryHandle
from rentahal.client.results import Event, QueryResult, is_final
from rentahal.client.retry import Backoff, RetryPolicy
from rentahal.client.subscriptions import EventStream, Handler, Subscriptions
from rentahal.core.vocabulary import QueryType

log = logging.getLogger("rentahal.client")

T = TypeVar("T")

MAX_MESSAGE_SIZE = 1_048_576  # the broker's default `max_message_size`
ORPHAN_QUERIES = 256  # queries whose events are kept until a handle claims them
ORPHAN_EVENTS = 10_000  # events kept per such query
FINISHED_STATES = frozenset({"done", "failed", "cancelled", "expired"})


def settings_from_env() -> tuple[str, str]:
    """The broker URL (`RENTAHAL_URL`, default http://127.0.0.1:5000) and the API key
    (`RENTAHAL_API_KEY`) from the environment."""
    url = os.environ.get("RENTAHAL_URL", "http://127.0.0.1:5000")
    api_key = os.environ.get("RENTAHAL_API_KEY", "")
    if not api_key:
        raise ValueError("set RENTAHAL_API_KEY to your API key")
    return url, api_key


@dataclass(slots=True)
class _Pending:
    """A request waiting for its direct reply."""

    future: asyncio.Future[Any]
    expect: frozenset[str] | None  # reply types that answer it (an `error` always does)
    on_reply: Callable[[Event], Any] | None = None  # runs in the reader, before anything else
    sent: bool = field(default=False)


def _b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


class AsyncClient:
    """An async client of a broker's bus, authenticated by an API key.

    ```
    async with AsyncClient("http://127.0.0.1:5000", api_key) as client:
        print(await client.chat("What is the capital of France?"))
    ```

    `timeout` bounds connecting and each direct reply; `result_timeout` (None: no limit
    beyond the broker's own queue and worker timeouts) bounds waiting for results in the
    convenience calls. `retry` and `breaker` take a policy or breaker of your own, True for
    the defaults (3 retries from 1 s, doubling; 5 failures open the circuit for 60 s), or
    False for none. `reconnect` is the backoff between reconnect attempts (None: do not
    reconnect); after `reconnect_timeout` seconds without the broker the client gives up
    and everything waiting on it fails with `ConnectionLost`.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        result_timeout: float | None = None,
        retry: RetryPolicy | bool = True,
        breaker: CircuitBreaker | bool = True,
        reconnect: Backoff | None = RECONNECT_BACKOFF,
        reconnect_timeout: float | None = 300.0,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is needed (make one with POST /api/v1/keys)")
        self.url = url
        self.ws_url, self.http_url = endpoints(url)
        self._api_key = api_key
        self.timeout = timeout
        self.result_timeout = result_timeout
        self.retry: RetryPolicy | None = RetryPolicy() if retry is True else (retry or None)
        self.breaker: CircuitBreaker | None = (
            CircuitBreaker() if breaker is True else (breaker or None)
        )
        self._reconnect = reconnect
        self._reconnect_timeout = reconnect_timeout
        self.max_message_size = max_message_size
        self._connection: Connection | None = None
        self._pending: dict[str, _Pending] = {}
        # Submits whose caller stopped waiting after sending: cancel them if accepted.
        self._abandoned: collections.OrderedDict[str, Callable[[Event], None]] = (
            collections.OrderedDict()
        )
        self._handles: dict[str, QueryHandle] = {}
        self._orphans: collections.OrderedDict[str, list[Event]] = collections.OrderedDict()
        self._subscriptions = Subscriptions()
        self._latest: dict[str, Event] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self.user: dict[str, Any] | None = None
        self.reconnects = 0
        self._topics: list[str] | None = None  # None: every topic (the broker's default)

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """A client for `RENTAHAL_URL` (default http://127.0.0.1:5000) with the key in
        `RENTAHAL_API_KEY`, so scripts keep secrets out of their source."""
        url, api_key = settings_from_env()
        return cls(url, api_key, **options)

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection and wait for the broker's greeting (`client.user` is then
        set). Transient failures are retried by the retry policy; a refused key raises
        `Unauthorized` at once."""
        if self._connection is not None:
            raise RuntimeError("this client is already connected (or was closed)")
        self._connection = Connection(
            self.ws_url,
            self._api_key,
            on_message=self._dispatch,
            on_up=self._on_up,
            on_down=self._on_down,
            on_end=self._on_end,
            open_timeout=self.timeout,
            backoff=self._reconnect,
            give_up_after=self._reconnect_timeout,
        )
        try:
            await self._connection.open(self.retry)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; queries still running on the broker go on, but this client
        stops waiting for them (their handles fail with `ConnectionLost`)."""
        if self._connection is not None:
            await self._connection.close()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._subscriptions.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def connected(self) -> bool:
        """Is a socket to the broker open and greeted right now?"""
        return self._connection is not None and self._connection.is_up

    @property
    def pings_answered(self) -> int:
        """The broker's heartbeat pings answered so far (it drops a client that misses two)."""
        return self._connection.pings_answered if self._connection is not None else 0

    async def wait_connected(self) -> None:
        """Wait until connected (e.g. after a drop), at most the client's `timeout`; raises
        `ConnectionLost` then, or at once if the client has given up."""
        await self._conn().wait_up(self.timeout)

    def _conn(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("not connected: use `async with AsyncClient(...)` or connect()")
        return self._connection

    # --- events ----------------------------------------------------------------------------

    def subscribe(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(event)` (a function or a coroutine function) for every event of
        `event_type` the broker sends (`"*"`: all of them). Returns `unsubscribe()`."""
        return self._subscriptions.subscribe(event_type, handler)

    def events(self, *types: str, maxsize: int = 1000) -> EventStream:
        """Every event the broker sends from now on (only `types`, if given), as an async
        iterator. Close it (or use `async with`) when done."""
        return self._subscriptions.stream(types, maxsize)

    async def subscribe_topics(self, topics: Iterable[str]) -> frozenset[str]:
        """Hear only these topics' broadcasts from now on (`queries`, `workers`, `queue`,
        `broadcasts`, and for sysops `users`): the broker stops sending the rest, rather than
        this client dropping them. Your own queries' events always come. Until this is
        called a connection hears every topic it may; the choice is sent again after a
        reconnect. Returns the topics in effect; an unknown topic raises `InvalidRequest`,
        a sysop topic asked by anyone else `Forbidden`."""
        wanted = list(topics)
        reply = await self._guarded(
            lambda: self._request(
                {"type": "subscribe", "topics": wanted}, frozenset({"subscribed"})
            ),
            idempotent=True,
        )
        self._topics = wanted
        return frozenset(reply["topics"])

    def latest(self, event_type: str) -> Event | None:
        """The last event of a type received (e.g. `worker_update`, `queue_update`), for
        the state of the realm now without waiting for its next change."""
        return self._latest.get(event_type)

    # --- requests --------------------------------------------------------------------------

    async def request(
        self,
        message: Mapping[str, Any],
        *,
        expect: Iterable[str] | None = None,
    ) -> Event:
        """Send any bus message with a new `id` and return the broker's direct reply (the
        event whose `response_to` is that id and whose type is in `expect`, if given). An
        `error` reply is raised as the matching `RentahalError`. For messages that have a
        direct reply (sysop commands, `get_stats`, `set_nickname`, …)."""
        wanted = frozenset(expect) if expect is not None else None
        return await self._guarded(
            lambda: self._request(dict(message), wanted),
            idempotent=False,
        )

    async def _request(
        self,
        message: Event,
        expect: frozenset[str] | None,
        *,
        on_reply: Callable[[Event], T] | None = None,
        on_abandon: Callable[[Event], None] | None = None,
    ) -> Any:
        connection = self._conn()
        request_id = uuid.uuid4().hex
        message["id"] = request_id
        pending = _Pending(asyncio.get_running_loop().create_future(), expect, on_reply)
        self._pending[request_id] = pending
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await connection.send(message, within=None)
                pending.sent = True
                return await pending.future
        except TimeoutError:
            if not deadline.expired():
                raise
            kind = message.get("type")
            if not pending.sent:
                raise ConnectionLost(f"not connected in time to send {kind}") from None
            raise RequestTimeout(f"no reply to {kind} in time", request_sent=True) from None
        finally:
            self._pending.pop(request_id, None)
            if on_abandon is not None and pending.sent and not pending.future.done():
                self._abandoned[request_id] = on_abandon
                while len(self._abandoned) > ORPHAN_QUERIES:
                    self._abandoned.popitem(last=False)

    async def _guarded(self, factory: Callable[[], Awaitable[T]], *, idempotent: bool = False) -> T:
        """Run a call under the circuit breaker and the retry policy. Only idempotent calls
        are retried after their request was sent."""
        breaker = self.breaker
        call: Callable[[], Awaitable[T]] = (
            factory if breaker is None else (lambda: breaker.call(factory))
        )
        policy = self.retry
        if policy is None:
            return await call()
        if not idempotent:
            base = policy.retry_if
            policy = policy.with_retry_if(lambda exc: base(exc) and is_safe_to_resend(exc))
        return await policy.call(call)

    async def previous_queries(self, limit: int = 10) -> list[Event]:
        """Your most recent queries, newest first, as the broker keeps them (`QueryView`:
        query_id, prompt, state, result, cost, …)."""
        reply = await self._guarded(
            lambda: self._request(
                {"type": "get_previous_queries", "limit": limit}, frozenset({"previous_queries"})
            ),
            idempotent=True,
        )
        data: list[Event] = reply.get("data", [])
        return data

    async def set_nickname(self, nickname: str) -> dict[str, Any]:
        """Choose the name other users and the sysop see; returns your updated account."""
        reply = await self.request(
            {"type": "set_nickname", "nickname": nickname}, expect={"user_info"}
        )
        user: dict[str, Any] = reply["data"]
        return user

    async def intent(
        self,
        text: str,
        *,
        intent: str | None = None,
        speak: bool = False,
        units: str | None = None,
        location: tuple[float, float] | None = None,
        image: bytes | None = None,
    ) -> Event:
        """Ask in words ("weather in Paris", "read my email"); the broker chooses the intent
        (docs/intents.md) and returns `intent_result`: `answer` when the intent answered
        itself, or `query_id` of the query it queued, whose events follow (`events()`)."""
        message: dict[str, Any] = {"type": "intent", "text": text, "speak": speak}
        if intent is not None:
            message["intent"] = intent
        if units is not None:
            message["units"] = units
        if location is not None:
            message["location"] = {"lat": location[0], "lon": location[1]}
        if image is not None:
            message["image"] = base64.b64encode(image).decode()
        return await self.request(message, expect={"intent_result"})

    # --- queries ---------------------------------------------------------------------------

    async def submit(
        self,
        prompt: str = "",
        query_type: QueryType | str = QueryType.CHAT,
        model_name: str = "",
        *,
        model_type: str = "worker_node",
        image: bytes | None = None,
        audio: bytes | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> QueryHandle:
        """Queue a query and return its handle once the broker has accepted it.

        `image` (vision) and `audio` (stt, speech) are raw file bytes. `options` go to the
        broker as they are (`stream`, `speak`, `width`/`height`, `language`, `speaker` …).
        Raises `Refused` (e.g. code `no_worker`), `InvalidRequest` or `Forbidden` when the
        broker will not take it. Media too large for one bus message goes by HTTP upload.
        """
        return await self._guarded(
            lambda: self._submit(prompt, query_type, model_name, model_type, image, audio, options)
        )

    async def _submit(
        self,
        prompt: str,
        query_type: QueryType | str,
        model_name: str,
        model_type: str,
        image: bytes | None,
        audio: bytes | None,
        options: Mapping[str, Any] | None,
    ) -> QueryHandle:
        query: Event = {
            "prompt": prompt,
            "query_type": query_type,
            "model_type": model_type,
            "model_name": model_name,
            "options": dict(options or {}),
        }
        if image is not None:
            query["image"] = _b64(image)
        if audio is not None:
            query["audio"] = _b64(audio)
        message: Event = {"type": "submit_query", "query": query}
        # The broker answers an oversized frame with an error it cannot tie to a request,
        # so size is checked here; the id to come adds under 64 bytes.
        size = len(json.dumps(message, separators=(",", ":")).encode()) + 64
        if size > self.max_message_size:
            if image is None and audio is None:
                raise InvalidRequest(
                    "too_large",
                    f"the query is {size} bytes; the broker takes up to "
                    f"{self.max_message_size} in one message",
                )
            return await self._upload(query, image, audio)

        def accepted(event: Event) -> QueryHandle:
            return self._track(str(event["query_id"]), query_type, int(event.get("position", 0)))

        def abandoned(event: Event) -> None:
            self._spawn(self._cancel_unwatched(str(event["query_id"])))

        handle: QueryHandle = await self._request(
            message, frozenset({"query_accepted"}), on_reply=accepted, on_abandon=abandoned
        )
        return handle

    async def _upload(self, query: Event, image: bytes | None, audio: bytes | None) -> QueryHandle:
        """Submit by multipart HTTP upload (`POST /api/v1/queries/upload`), for images and
        recordings over the bus's message limit; the query's events still come on the bus."""
        data = image if image is not None else audio
        assert data is not None
        form = {
            "query_type": query["query_type"],
            "prompt": query["prompt"],
            "model_name": query["model_name"],
            "speak": "true" if query["options"].get("speak") else "false",
        }
        try:
            response = await self._http_client().post(
                "/api/v1/queries/upload",
                data=form,
                files={"file": ("upload", bytes(data))},
            )
        except httpx.ConnectError as exc:
            raise ConnectionLost(f"cannot reach {self.http_url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise RequestTimeout(f"no answer to the upload in time: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ConnectionLost(f"the upload failed: {exc}", request_sent=True) from exc
        body = self._json_or_error(response)
        return self._track(str(body["query_id"]), query["query_type"], int(body["position"]))

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.http_url,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=self.timeout,
            )
        return self._http

    @staticmethod
    def _json_or_error(response: httpx.Response) -> Event:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.is_success and isinstance(body, dict):
            return body
        detail = body.get("detail") if isinstance(body, dict) else None
        if response.status_code == 401:
            raise Unauthorized(None, "the broker refused the API key")
        if isinstance(detail, dict) and "code" in detail:
            raise error_from_event(detail)
        raise RentahalError("http_error", f"HTTP {response.status_code}: {detail or body}")

    def _track(self, query_id: str, query_type: str, position: int) -> QueryHandle:
        """The handle for an accepted query, with any of its events that came first."""
        handle = self._handles.get(query_id)
        if handle is None:
            handle = QueryHandle(self._cancel, query_id, query_type, position)
            self._handles[query_id] = handle
        for event in self._orphans.pop(query_id, ()):
            handle._feed(event)
        if handle.done():
            self._handles.pop(query_id, None)
        return handle

    async def _cancel(self, handle: QueryHandle) -> None:
        """Send `cancel_query` and wait for the query's end. The broker answers a successful
        cancel only with the query's own events (no direct reply), so either may come first:
        an error reply (not yours, or already over) or the handle's final event."""
        connection = self._conn()
        request_id = uuid.uuid4().hex
        pending = _Pending(asyncio.get_running_loop().create_future(), frozenset())
        self._pending[request_id] = pending
        message = {"type": "cancel_query", "query_id": handle.query_id, "id": request_id}
        try:
            async with asyncio.timeout(self.timeout):
                await connection.send(message, within=None)
                ended = asyncio.ensure_future(handle.wait())
                try:
                    await asyncio.wait({pending.future, ended}, return_when="FIRST_COMPLETED")
                finally:
                    ended.cancel()
                if pending.future.done():
                    error = pending.future.exception()
                    if error is not None and not isinstance(error, Conflict):
                        raise error
                    await handle.wait()  # already finishing: its final event is coming
        except TimeoutError:
            raise RequestTimeout(f"query {handle.query_id} did not end after cancel") from None
        finally:
            self._pending.pop(request_id, None)

    async def _cancel_unwatched(self, query_id: str) -> None:
        """Cancel a query accepted after its submitter stopped waiting (nobody will read
        its answer, so nobody should pay for it)."""
        message = {"type": "cancel_query", "query_id": query_id}
        with contextlib.suppress(RentahalError):
            await self._conn().send(message, within=self.timeout)

    # --- convenience -----------------------------------------------------------------------

    async def run(
        self,
        prompt: str = "",
        query_type: QueryType | str = QueryType.CHAT,
        model_name: str = "",
        *,
        model_type: str = "worker_node",
        image: bytes | None = None,
        audio: bytes | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> QueryResult:
        """Submit a query and wait for its result, under the breaker and retry policy.

        The client's `result_timeout` bounds the wait (`RequestTimeout`); so may the caller,
        with `asyncio.timeout(...)`. If the wait is abandoned either way, the query is
        cancelled, so nobody pays for an answer nobody reads."""

        async def attempt() -> QueryResult:
            handle = await self._submit(
                prompt, query_type, model_name, model_type, image, audio, options
            )
            try:
                async with asyncio.timeout(self.result_timeout):
                    return await handle.result()
            except TimeoutError:
                self._spawn(self._quiet(handle.cancel()))
                raise RequestTimeout(
                    f"no result within {self.result_timeout:g} s; the query was cancelled"
                ) from None
            except asyncio.CancelledError:
                if not handle.done():
                    self._spawn(self._quiet(handle.cancel()))
                raise

        return await self._guarded(attempt)

    async def chat(
        self,
        prompt: str,
        *,
        model_name: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """Ask a chat model; returns its answer."""
        result = await self.run(prompt, "chat", model_name, options=options)
        return result.text

    async def vision(
        self,
        prompt: str,
        image: bytes,
        *,
        model_name: str = "",
    ) -> str:
        """Ask about a picture (PNG, JPEG … bytes); returns the answer."""
        result = await self.run(prompt, "vision", model_name, image=image)
        return result.text

    async def imagine(
        self,
        prompt: str,
        *,
        model_name: str = "",
        width: int | None = None,
        height: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> bytes:
        """Generate a picture; returns the image file's bytes (PNG or JPEG)."""
        extra = dict(options or {})
        if width is not None:
            extra["width"] = width
        if height is not None:
            extra["height"] = height
        result = await self.run(prompt, "imagine", model_name, options=extra)
        if result.image is None:
            raise QueryFailed("empty", "the worker returned no image", query_id=result.query_id)
        return result.image

    async def transcribe(
        self,
        audio: bytes,
        *,
        language: str | None = None,
        model_name: str = "",
    ) -> str:
        """Speech to text: a recording (WAV, webm/opus, ogg …) → what was said."""
        options = {"language": language} if language else {}
        result = await self.run("", "stt", model_name, audio=audio, options=options)
        return result.text

    async def speak(
        self,
        text: str,
        *,
        speaker: str | None = None,
        model_name: str = "",
    ) -> bytes:
        """Text to speech; returns a WAV file's bytes."""
        options = {"speaker": speaker} if speaker else {}
        result = await self.run(text, "tts", model_name, options=options)
        if result.audio is None:
            raise QueryFailed("empty", "the worker returned no audio", query_id=result.query_id)
        return result.audio

    async def speech(
        self,
        audio: bytes,
        *,
        speak: bool = False,
        model_name: str = "",
    ) -> QueryResult:
        """A spoken question: transcribed, answered by a chat model, and (with `speak`)
        answered aloud. The result has `transcript`, `text` and, if spoken, `audio`."""
        return await self.run(
            "",
            "speech",
            model_name,
            audio=audio,
            options={"speak": True} if speak else {},
        )

    # --- the reader's side -----------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        """Route one event: to the request waiting on it, the query it concerns, and every
        subscriber. Runs in the reader task, in arrival order."""
        kind = str(event.get("type", ""))
        reply_to = event.get("response_to")
        if reply_to is not None:
            pending = self._pending.get(str(reply_to))
            if pending is not None and (
                kind == "error" or pending.expect is None or kind in pending.expect
            ):
                del self._pending[str(reply_to)]
                self._resolve(pending, event)
            elif kind in ("query_accepted", "error") and str(reply_to) in self._abandoned:
                abandoned = self._abandoned.pop(str(reply_to))
                if kind == "query_accepted":
                    abandoned(event)
        if kind == "user_info":
            self.user = event.get("data")
        query_id = event.get("query_id")
        if query_id and kind != "query_accepted":
            self._to_handle(str(query_id), event)
        self._latest[kind] = event
        self._subscriptions.publish(event)

    def _resolve(self, pending: _Pending, event: Event) -> None:
        if pending.future.done():
            return
        if event.get("type") == "error":
            pending.future.set_exception(error_from_event(event))
            return
        try:
            value = pending.on_reply(event) if pending.on_reply is not None else event
        except Exception as exc:  # a reply of an unexpected shape
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(value)

    def _to_handle(self, query_id: str, event: Event) -> None:
        handle = self._handles.get(query_id)
        if handle is not None:
            handle._feed(event)
            if handle.done():
                del self._handles[query_id]
            return
        # Not (yet) ours: an upload whose id has not come back, or another tab's query.
        events = self._orphans.setdefault(query_id, [])
        self._orphans.move_to_end(query_id)
        if len(events) < ORPHAN_EVENTS or is_final(event):
            events.append(event)
        while len(self._orphans) > ORPHAN_QUERIES:
            self._orphans.popitem(last=False)

    def _on_up(self, generation: int) -> None:
        if generation > 1:
            self.reconnects += 1
            log.info("rentahal.client: reconnected (%d)", self.reconnects)
            if self._topics is not None:  # a new socket hears everything until told
                self._spawn(self._quiet(self.subscribe_topics(self._topics)))
            if any(not h.done() for h in self._handles.values()):
                self._spawn(self._recover())

    def _on_down(self, error: ConnectionLost) -> None:
        """Requests already sent on the dropped socket may never be answered: fail them
        (marked as sent, so they are not re-sent blindly). Unsent ones wait for the next."""
        for request_id, pending in list(self._pending.items()):
            if pending.sent and not pending.future.done():
                del self._pending[request_id]
                pending.future.set_exception(error)

    def _on_end(self, failure: RentahalError) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(failure)
        self._pending.clear()
        for handle in self._handles.values():
            handle._fail(failure)
        self._handles.clear()
        closed_by_us = isinstance(failure, ConnectionLost) and failure.code == "closed"
        self._subscriptions.end(None if closed_by_us else failure)

    async def _recover(self) -> None:
        """After a reconnect, find queries that finished while the client was away but
        whose final event did not come (the broker counts a result as delivered if it was
        written to *any* of the user's sockets, even one about to die), and fetch it.

        The `get_previous_queries` reply comes after the broker's re-delivered results on
        the new socket, so anything still unresolved then needs fetching."""
        waiting = [h for h in self._handles.values() if not h.done()]
        try:
            history = await self.previous_queries(limit=100)
        except RentahalError as exc:
            log.info("rentahal.client: could not check queries after reconnect: %s", exc)
            return
        finished = {q.get("query_id") for q in history if q.get("state") in FINISHED_STATES}
        for handle in waiting:
            if handle.done() or handle.query_id not in finished:
                continue
            event = await self._fetch_final(handle.query_id)
            if event is not None:
                log.info("rentahal.client: fetched the missed result of %s", handle.query_id)
                self._to_handle(handle.query_id, event)

    async def _fetch_final(self, query_id: str) -> Event | None:
        """A finished query's final event, from `GET /api/v1/queries/{id}/events`."""
        try:
            async with self._http_client().stream(
                "GET", f"/api/v1/queries/{query_id}/events"
            ) as response:
                if not response.is_success:
                    return None
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        event: Event = json.loads(line[5:])
                        if is_final(event):
                            return event
        except (httpx.HTTPError, ValueError) as exc:
            log.info("rentahal.client: could not fetch the result of %s: %s", query_id, exc)
        return None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quiet(awaitable: Awaitable[Any]) -> None:
        with contextlib.suppress(Exception):
            await awaitable
