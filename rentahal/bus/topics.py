"""Topics of the event fan-out: what a connection may ask to hear (`subscribe {topics}`).

Every broker → client event belongs to one topic (`Outbound.topic` in `events`), the one
place that says which. A connection hears every topic it may see until it says otherwise,
so a client that never subscribes gets what it always got. `queries` (the connection's own
queries, account and replies) cannot be turned off: without it a client could not work.
Topics only narrow: who may see an event at all is still the sender's call (a sysop-only
broadcast stays sysop-only whatever a connection subscribes to).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from rentahal.core.errors import ErrorCode, ProtocolError


class Topic(StrEnum):
    QUERIES = "queries"  # the connection's own queries, its account, replies: always on
    WORKERS = "workers"  # worker_update, worker_health, pool_update, huggingface_update
    QUEUE = "queue"  # queue_update
    BROADCASTS = "broadcasts"  # sysop_message
    USERS = "users"  # active_users, user_banned, user_unbanned (sysops only)


SYSOP_TOPICS: frozenset[Topic] = frozenset({Topic.USERS})
ALWAYS: frozenset[Topic] = frozenset({Topic.QUERIES})


def visible(*, sysop: bool) -> frozenset[Topic]:
    """Every topic a connection of this role may subscribe to (its default)."""
    return frozenset(Topic) if sysop else frozenset(Topic) - SYSOP_TOPICS


def chosen(names: Iterable[str], *, sysop: bool) -> frozenset[Topic]:
    """The topics in effect for a `subscribe`: those named plus `queries`. An unknown name is
    `invalid` and a sysop topic asked by anyone else `forbidden`, each naming the topic."""
    topics = set(ALWAYS)
    for name in names:
        try:
            topic = Topic(name)
        except ValueError:
            known = ", ".join(sorted(Topic))
            raise ProtocolError(
                ErrorCode.INVALID, f"unknown topic {name!r} (known: {known})"
            ) from None
        if topic in SYSOP_TOPICS and not sysop:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"topic {name!r} is for sysops only")
        topics.add(topic)
    return frozenset(topics)
