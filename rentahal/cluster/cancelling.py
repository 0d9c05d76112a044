"""Stopping jobs wherever they run: a ban or a sysop's terminate reaches every broker's.

Each broker runs the jobs it accepted (or took over), so a sysop's cancel on one broker is
also published, and each other broker cancels what it has of it. The count returned is this
broker's: the others' are not waited for.
"""

from __future__ import annotations

from typing import Any

from rentahal.admin.users import Cancelling
from rentahal.cluster.node import ClusterNode


class ClusterCancelling:
    def __init__(self, node: ClusterNode, local: Cancelling) -> None:
        self._node = node
        self._local = local
        node.on("cancel", self._cancel_here)
        node.on("cancel_user", self._cancel_user_here)

    async def cancel(self, query_id: str, *, reason: str, by_sysop: bool = False) -> bool:
        self._node.publish("cancel", query=query_id, reason=reason, by_sysop=by_sysop)
        return await self._local.cancel(query_id, reason=reason, by_sysop=by_sysop)

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
