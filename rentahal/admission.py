"""Whether a caller may queue a query now: one gate for every way in (the bus, REST, the
OpenAI-compatible API, intents).

In order: the API key's scopes; a ban (read fresh); credit, for a user whose budget is
enforced; the role's queries a day; rate limits — per user by role, per
API key, per client IP, each a token bucket (`rentahal.limits`; in a cluster, counted in Redis
across the brokers). A refusal is a
`ProtocolError` whose `retry_after` says when to try again. Sysops are not limited.

The queries a day are counted in memory (`limits.SubmissionWindows`): each user's last day is
read from the store once, not on every query; in a cluster, whose other brokers submit too,
it is read each time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar

from rentahal.auth import Principal
from rentahal.config import Settings
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.specs import QuerySpec
from rentahal.limits import Buckets, Limit, RateLimiter, SubmissionWindows
from rentahal.scheduler.scheduler import Scheduler
from rentahal.store import Query, Role, Store, utcnow
from rentahal.store.ledger import MICROS, to_micros
from rentahal.store.models import INTERNAL_MODEL_TYPE

DAY = timedelta(days=1)
T = TypeVar("T")


def for_role(role: str, guest: T, user: T, premium: T) -> T:
    """A setting by role; any other role (a sysop is never asked) gets the guest's."""
    return {Role.USER.value: user, Role.PREMIUM.value: premium}.get(role, guest)


class Admission:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        scheduler: Scheduler,
        limiter: Buckets | None = None,
        shared_state: Callable[[], None] | None = None,
        submissions: SubmissionWindows | None = None,
    ) -> None:
        """`shared_state` refuses new work while what the cluster shares cannot be reached
        (`ClusterNode.require`): accepted then, it could not be shared. `submissions`: the
        daily quotas counted in memory, each user's window read from the store once (None:
        read every time, as a cluster must, its other brokers submitting too)."""
        self._settings = settings
        self._store = store
        self._scheduler = scheduler
        self._limiter = limiter or RateLimiter()
        self._shared_state = shared_state
        self._submissions = submissions

    async def submit(
        self, principal: Principal, spec: QuerySpec, *, hops: Sequence[str] = ()
    ) -> tuple[Query, int]:
        """Queue the query as the caller, if they may; returns it and its position. `hops`:
        the installations a forwarded query has been through (`Scheduler.submit`)."""
        principal.check_query_scope(spec.query_type)
        await self.check(principal)
        return await self.queue_counted(principal, spec, hops=hops)

    async def queue_counted(
        self, principal: Principal, spec: QuerySpec, *, hops: Sequence[str] = ()
    ) -> tuple[Query, int]:
        """Queue a query for a request whose limits `check` already counted (an intent
        that goes on to queue one): the key's scopes still apply."""
        principal.check_query_scope(spec.query_type)
        if self._shared_state is not None:
            self._shared_state()
        accepted = await self._scheduler.submit(principal.user, spec, hops=hops)
        if self._submissions is not None and spec.model_type != INTERNAL_MODEL_TYPE:
            self._submissions.record(principal.user.id)
        return accepted

    async def check(self, principal: Principal) -> None:
        """Count one request against the caller's limits, or refuse it."""
        user = principal.user
        if user.role == Role.SYSOP.value:
            return
        settings = self._settings
        # Standing and quota first: a request they refuse takes no token.
        await self._check_standing(principal)
        await self._check_quota(principal)
        per_minute = for_role(
            user.role,
            settings.queries_per_minute_guest,
            settings.queries_per_minute_user,
            settings.queries_per_minute_premium,
        )
        limits = [Limit(f"user:{user.id}", per_minute)]
        if principal.key_id is not None:
            limits.append(Limit(f"key:{principal.key_id}", settings.queries_per_minute_per_key))
        if principal.client_ip:
            limits.append(Limit(f"ip:{principal.client_ip}", settings.queries_per_minute_per_ip))
        if (wait := await self._limiter.take(limits)) > 0:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"too many requests: try again in {math.ceil(wait)} s",
                retry_after=round(wait, 3),
            )

    async def _check_standing(self, principal: Principal) -> None:
        """Not banned (read now, not when the caller authenticated), and a user whose
        budget is enforced has credit for at least a query's base fee."""
        standing = await self._store.ledger.standing(
            principal.user.id, everyone=self._settings.enforce_budgets
        )
        if standing.banned:
            raise ProtocolError(ErrorCode.BANNED, "You are banned from submitting queries")
        balance = standing.balance
        needed = to_micros(self._settings.base_cost_per_query)
        if balance is not None and (balance < needed or balance <= 0):
            raise ProtocolError(
                ErrorCode.INSUFFICIENT_CREDIT,
                f"your credit is {balance / MICROS:.4f}, less than a query costs "
                f"({needed / MICROS:.4f} and up); ask the sysop for more",
            )

    async def _check_quota(self, principal: Principal) -> None:
        settings = self._settings
        quota = for_role(
            principal.user.role,
            settings.queries_per_day_guest,
            settings.queries_per_day_user,
            settings.queries_per_day_premium,
        )
        if quota <= 0:
            return
        user_id, windows, now = principal.user.id, self._submissions, utcnow()
        if windows is None or not windows.known(user_id, quota):
            times = await self._store.queries.latest_submissions(user_id, now - DAY, quota)
            if windows is None:
                used, first = len(times), (times[0].timestamp() if times else None)
            else:
                windows.fill(user_id, [t.timestamp() for t in times], quota)
        if windows is not None:
            used, first = windows.used(user_id)
        if used >= quota:
            # Free again when the oldest of the latest `quota` is a day old.
            wait = max((first + DAY.total_seconds() - now.timestamp()) if first else 0.0, 1.0)
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"your {quota} queries a day are used up; the next frees up in "
                f"{math.ceil(wait / 60)} min",
                retry_after=round(wait, 3),
            )
