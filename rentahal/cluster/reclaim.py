"""Taking over the jobs of a broker that is gone.

Every unfinished job names the broker that holds it (`queries.broker_id`). Each living
broker looks, every quarter of a lease, for jobs held by brokers whose lease has lapsed (or by
none: jobs from before the cluster), claims them in one statement (so each goes to one
claimant), and queues them again as a restarted broker would its own: a job that was at a
worker is sent again under the same idempotency key, so a worker node that finished it
answers from its memory instead of running it twice.

The brokers alive are read from Redis after the holders are read from the database: a broker
holding a job has taken its lease before accepting it, so a broker that has only just started
is never taken for dead. A broker cut off from Redis claims nothing (it cannot tell who is
alive), and dispatches nothing either (it cannot claim a worker slot).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog
from redis.exceptions import RedisError

from rentahal.cluster.node import ClusterNode
from rentahal.core.periodic import Periodic
from rentahal.store import Query
from rentahal.store.outage import is_outage
from rentahal.store.queries import QueryRepository

log = structlog.get_logger(__name__)


class Reclaim(Periodic):
    def __init__(
        self,
        node: ClusterNode,
        queries: QueryRepository,
        resume: Callable[[Sequence[Query]], Awaitable[None]],
    ) -> None:
        super().__init__("cluster-reclaim", node.lease / 4)
        self._node = node
        self._queries = queries
        self._resume = resume

    async def tick(self) -> None:
        if not self._node.available:
            return
        holders = await self._queries.holders()
        alive = await self._node.renew()
        for holder in holders - alive:
            claimed = await self._queries.claim(holder, self._node.id)
            if claimed:
                log.warning("cluster.reclaimed", broker=holder, jobs=len(claimed))
                await self._resume(claimed)

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, RedisError) or is_outage(exc):
            return  # the store and Redis say their outages themselves
        log.exception("cluster.reclaim_failed", exc_info=exc)
