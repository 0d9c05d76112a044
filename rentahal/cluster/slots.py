"""Worker slots counted across every broker of a cluster (the shared `WorkerSlots` of
`rentahal.core.ports`).

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
        self._held: dict[str, list[str]] = {}  # worker name → this broker's members
        self._serial = itertools.count()
        node.on("slot_freed", self._freed_elsewhere)

    def _key(self, worker: str) -> str:
        return self._node.key("slots", worker)

    async def acquire(self, worker: WorkerState) -> bool:
        member = f"{self._node.id}:{next(self._serial)}"
        try:
            claimed, count = await self._acquire(
                keys=[self._key(worker.name)],
                args=[member, worker.max_concurrency, self._lease_ms],
            )
        except (RedisError, OSError) as exc:
            # Nothing is dispatched without a slot the cluster agrees on; the job waits.
            log.warning("cluster.slot_unavailable", worker=worker.name, error=str(exc))
            return False
        worker.in_flight = int(count)
        if claimed:
            self._held.setdefault(worker.name, []).append(member)
        return bool(claimed)

    async def release(self, worker: WorkerState) -> None:
        held = self._held.get(worker.name)
        if not held:
            return
        member = held.pop()
        if not held:
            del self._held[worker.name]
        worker.in_flight = max(0, worker.in_flight - 1)
        try:
            await self._node.redis.zrem(self._key(worker.name), member)
        except (RedisError, OSError):
            return  # not renewed any more: it lapses by itself
        self._node.publish("slot_freed", worker=worker.name)

    def _freed_elsewhere(self, fields: dict[str, Any]) -> None:
        for worker in self._workers():
            if worker.name == fields.get("worker"):
                worker.in_flight = max(0, worker.in_flight - 1)
                self._slot_freed()

    # --- leases (renewed every third of one) ------------------------------------------------

    async def tick(self) -> None:
        await self.renew()

    def failed(self, exc: Exception) -> None:
        # Slots still held lapse with their leases if this goes on; jobs wait meanwhile.
        log.warning("cluster.slot_renewal_failed", error=str(exc) or type(exc).__name__)

    async def renew(self) -> None:
        """Renew the leases of this broker's slots and read every worker's count afresh (a
        dead broker's lapsed slots free workers here: a dispatch pass follows)."""
        workers = list(self._workers())
        async with self._node.redis.pipeline(transaction=False) as pipe:
            for worker in workers:
                held = self._held.get(worker.name, [])
                key = self._key(worker.name)
                await self._renew(keys=[key], args=[self._lease_ms, *held], client=pipe)
            counts = await pipe.execute()
        freed = False
        for worker, count in zip(workers, counts, strict=True):
            freed = freed or int(count) < worker.in_flight
            worker.in_flight = int(count)
        if freed:
            self._slot_freed()
