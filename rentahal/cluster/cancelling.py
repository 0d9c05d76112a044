"""Stopping jobs wherever they run: a ban or a sysop's terminate reaches every broker's.

A running job is in the hands of the broker that dispatched it, so a cancel on one broker
(its owner's, a sysop's, a ban's) is also published, and each other broker cancels what it
has of it. A waiting job is cancelled by whichever broker gets to it first. The count returned
is this broker's: the others' are not waited for.
"""

from __future__ import annotations

from typing import Any

from rentahal.cluster.node import ClusterNode
from rentahal.core.ports import Cancelling
from rentahal.core.vocabulary import UNFINISHED_STATES
from rentahal.store.queries import QueryRepository


class ClusterCancelling:
    def __init__(self, node: ClusterNode, local: Cancelling, queries: QueryRepository) -> None:
        self._node = node
        self._local = local
        self._queries = queries
        node.on("cancel", self._cancel_here)
        node.on("cancel_user", self._cancel_user_here)

    async def cancel(self, query_id: str, *, reason: str, by_sysop: bool = False) -> bool:
        """True if it was cancelled here, or runs on another broker, which cancels it."""
        self._node.publish("cancel", query=query_id, reason=reason, by_sysop=by_sysop)
        if await self._local.cancel(query_id, reason=reason, by_sysop=by_sysop):
            return True
        query = await self._queries.get(query_id)
        return query is not None and query.state in UNFINISHED_STATES

    async def cancel_user(self, user_id: str, *, reason: str, by_sysop: bool) -> int:
        self._node.publish("cancel_user", user=user_id, reason=reason, by_sysop=by_sysop)
        return await self._local.cancel_user(user_id, reason=reason, by_sysop=by_sysop)

    async def _cancel_here(self, message: dict[str, Any]) -> None:
        await self._local.cancel(
            message["query"], reason=message["reason"], by_sysop=message["by_sysop"]
        )

    async def _cancel_user_here(self, message: dict[str, Any]) -> None:
        await self._local.cancel_user(
            message["user"], reason=message["reason"], by_sysop=message["by_sysop"]
        )
