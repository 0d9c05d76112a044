"""`SyncClient`: the async client for code that is not async (scripts, notebooks, WSGI apps).

It runs an `AsyncClient` on an event loop in a background thread and waits for each call,
so the connection, its pings and its reconnects carry on between calls. Every method takes
an optional `timeout` in seconds; when it runs out the call raises `TimeoutError` and the
work is cancelled (a query whose answer is no longer awaited is cancelled on the broker).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from rentahal.client.client import AsyncClient, settings_from_env
from rentahal.client.handle import QueryHandle
from rentahal.client.results import Event, QueryResult, SpokenSentence
from rentahal.client.subscriptions import Handler
from rentahal.core.vocabulary import QueryType

T = TypeVar("T")


class _Loop:
    """An event loop running in its own daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="rentahal-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a SyncClient cannot be called from its own event handlers")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        except BaseException:  # KeyboardInterrupt in the waiting thread
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncQueryHandle:
    """A `QueryHandle` seen from synchronous code."""

    def __init__(self, handle: QueryHandle, loop: _Loop) -> None:
        self._handle = handle
        self._loop = loop

    @property
    def query_id(self) -> str:
        return self._handle.query_id

    @property
    def state(self) -> str:
        return self._handle.state

    def done(self) -> bool:
        return self._handle.done()

    def result(self, timeout: float | None = None) -> QueryResult:
        """Wait for the answer (at most `timeout` seconds; the query goes on after that)."""
        return self._loop.run(self._handle.result(), timeout)

    def stream(self, timeout: float | None = None) -> Iterator[str]:
        """The answer's text as it is generated; `timeout` bounds the wait for each piece."""
        return self._each(self._handle.stream(), timeout)

    def speech(self, timeout: float | None = None) -> Iterator[SpokenSentence]:
        """A spoken answer's sentences as they are said; `timeout` bounds the wait for each."""
        return self._each(self._handle.speech(), timeout)

    def _each(self, items: AsyncGenerator[T, None], timeout: float | None) -> Iterator[T]:
        async def next_item() -> T:
            return await anext(items)

        try:
            while True:
                try:
                    yield self._loop.run(next_item(), timeout)
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run(items.aclose())

    def cancel(self, timeout: float | None = None) -> bool:
        """Cancel the query; True if it ended cancelled."""
        return self._loop.run(self._handle.cancel(), timeout)


class SyncClient:
    """A blocking client of a broker's bus; the same options as `AsyncClient`.

    ```
    with SyncClient("http://127.0.0.1:5000", api_key) as client:
        print(client.chat("Hello!"))
    ```
    """

    def __init__(self, url: str, api_key: str, **options: Any) -> None:
        self._loop = _Loop()
        try:
            self._client: AsyncClient = self._loop.run(self._open(url, api_key, options))
        except BaseException:
            self._loop.stop()
            raise

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """A client for `RENTAHAL_URL` with the key in `RENTAHAL_API_KEY`."""
        url, api_key = settings_from_env()
        return cls(url, api_key, **options)

    @staticmethod
    async def _open(url: str, api_key: str, options: dict[str, Any]) -> AsyncClient:
        client = AsyncClient(url, api_key, **options)
        await client.connect()
        return client

    @property
    def async_client(self) -> AsyncClient:
        """The underlying client (its coroutines must run on this client's loop)."""
        return self._client

    @property
    def user(self) -> dict[str, Any] | None:
        return self._client.user

    def close(self) -> None:
        """Close the connection and stop the background thread."""
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._client.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- calls -----------------------------------------------------------------------------

    def submit(
        self,
        prompt: str = "",
        query_type: QueryType | str = QueryType.CHAT,
        model_name: str = "",
        *,
        image: bytes | None = None,
        audio: bytes | None = None,
        options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> SyncQueryHandle:
        """Queue a query; returns its handle (`.result()`, `.stream()`, `.cancel()`)."""
        handle = self._loop.run(
            self._client.submit(
                prompt, query_type, model_name, image=image, audio=audio, options=options
            ),
            timeout,
        )
        return SyncQueryHandle(handle, self._loop)

    def chat(
        self,
        prompt: str,
        *,
        model_name: str = "",
        options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        return self._loop.run(
            self._client.chat(prompt, model_name=model_name, options=options), timeout
        )

    def vision(
        self, prompt: str, image: bytes, *, model_name: str = "", timeout: float | None = None
    ) -> str:
        return self._loop.run(self._client.vision(prompt, image, model_name=model_name), timeout)

    def imagine(
        self,
        prompt: str,
        *,
        model_name: str = "",
        width: int | None = None,
        height: int | None = None,
        timeout: float | None = None,
    ) -> bytes:
        return self._loop.run(
            self._client.imagine(prompt, model_name=model_name, width=width, height=height),
            timeout,
        )

    def transcribe(
        self,
        audio: bytes,
        *,
        language: str | None = None,
        model_name: str = "",
        timeout: float | None = None,
    ) -> str:
        return self._loop.run(
            self._client.transcribe(audio, language=language, model_name=model_name), timeout
        )

    def speak(
        self,
        text: str,
        *,
        speaker: str | None = None,
        model_name: str = "",
        timeout: float | None = None,
    ) -> bytes:
        return self._loop.run(
            self._client.speak(text, speaker=speaker, model_name=model_name), timeout
        )

    def previous_queries(self, limit: int = 10, timeout: float | None = None) -> list[Event]:
        return self._loop.run(self._client.previous_queries(limit), timeout)

    def subscribe_topics(
        self, topics: Iterable[str], timeout: float | None = None
    ) -> frozenset[str]:
        return self._loop.run(self._client.subscribe_topics(topics), timeout)

    def subscribe(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(event)` for each event of that type. It runs on the client's
        background thread: keep it quick, and do not call this client from it."""

        async def add() -> Callable[[], None]:
            return self._client.subscribe(event_type, handler)

        return self._loop.run(add())
