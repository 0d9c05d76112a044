"""Worker slots counted across every broker of a cluster (the shared `WorkerSlots` of
`rentahal.core.ports`), and in the same way each user's running jobs (`UserSlots`).

A worker's slots are a sorted set in Redis: one member per job running on it, from whichever
broker, scored by when its lease ends (Redis's clock). Claiming one is a script that first
drops the lapsed members and then adds one only if fewer than `max_concurrency` remain, so two
brokers can never both take the last slot. Each broker renews the leases of the slots it holds
every third of the lease; a broker that dies stops renewing, and its slots come back by
themselves when their leases lapse, which is also when the others may take over its jobs.

The router chooses among workers by their `in_flight` count; here that is the cluster's count
as last seen (on every claim, every renewal, and whenever another broker frees a slot), so a
worker full because of other brokers' jobs is passed over without asking Redis each time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from redis.exceptions import RedisError

from rentahal.cluster.node import ClusterNode
from rentahal.core.periodic import Periodic
from rentahal.routing.registry import WorkerState

log = structlog.get_logger(__name__)

# Claim a slot if one is free: returns {1 if claimed, the count after}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[2]) then
  return {0, count}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return {1, count + 1}
"""

# Renew the leases of the members named, drop lapsed ones, and return the count.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return redis.call('ZCARD', KEYS[1])
"""


class RedisSlots(Periodic):
    def __init__(
        self,
        node: ClusterNode,
        workers: Callable[[], Iterable[WorkerState]],
        slot_freed: Callable[[], None],
    ) -> None:
        """`workers`: the registry's workers (whose counts renewals refresh); `slot_freed`:
        called when another broker frees a slot (a job here may take it). Slots still held
        when it stops belong to jobs the next broker to hold them goes on with."""
        super().__init__("cluster-slots", node.lease / 3)
        self._node = node
        self._workers = workers
        self._slot_freed = slot_freed
        self._acquire = node.redis.register_script(_ACQUIRE)
        self._renew = node.redis.register_script(_RENEW)
        self._lease_ms = int(node.lease * 1000)
        self._held: dict[str, list[str]] = {}  # a set's key → this broker's members in it
        self._serial = itertools.count()
        node.on("slot_freed", self._freed_elsewhere)

    def _worker_key(self, worker: str) -> str:
        return self._node.key("slots", worker)

    async def acquire(self, worker: WorkerState) -> bool:
        count = await self.claim(self._worker_key(worker.name), worker.max_concurrency)
        if count is None:
            return False
        worker.in_flight = abs(count)
        return count > 0

    async def release(self, worker: WorkerState) -> None:
        if not self._held.get(self._worker_key(worker.name)):
            return
        worker.in_flight = max(0, worker.in_flight - 1)
        if await self.give_back(self._worker_key(worker.name)):
            self._node.publish("slot_freed", worker=worker.name)

    def _freed_elsewhere(self, fields: dict[str, Any]) -> None:
        for worker in self._workers():
            if worker.name == fields.get("worker"):
                worker.in_flight = max(0, worker.in_flight - 1)
                self._slot_freed()

    # --- any leased set: a worker's slots, a user's running jobs ---------------------------

    async def claim(self, key: str, limit: int) -> int | None:
        """Take a place in the set if it has fewer than `limit`: the count after (positive),
        or minus the count if it was full; None if Redis could not be asked (nothing is
        dispatched without a place the cluster agrees on: the job waits)."""
        member = f"{self._node.id}:{next(self._serial)}"
        try:
            claimed, count = await self._acquire(keys=[key], args=[member, limit, self._lease_ms])
        except (RedisError, OSError) as exc:
            log.warning("cluster.slot_unavailable", key=key, error=str(exc))
            return None
        if not claimed:
            return -int(count)
        self._held.setdefault(key, []).append(member)
        return int(count)

    async def give_back(self, key: str) -> bool:
        """Give back a place `claim` took; False if Redis could not be told (the place lapses
        with its lease, as it is not renewed any more)."""
        held = self._held.get(key)
        if not held:
            return False
        member = held.pop()
        if not held:
            del self._held[key]
        try:
            await self._node.redis.zrem(key, member)
        except (RedisError, OSError):
            return False
        return True

    # --- leases (renewed every third of one) ------------------------------------------------

    async def tick(self) -> None:
        await self.renew()

    def failed(self, exc: Exception) -> None:
        # Places still held lapse with their leases if this goes on; jobs wait meanwhile.
        log.warning("cluster.slot_renewal_failed", error=str(exc) or type(exc).__name__)

    async def renew(self) -> None:
        """Renew the leases of every place this broker holds and read every worker's count
        afresh (a dead broker's lapsed slots free workers here: a dispatch pass follows)."""
        workers = {self._worker_key(w.name): w for w in self._workers()}
        keys = [*workers, *(key for key in self._held if key not in workers)]
        async with self._node.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                held = self._held.get(key, [])
                await self._renew(keys=[key], args=[self._lease_ms, *held], client=pipe)
            counts = await pipe.execute()
        freed = False
        for key, count in zip(keys, counts, strict=True):
            if (worker := workers.get(key)) is not None:
                freed = freed or int(count) < worker.in_flight
                worker.in_flight = int(count)
        if freed:
            self._slot_freed()


class RedisUserSlots:
    """A user's jobs running at once across every broker (the shared `UserSlots` of
    `rentahal.core.ports`), as leased places like a worker's slots."""

    def __init__(self, slots: RedisSlots, node: ClusterNode, limit: int) -> None:
        self._slots = slots
        self._node = node
        self._limit = limit

    async def acquire(self, user_id: str) -> bool:
        count = await self._slots.claim(self._node.key("running", user_id), self._limit)
        return count is not None and count > 0

    async def release(self, user_id: str) -> None:
        await self._slots.give_back(self._node.key("running", user_id))
