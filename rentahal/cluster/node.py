"""This broker as one of a cluster's: its id, its lease, and the channel brokers share.

Each broker has a random id for the life of its process and holds a lease in Redis: its
member in the `brokers` sorted set, scored by when the lease ends in Redis's own clock (hosts
need not agree on the time), renewed every third of the lease. A broker whose lease lapsed is
gone: the others take over its jobs (`reclaim`), and the worker slots it held lapse with it
(`slots`).

Brokers tell each other things on one pub/sub channel (`publish`, `on`): an event for a user
connected elsewhere, a ban, a worker added. Publishing never waits: a message joins a buffer
that a task of its own sends in pipelines, so a slow Redis never slows a job. Pub/sub is
fire-and-forget by design; what must not be lost is in PostgreSQL (a result not seen live is
sent again at the owner's next connection).

Redis unreachable is an expected outage, like the database's: it is said once in the log when
it begins and once when it ends, `/readyz` answers 503, new work is refused as `unavailable`
(`require`), and everything resumes by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rentahal.core.errors import ErrorCode, ProtocolError

log = structlog.get_logger(__name__)

# Redis answers within this or is unavailable (a blocked event loop elsewhere must not be
# mistaken for a dead Redis, hence not much lower).
REDIS_TIMEOUT = 2.0
RESUBSCRIBE_DELAY = 0.5
OUTBOX_LIMIT = 10_000  # messages waiting to be published; beyond it the oldest are dropped
PUBLISH_BATCH = 256
FORGET_DEAD_AFTER_MS = 86_400_000  # a lapsed broker's member is kept a day, then removed

# Renew this broker's lease and answer which brokers' leases are running, in Redis's clock.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""

# Called with a message's fields; what it returns is awaited if it is awaitable.
Handler = Callable[[dict[str, Any]], object]


def redacted(url: str) -> str:
    """A Redis URL fit for a log line: its password replaced."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


class ClusterNode:
    def __init__(self, redis_url: str, name: str, lease: float) -> None:
        self.id = secrets.token_hex(8)
        self.name = name
        self.lease = lease
        self.redis: Redis = Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
        self._url = redacted(redis_url)
        self.channel = f"{name}:bus"
        self._renew = self.redis.register_script(_RENEW)
        self.alive: frozenset[str] = frozenset({self.id})  # as of the last renewal
        self.available = True
        self._handlers: dict[str, Handler] = {}
        self._resubscribed: list[Callable[[], Awaitable[None] | None]] = []
        self._outbox: deque[str] = deque(maxlen=OUTBOX_LIMIT)
        self._outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._handling: set[asyncio.Task[None]] = set()

    def key(self, *parts: str) -> str:
        """A Redis key of this installation's."""
        return ":".join((self.name, *parts))

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Take a lease (so this broker counts as alive before it claims anything), then keep
        it, listen and publish in tasks of their own."""
        await self._renew_lease()
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="cluster-lease"),
            asyncio.create_task(self._listen(), name="cluster-listen"),
            asyncio.create_task(self._publish_loop(), name="cluster-publish"),
        ]
        log.info("cluster.joined", broker=self.id, redis=self._url, lease=self.lease)

    async def stop(self) -> None:
        """Leave: the lease is given up, so the others take over at once what is left."""
        for task in self._tasks + list(self._handling):
            task.cancel()
        for task in self._tasks + list(self._handling):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._flush()
            await self.redis.zrem(self.key("brokers"), self.id)
        await self.redis.aclose()

    # --- the lease -------------------------------------------------------------------------

    async def renew(self) -> frozenset[str]:
        """Renew this broker's lease; returns the brokers whose leases run now."""
        await self._renew_lease()
        return self.alive

    async def _renew_lease(self) -> None:
        alive = await self._renew(
            keys=[self.key("brokers")],
            args=[self.id, int(self.lease * 1000), FORGET_DEAD_AFTER_MS],
        )
        self.alive = frozenset(alive)
        self._up()

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self._renew_lease()
            except (RedisError, OSError) as exc:
                self._down(exc)

    def _up(self) -> None:
        if not self.available:
            self.available = True
            log.warning("redis.recovered", redis=self._url)

    def _down(self, exc: BaseException) -> None:
        if self.available:
            self.available = False
            log.warning("redis.unavailable", redis=self._url, error=str(exc) or type(exc).__name__)

    async def ready(self) -> bool:
        """Whether Redis answers now (for `/readyz`)."""
        try:
            await asyncio.wait_for(self.redis.ping(), REDIS_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
            return False
        self._up()
        return True

    def require(self) -> None:
        """Refuse new work while Redis is down: accepted now, it could not be shared."""
        if not self.available:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the cluster's shared state (Redis) is unavailable just now; try again shortly",
            )

    # --- telling the other brokers ---------------------------------------------------------

    def on(self, kind: str, handler: Handler) -> None:
        """Call `handler` with the fields of each `kind` message another broker publishes
        (in the order they were published; a coroutine runs as a task of its own)."""
        self._handlers[kind] = handler

    def on_resubscribed(self, handler: Callable[[], Awaitable[None] | None]) -> None:
        """Call `handler` after the channel was lost and is heard again: messages published
        meanwhile are gone, so whatever they would have changed is read afresh."""
        self._resubscribed.append(handler)

    def publish(self, kind: str, **fields: Any) -> None:
        """Tell every other broker (not this one); never waits."""
        self._outbox.append(json.dumps({"b": self.id, "k": kind, **fields}, separators=(",", ":")))
        self._outbox_ready.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            try:
                await self._flush()
            except (RedisError, OSError) as exc:
                # Pub/sub keeps nothing for later either: what was not sent is dropped, and
                # whatever must survive an outage is in the database.
                self._outbox.clear()
                self._down(exc)

    async def _flush(self) -> None:
        while self._outbox:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _ in range(min(PUBLISH_BATCH, len(self._outbox))):
                    pipe.publish(self.channel, self._outbox.popleft())
                await pipe.execute()

    async def _listen(self) -> None:
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if not first:
                    for handler in self._resubscribed:
                        self._follow(handler())
                first = False
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._received(message["data"])
            except (RedisError, OSError) as exc:
                self._down(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    def _received(self, data: str) -> None:
        try:
            fields = json.loads(data)
            origin, kind = fields.pop("b"), fields.pop("k")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("cluster.bad_message", size=len(data))
            return
        handler = self._handlers.get(kind)
        if origin == self.id or handler is None:
            return
        try:
            self._follow(handler(fields))
        except Exception:
            log.exception("cluster.handler_failed", kind=kind)

    def _follow(self, outcome: object) -> None:
        """A handler that is a coroutine goes on in a task of its own, kept until it ends."""
        if inspect.isawaitable(outcome):
            task = asyncio.ensure_future(outcome)
            self._handling.add(task)
            task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._handling.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("cluster.handler_failed", exc_info=exc)
