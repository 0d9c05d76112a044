"""Sysop actions on users: ban, unban, role, and terminating their queries."""

from __future__ import annotations

import structlog

from rentahal.admin.audit import AuditTrail
from rentahal.bus import events
from rentahal.bus.hub import Hub
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.ports import Cancelling
from rentahal.store import Role, User
from rentahal.store.users import LastSysop, NotRegistered, UserRepository

log = structlog.get_logger(__name__)

BANNED_CLOSE_CODE = 4003  # the close code of a banned user's sockets (the SDK knows it too)


class UserAdmin:
    def __init__(
        self, users: UserRepository, hub: Hub, jobs: Cancelling, audit: AuditTrail
    ) -> None:
        self._users = users
        self._hub = hub
        self._jobs = jobs
        self._audit = audit

    async def ban(self, actor: User | None, user_id: str) -> None:
        """Ban at once: every open connection of theirs closes and their jobs stop.

        Every credential of theirs (session cookies, API keys) is refused from the moment
        the flag is stored, since each request reads the user afresh. The connections close
        before the jobs are collected, with no await in between: a query being accepted on
        one of them meanwhile is either collected here or finds its connection closed as
        banned and cancels itself (`BusSession._submit`). A connected guest not stored yet
        is stored first, so the ban outlives its connection."""
        if actor is not None and user_id == actor.id:
            raise ProtocolError(ErrorCode.INVALID, "a sysop cannot ban themself")
        await self._hub.store_user(user_id)
        await self._require_user(user_id)
        await self._users.set_banned(user_id, True)
        hub = self._hub
        hub.send_user(user_id, events.UserBanned(guid=user_id))
        hub.send_user(
            user_id,
            events.Error(code=ErrorCode.BANNED, message="You have been banned from this service."),
        )
        closed = hub.close_user(user_id, BANNED_CLOSE_CODE, "banned")
        await self._jobs.cancel_user(user_id, reason="user banned", by_sysop=True)
        hub.broadcast(events.UserBanned(guid=user_id), sysops_only=True)
        log.info("sysop.user_banned", user_id=user_id, connections_closed=closed)
        await self._audit.record(actor, "ban_user", user_id, connections_closed=closed)

    async def unban(self, actor: User | None, user_id: str) -> None:
        await self._require_user(user_id)
        await self._users.set_banned(user_id, False)
        self._hub.broadcast(events.UserUnbanned(guid=user_id), sysops_only=True)
        log.info("sysop.user_unbanned", user_id=user_id)
        await self._audit.record(actor, "unban_user", user_id)

    async def set_role(self, actor: User | None, user_id: str, role: Role) -> User:
        """Promote or demote (`user`, `premium`, `sysop`); applies at once to the user's open
        connections, which are sent their new `user_info`. Refused: a sysop without a
        password (a guest), and a demotion that would leave no sysop who can act."""
        if role == Role.GUEST:
            raise ProtocolError(ErrorCode.INVALID, "a registered user cannot become a guest")
        await self._hub.store_user(user_id)  # a connected guest, not stored yet
        try:
            changed = await self._users.change_role(user_id, role)
        except NotRegistered:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                "only a registered user (one with a password) can become a sysop",
            ) from None
        except LastSysop:
            raise ProtocolError(
                ErrorCode.CONFLICT, "this is the last sysop: make another sysop first"
            ) from None
        if changed is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
        user, previous = changed
        if previous != user.role:
            log.info("sysop.role_changed", user_id=user_id, role=user.role, previous=previous)
            await self._audit.record(actor, "set_role", user_id, role=user.role, previous=previous)
        self._hub.user_changed(user_id, user)
        return user

    async def terminate(
        self, actor: User | None, *, user_id: str | None = None, query_id: str | None = None
    ) -> int:
        """Cancel one query (`query_id`) or every unfinished query of a user; how many."""
        reason = "terminated by a sysop"
        if query_id is not None:
            count = int(await self._jobs.cancel(query_id, reason=reason, by_sysop=True))
        else:
            assert user_id is not None
            count = await self._jobs.cancel_user(user_id, reason=reason, by_sysop=True)
        await self._audit.record(
            actor, "terminate_query", query_id or user_id or "", terminated=count
        )
        return count

    async def _require_user(self, user_id: str) -> None:
        if await self._users.get(user_id) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
