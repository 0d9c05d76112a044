"""The WebSocket to the broker's bus (`/ws`), kept open: connect with the API key, read
and hand over events, answer the broker's pings, and reconnect when the socket drops.

Reconnecting follows SPEC §3: wait 1 s, doubling up to 30 s between attempts, for as long
as `give_up_after` allows. A refused key (HTTP 401/403 at the handshake, or close code
4401) and a ban (close code 4003) are final: trying again cannot help, so the connection
ends with `Unauthorized` / `Banned` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from rentahal import __version__
from rentahal.client.errors import (
    Banned,
    ConnectionLost,
    InvalidRequest,
    RentahalError,
    Unauthorized,
)
from rentahal.client.results import Event
from rentahal.client.retry import Backoff, RetryPolicy, Sleep

log = logging.getLogger("rentahal.client")

UNAUTHORIZED_CLOSE_CODE = 4401  # rentahal.api.ws: an API key that is no (longer) good
BANNED_CLOSE_CODE = 4003  # rentahal.admin.users: the sysop banned the user
RECONNECT_BACKOFF = Backoff(initial=1.0, multiplier=2.0, maximum=30.0)
MAX_INCOMING = 64 * 1024 * 1024  # results carry base64 images and audio


def endpoints(url: str) -> tuple[str, str]:
    """The bus URL and the HTTP base URL of a broker given as either.

    `http://host:5000` → (`ws://host:5000/ws`, `http://host:5000`); `wss://host/ws` →
    (`wss://host/ws`, `https://host`); a path prefix (a reverse proxy's) is kept.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(f"a broker URL looks like http://host:5000 or ws://host:5000/ws: {url!r}")
    secure = scheme in ("https", "wss")
    path = parts.path.rstrip("/")
    base_path = path[: -len("/ws")] if path.endswith("/ws") else path
    ws_url = urlunsplit(("wss" if secure else "ws", parts.netloc, f"{base_path}/ws", "", ""))
    http_url = urlunsplit(("https" if secure else "http", parts.netloc, base_path, "", ""))
    return ws_url, http_url


class Connection:
    """One logical connection to the broker, made of as many sockets as reconnects need.

    Events are handed to `on_message` in order. `on_up(generation)` runs each time a socket
    is ready (generation 1, 2, … counts them); `on_down` runs when one drops, before any
    reconnect, so requests that were in flight on it can be failed; `on_end` runs once, when
    the connection is over for good (closed, refused, or the broker stayed away too long).
    """

    def __init__(
        self,
        ws_url: str,
        api_key: str,
        *,
        on_message: Callable[[Event], None],
        on_up: Callable[[int], None],
        on_down: Callable[[ConnectionLost], None],
        on_end: Callable[[RentahalError], None],
        open_timeout: float = 30.0,
        backoff: Backoff | None = RECONNECT_BACKOFF,
        give_up_after: float | None = 300.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.ws_url = ws_url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._on_end = on_end
        self._open_timeout = open_timeout
        self._backoff = backoff
        self._give_up_after = give_up_after
        self._sleep = sleep
        self._ws: ClientConnection | None = None
        self._up = False
        self._changed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: RentahalError | None = None  # set once the connection is over for good
        self.generation = 0
        self.pings_answered = 0

    @property
    def is_up(self) -> bool:
        return self._up and self._ws is not None

    def _set_up(self, up: bool) -> None:
        self._up = up
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def open(self, retry: RetryPolicy | None = None) -> None:
        """Connect (retrying transient failures by `retry`) and wait for the broker's
        greeting. Raises `Unauthorized`, `Banned` or `ConnectionLost`."""
        policy = retry or RetryPolicy(retries=0)
        ws = await policy.call(self._dial)
        self._ws = ws
        self._supervisor = asyncio.create_task(self._supervise(ws), name="rentahal-client-reader")
        await self.wait_up(self._open_timeout)

    async def wait_up(self, within: float | None) -> None:
        """Wait until a socket is ready; raise the final failure if there will be none."""
        try:
            async with asyncio.timeout(within):
                while not self.is_up:
                    if self.failure is not None:
                        raise self.failure
                    await self._changed.wait()
        except TimeoutError:
            raise ConnectionLost(f"not connected to {self.ws_url} within {within:g} s") from None

    async def send(self, message: Event, *, within: float | None) -> None:
        """Send once a socket is ready. `ConnectionLost(request_sent=False)` if none is ready
        `within` seconds, or the socket closed before the frame could be written."""
        await self.wait_up(within)
        ws = self._ws
        assert ws is not None
        try:
            await ws.send(json.dumps(message, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise ConnectionLost(f"the connection closed: {exc}", request_sent=False) from None

    async def close(self) -> None:
        """Close for good; the reader ends and no reconnect follows."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._finish(ConnectionLost("the client was closed", code="closed"))

    # --- internals -------------------------------------------------------------------------

    async def _dial(self) -> ClientConnection:
        try:
            return await connect(
                self.ws_url,
                additional_headers=self._headers,
                user_agent_header=f"rentahal-client/{__version__}",
                open_timeout=self._open_timeout,
                max_size=(MAX_INCOMING, None),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                # The broker refuses a bad key by closing before accepting, which the
                # ASGI server turns into an HTTP 403 on the upgrade.
                raise Unauthorized(
                    None, f"the broker refused the API key (HTTP {status})"
                ) from None
            if status >= 500 or status in (404, 408, 429):  # a proxy or a restarting broker
                raise ConnectionLost(f"the broker answered HTTP {status}") from None
            raise RentahalError("handshake", f"the broker answered HTTP {status}") from None
        except InvalidURI as exc:
            raise InvalidRequest(None, str(exc)) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectionLost(
                f"cannot reach {self.ws_url}: {exc or type(exc).__name__}"
            ) from exc

    async def _supervise(self, ws: ClientConnection) -> None:
        try:
            while True:
                await self._read(ws)
                self._ws = None
                self._set_up(False)
                if self._closing:
                    return
                fatal = self._fatal(ws)
                if fatal is not None:
                    self._finish(fatal)
                    return
                reason = f"code {ws.close_code}" if ws.close_code else "no close frame"
                log.info("rentahal.client: the connection dropped (%s)", reason)
                self._on_down(
                    ConnectionLost(f"the connection dropped ({reason})", request_sent=True)
                )
                if self._backoff is None:
                    self._finish(ConnectionLost("the connection dropped; reconnecting is off"))
                    return
                ws = await self._reconnect(self._backoff)
                self._ws = ws
        except RentahalError as exc:
            self._finish(exc)
        except Exception as exc:  # a bug here must not leave callers waiting forever
            log.exception("rentahal.client: the connection failed")
            self._finish(ConnectionLost(f"the connection failed: {exc!r}"))

    async def _read(self, ws: ClientConnection) -> None:
        """Read until the socket closes. The socket counts as up once the broker's greeting
        is over: it answers messages only after sending the whole greeting (the account,
        the realm's state, results missed while away), so the reply to a `ping` sent at
        once marks its end, and `client.latest()` is complete when `connect()` returns."""
        self.generation += 1
        generation = self.generation
        hello = f"hello-{generation}"
        try:
            await ws.send(json.dumps({"type": "ping", "id": hello}))
            async for raw in ws:
                try:
                    event = json.loads(raw)
                except ValueError:
                    log.warning("rentahal.client: a frame that is not JSON was ignored")
                    continue
                if not isinstance(event, dict):
                    continue
                kind = event.get("type")
                if kind == "ping":
                    await ws.send('{"type":"pong"}')
                    self.pings_answered += 1
                elif kind in ("pong", "error") and event.get("response_to") == hello:
                    # (an `error`: a broker without inbound `ping`; its greeting is over too)
                    self._set_up(True)
                    self._on_up(generation)
                else:
                    try:
                        self._on_message(event)
                    except Exception:  # one odd event must not end the connection
                        log.exception("rentahal.client: could not handle %.200r", event)
        except ConnectionClosed:
            pass

    def _fatal(self, ws: ClientConnection) -> RentahalError | None:
        reason = ws.close_reason or ""
        if ws.close_code == UNAUTHORIZED_CLOSE_CODE:
            return Unauthorized(None, reason or "the API key is no longer valid")
        if ws.close_code == BANNED_CLOSE_CODE:
            return Banned(None, reason or "this user is banned")
        return None

    async def _reconnect(self, backoff: Backoff) -> ClientConnection:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for attempt, delay in enumerate(backoff.delays(), start=1):
            if self._give_up_after is not None and (
                loop.time() - started + delay > self._give_up_after
            ):
                raise ConnectionLost(
                    f"gave up reconnecting to {self.ws_url} after {attempt - 1} attempts",
                    request_sent=True,
                )
            await self._sleep(delay)
            try:
                return await self._dial()
            except ConnectionLost as exc:
                log.info("rentahal.client: reconnect attempt %d failed: %s", attempt, exc)
        raise AssertionError("unreachable: backoff delays are endless")

    def _finish(self, failure: RentahalError) -> None:
        if isinstance(failure, ConnectionLost):
            failure.final = True  # nothing will reconnect: retrying cannot help
        if self.failure is None:
            self.failure = failure
            self._set_up(False)
            self._on_end(failure)
