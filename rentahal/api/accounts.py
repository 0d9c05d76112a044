"""Accounts over REST (SPEC §9): register, log in with a password, and the sysop's user list
and role changes.

- `POST /api/v1/account {nickname, password}`: a guest calling it with their session becomes
  a `user` and keeps their id (so their history); with no session, a new user. Either way the
  answer sets a fresh session cookie. An account that has a password already gets 409.
- `POST /api/v1/session/login {nickname, password}`: a fresh session cookie; the session of
  the cookie sent, if any, ends (no session fixation). Wrong nickname or password: 401, one
  message for both. Throttled per client address and per nickname: 429 with `Retry-After`.
- `GET /api/v1/users`, `PUT /api/v1/users/{user_id}/role {role}`: sysop only.

Log out with `DELETE /api/v1/session` (`rentahal.api.rest.session`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from rentahal.api.deps import BrokerDep, SysopDep
from rentahal.api.errors import REFUSED
from rentahal.api.security import client_address, csrf_safe, origin_allowed, session_cookie_header
from rentahal.auth.identity import SESSION_COOKIE
from rentahal.auth.passwords import MAX_LENGTH, MIN_LENGTH
from rentahal.broker import Broker
from rentahal.bus.events import UserView
from rentahal.bus.messages import AssignableRole
from rentahal.bus.views import user_view
from rentahal.core.validation import StorableText
from rentahal.store import Role, User

router = APIRouter(prefix="/api/v1", tags=["users"], responses=REFUSED)

NicknameField = Annotated[str, StringConstraints(strip_whitespace=True, max_length=256)]
# Not stripped: spaces are part of a password.
NewPassword = Annotated[str, StringConstraints(min_length=MIN_LENGTH, max_length=MAX_LENGTH)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LENGTH)]


class AccountRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nickname: NicknameField
    password: NewPassword


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nickname: NicknameField
    password: Password


class RoleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: AssignableRole


class AccountView(UserView):
    """A user as the sysop's user list shows them."""

    registered: bool
    created_at: datetime
    last_seen_at: datetime


def account_view(user: User) -> AccountView:
    return AccountView(
        **user_view(user).model_dump(),
        registered=user.is_registered,
        created_at=user.created_at,
        last_seen_at=user.last_seen_at,
    )


def _refuse_cross_site(request: Request, broker: Broker) -> None:
    """Another site may not log a browser in or out, nor register it (login CSRF). With a
    session cookie the usual cookie rule holds; without one, a browser's `Origin` must be
    ours (a program, sending none, is fine)."""
    settings = broker.settings
    if SESSION_COOKIE in request.cookies:
        allowed = csrf_safe(request.method, request.headers, settings)
    else:
        allowed = origin_allowed(request.headers, settings)
    if not allowed:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail={"code": "forbidden", "message": "cross-site request refused"},
        )


def _with_session(user: User, cookie: str, request: Request, broker: Broker, code: int) -> Response:
    response = JSONResponse(user_view(user).model_dump(mode="json"), status_code=code)
    response.headers.append(
        "set-cookie", session_cookie_header(cookie, broker.settings, request.url.scheme)
    )
    return response


@router.post(
    "/account",
    status_code=status.HTTP_201_CREATED,
    response_model=UserView,
    responses={409: {"description": "nickname taken, or already registered"}},
)
async def register(body: AccountRequest, request: Request, broker: BrokerDep) -> Response:
    """Register: a guest (by their session cookie) keeps their id and history and becomes a
    `user`; with no session, a new user. Sets a fresh session cookie either way."""
    principal = await broker.auth.authenticate(request.headers, request.cookies)
    if principal is None and "authorization" in request.headers:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail={"code": "unauthorized", "message": "invalid API key"},
            headers={"WWW-Authenticate": "Bearer"},
        )
    if principal is not None and principal.via == "api_key":
        # A key may be scoped narrower than its account: it cannot mint a password.
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail={"code": "forbidden", "message": "register from a browser session"},
        )
    _refuse_cross_site(request, broker)
    caller = principal.user if principal is not None else None
    user = await broker.accounts.register(
        caller, body.nickname, body.password, client_address(request)
    )
    # A new session for the new standing: a cookie planted on the guest before does not
    # follow them into their account.
    await broker.auth.end_session(request.cookies)
    cookie = await broker.auth.new_session(user)
    if caller is not None:
        broker.hub.user_changed(user.id, user)  # open tabs see their new role at once
    return _with_session(user, cookie, request, broker, status.HTTP_201_CREATED)


@router.post(
    "/session/login",
    response_model=UserView,
    responses={
        401: {"description": "wrong nickname or password"},
        429: {"description": "too many failed logins; see Retry-After"},
    },
)
async def login(body: LoginRequest, request: Request, broker: BrokerDep) -> Response:
    """Log in with nickname and password: a fresh session cookie, and the session of the
    cookie sent (if any) ends."""
    _refuse_cross_site(request, broker)
    user = await broker.accounts.login(body.nickname, body.password, client_address(request))
    await broker.auth.end_session(request.cookies)
    cookie = await broker.auth.new_session(user)
    return _with_session(user, cookie, request, broker, status.HTTP_200_OK)


@router.get("/users")
async def list_users(
    _: SysopDep, broker: BrokerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 500
) -> list[AccountView]:
    """Every user, oldest first: role, ban, registration and query counts."""
    return [account_view(u) for u in await broker.store.users.list(limit)]


@router.put("/users/{user_id}/ban", status_code=status.HTTP_204_NO_CONTENT)
async def ban_user(user_id: StorableText, principal: SysopDep, broker: BrokerDep) -> None:
    """Ban (as `ban_user` on the bus): their connections close, their queries stop, and every
    credential of theirs is refused from now on. A sysop cannot ban themself (422)."""
    await broker.user_admin.ban(principal.user, user_id)


@router.delete("/users/{user_id}/ban", status_code=status.HTTP_204_NO_CONTENT)
async def unban_user(user_id: StorableText, principal: SysopDep, broker: BrokerDep) -> None:
    await broker.user_admin.unban(principal.user, user_id)


class Terminated(BaseModel):
    terminated: int


@router.delete("/users/{user_id}/queries")
async def terminate_user_queries(
    user_id: StorableText, principal: SysopDep, broker: BrokerDep
) -> Terminated:
    """Stop every queued and running query of a user (as `terminate_query {user_guid}`)."""
    count = await broker.user_admin.terminate(principal.user, user_id=user_id)
    return Terminated(terminated=count)


@router.put("/users/{user_id}/role")
async def set_role(
    user_id: StorableText, body: RoleRequest, principal: SysopDep, broker: BrokerDep
) -> AccountView:
    """Promote or demote. A guest (no password) cannot become a sysop and the last sysop
    cannot be demoted (409); the user's open connections act on the new role at once."""
    user = await broker.user_admin.set_role(principal.user, user_id, Role(body.role))
    return account_view(user)
