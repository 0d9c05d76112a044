"""The socket fan-out of a cluster: this broker's connections, and everyone else's through
the brokers' channel.

Whatever the hub sends reaches this broker's connections at once, as in one process, and is
published for the other brokers, which hand it to theirs: a result reaches its owner on
whichever broker they are connected to, a broadcast reaches every user, a ban closes the
user's sockets everywhere. Events travel encoded (the JSON the sockets are sent), so a
receiving broker only looks at who they are for.

A query's events also reach those watching it on another broker (REST and `/v1` requests,
intents): the broker that ran it may not be the one that was asked, when the realms' lines
are shared (`rentahal.cluster.queue`). Each such event names its schema, and is typed again
only where someone watches its query.

Each broker says who is connected to it when that changes (at most every `PRESENCE_DELAY`),
so the sysops' view of who is connected, and the count, is the installation's.

`send_user` and `send_final` answer for this broker's connections alone. A final event that
found none here stays undelivered in the store even if another broker's connection took it,
so the owner is sent it again at their next connection, and the client drops the repeat
(`rentahal.client.handle`): nothing is lost in the gap between brokers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rentahal.bus.events import Outbound, schema_named
from rentahal.bus.hub import Connection, Hub, encode, topic_of
from rentahal.bus.topics import Topic
from rentahal.cluster.node import ClusterNode
from rentahal.store.models import User
from rentahal.store.users import UserRepository

PRESENCE_DELAY = 0.25  # seconds: who is connected here is said at most this often


def _topic(value: str | None) -> Topic | None:
    return Topic(value) if value is not None else None


def _watched(event: Outbound | dict[str, Any]) -> dict[str, str]:
    """The query a typed event is about and its schema, for watchers on other brokers."""
    query_id = getattr(event, "query_id", None)
    if not isinstance(event, Outbound) or not query_id:
        return {}
    return {"query": query_id, "schema": type(event).__name__}


class ClusterHub(Hub):
    def __init__(self, node: ClusterNode, users: UserRepository) -> None:
        super().__init__()
        self._node = node
        self._users = users
        node.on("user", self._user_event_elsewhere)
        node.on("final", self._final_elsewhere)
        node.on("watch", self._to_watchers_here)
        node.on(
            "all",
            lambda m: self.deliver_all(m["text"], _topic(m["topic"]), sysops_only=m["sysops"]),
        )
        node.on(
            "by_role",
            lambda m: self.deliver_by_role(
                (m["sysops"], _topic(m["sysops_topic"])), (m["others"], _topic(m["others_topic"]))
            ),
        )
        node.on("close_user", lambda m: Hub.close_user(self, m["user"], m["code"], m["reason"]))
        node.on("user_changed", self._user_changed_elsewhere)
        # Who is connected to each other broker, as it last said (sysops see everyone); their
        # union over the brokers alive, and how many of those are connected here too, kept
        # up to date so that counting everyone on each connect costs nothing.
        self._elsewhere: dict[str, frozenset[str]] = {}
        self._remote: frozenset[str] = frozenset()
        self._also_here = 0
        self._presence_due: asyncio.TimerHandle | None = None
        # Called when another broker's connected users changed (the sysops' view).
        self.on_presence: Callable[[], None] = lambda: None
        node.on("presence", self._presence_elsewhere)
        node.on("presence_wanted", lambda _: self._say_presence())
        node.on_resubscribed(self.ask_presence)

    # --- who is connected, on every broker -------------------------------------------------

    def ask_presence(self) -> None:
        """Ask every broker to say who is connected to it (this one has just joined, or has
        missed what they said)."""
        self._node.publish("presence_wanted")
        self._say_presence()

    def add(self, connection: Connection) -> None:
        first = not self.is_connected(connection.user_id)
        super().add(connection)
        if first and connection.user_id in self._remote:
            self._also_here += 1
        self._presence_changed()

    def remove(self, connection: Connection) -> None:
        super().remove(connection)
        if not self.is_connected(connection.user_id) and connection.user_id in self._remote:
            self._also_here -= 1
        self._presence_changed()

    def _presence_changed(self) -> None:
        """Said once for every change within `PRESENCE_DELAY`, not once per socket."""
        if self._presence_due is None:
            loop = asyncio.get_running_loop()
            self._presence_due = loop.call_later(PRESENCE_DELAY, self._say_presence)

    def _say_presence(self) -> None:
        if self._presence_due is not None:  # said now: not again when the timer comes
            self._presence_due.cancel()
            self._presence_due = None
        self._node.publish("presence", broker=self._node.id, users=super().connected_users)

    def _presence_elsewhere(self, message: dict[str, Any]) -> None:
        self._elsewhere[message["broker"]] = frozenset(message["users"])
        self._remake_remote()
        self.on_presence()

    def _remote_users(self) -> frozenset[str]:
        """Those connected to other brokers alive (a dead broker's are forgotten)."""
        if any(broker not in self._node.alive for broker in self._elsewhere):
            self._remake_remote()
        return self._remote

    def _remake_remote(self) -> None:
        alive = self._node.alive
        self._elsewhere = {b: users for b, users in self._elsewhere.items() if b in alive}
        self._remote = frozenset().union(*self._elsewhere.values())
        self._also_here = sum(1 for user in self._remote if self.is_connected(user))

    @property
    def connected_users(self) -> list[str]:
        """Every user connected to any broker."""
        return sorted(self._remote_users().union(super().connected_users))

    @property
    def connected_count(self) -> int:
        remote = self._remote_users()
        return super().connected_count + len(remote) - self._also_here

    def send_user(self, user_id: str, event: Outbound | dict[str, Any]) -> bool:
        text = encode(event)
        self._node.publish("user", user=user_id, text=text, **_watched(event))
        self._to_watchers(event)
        return self.deliver(user_id, text)

    def send_final(self, user_id: str, query_id: str, event: Outbound) -> bool:
        text = encode(event)
        self._node.publish(
            "final", user=user_id, text=text, **_watched(event) | {"query": query_id}
        )
        self._to_watchers(event)
        return self.deliver_final(user_id, query_id, text)

    def send_watchers(self, event: Outbound | dict[str, Any]) -> None:
        """An internal query's events: its watcher may be on the broker that asked."""
        if watched := _watched(event):
            self._node.publish("watch", text=encode(event), **watched)
        self._to_watchers(event)

    def _user_event_elsewhere(self, message: dict[str, Any]) -> None:
        self._to_watchers_here(message)
        self.deliver(message["user"], message["text"])

    def _final_elsewhere(self, message: dict[str, Any]) -> None:
        self._to_watchers_here(message)
        self.deliver_final(message["user"], message["query"], message["text"])

    def _to_watchers_here(self, message: dict[str, Any]) -> None:
        """Hand another broker's event to this broker's watchers of its query, typed again
        (only if there are any: most events are watched nowhere)."""
        if message.get("query") not in self._watchers:
            return
        schema = schema_named(message["schema"])
        if schema is not None:
            self._to_watchers(schema.model_validate_json(message["text"]))

    def broadcast(self, event: Outbound | dict[str, Any], *, sysops_only: bool = False) -> None:
        text, topic = encode(event), topic_of(event)
        self._node.publish("all", text=text, topic=topic, sysops=sysops_only)
        self.deliver_all(text, topic, sysops_only=sysops_only)

    def broadcast_by_role(
        self, *, sysops: Outbound | dict[str, Any], others: Outbound | dict[str, Any]
    ) -> None:
        to_sysops = (encode(sysops), topic_of(sysops))
        to_others = (encode(others), topic_of(others))
        self._node.publish(
            "by_role",
            sysops=to_sysops[0],
            sysops_topic=to_sysops[1],
            others=to_others[0],
            others_topic=to_others[1],
        )
        self.deliver_by_role(to_sysops, to_others)

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close the user's connections on every broker; returns how many were open here."""
        self._node.publish("close_user", user=user_id, code=code, reason=reason)
        return super().close_user(user_id, code, reason)

    def user_changed(self, user_id: str, user: User) -> int:
        """The user's connections on every broker act on their new account (each broker
        reads it from the store)."""
        self._node.publish("user_changed", user=user_id)
        return super().user_changed(user_id, user)

    async def _user_changed_elsewhere(self, message: dict[str, Any]) -> None:
        user_id = message["user"]
        if not self.is_connected(user_id):
            return
        if (user := await self._users.get(user_id)) is not None:
            super().user_changed(user_id, user)
