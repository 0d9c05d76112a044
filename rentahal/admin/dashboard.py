"""What the sysop's panel reads: statistics, the timeline, running queries, worker health and
who is connected. Read-only, so nothing here is audited."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from rentahal.bus import events
from rentahal.bus.hub import Hub
from rentahal.bus.views import running_query_view, stats_view, timeline_view, user_view
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.store import Store, utcnow

RUNNING_QUERIES_SHOWN = 200  # the oldest; a longer list is more than a panel can show
PROMPT_CHARS_SHOWN = 200
# The statistics timeline: an hour by the minute unless asked otherwise (REST).
TIMELINE_WINDOW = 3600  # seconds
TIMELINE_BUCKET = 60  # seconds
TIMELINE_MAX_BUCKETS = 500
# Sysops hear who is connected this long after a change, once for every change meanwhile:
# a list per connect would cost O(N²) while N sockets open (a reconnect storm).
ACTIVE_USERS_DELAY = 0.25  # seconds


class Dashboard:
    """`worker_views()` is the broker's view of every live worker (with its home realm)."""

    def __init__(
        self, store: Store, hub: Hub, worker_views: Callable[[], list[events.WorkerView]]
    ) -> None:
        self._store = store
        self._hub = hub
        self._worker_views = worker_views
        self._announcing: asyncio.TimerHandle | None = None

    async def system_stats(self) -> events.SystemStatsEvent:
        stats = await self._store.stats.system()
        return events.SystemStatsEvent(
            data=stats_view(stats, connected_users=self._hub.connected_count)
        )

    async def user_stats(self) -> events.UserStats:
        """Every stored user, and the connected guests not stored yet (stored as soon as
        they act, or when a sysop bans them or gives them a role)."""
        users = list(await self._store.users.list())
        stored = {user.id for user in users}
        users += [g for g in self._hub.unstored_guests() if g.id not in stored]
        return events.UserStats(data=[user_view(u) for u in users])

    async def running_queries(self) -> events.RunningQueries:
        queries = await self._store.queries.running(
            limit=RUNNING_QUERIES_SHOWN, prompt_chars=PROMPT_CHARS_SHOWN
        )
        now = utcnow()
        return events.RunningQueries(data=[running_query_view(q, now) for q in queries])

    async def stats_timeline(
        self, window: int = TIMELINE_WINDOW, bucket: int = TIMELINE_BUCKET
    ) -> events.StatsTimeline:
        """The last `window` seconds in buckets of `bucket` seconds (enough of them to cover
        the window), the last ending now."""
        buckets = math.ceil(window / bucket)
        if buckets > TIMELINE_MAX_BUCKETS:
            raise ProtocolError(
                ErrorCode.INVALID,
                f"{window} s in buckets of {bucket} s is {buckets} buckets; "
                f"at most {TIMELINE_MAX_BUCKETS}",
            )
        timeline = await self._store.stats.timeline(
            end=utcnow(), bucket_seconds=bucket, buckets=buckets
        )
        return events.StatsTimeline(data=timeline_view(timeline))

    def worker_health(self) -> events.WorkerHealth:
        return events.WorkerHealth(data=self._worker_views())

    def active_users(self) -> events.ActiveUsers:
        return events.ActiveUsers(users=self._hub.connected_users)

    def users_changed(self) -> None:
        """Someone connected or left: the sysops connected hear the new `active_users` within
        `ACTIVE_USERS_DELAY`, once however many came and went meanwhile."""
        if self._announcing is None:
            loop = asyncio.get_running_loop()
            self._announcing = loop.call_later(ACTIVE_USERS_DELAY, self._announce_users)

    def _announce_users(self) -> None:
        self._announcing = None
        if any(connection.is_sysop for connection in self._hub.connections()):
            self._hub.broadcast(self.active_users(), sysops_only=True)
