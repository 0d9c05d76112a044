"""Who the caller is, and the browser session an API key can be traded for."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response

from rentahal.api.deps import BrokerDep, PrincipalDep
from rentahal.api.security import session_cookie_header
from rentahal.auth.identity import SESSION_COOKIE
from rentahal.bus import events
from rentahal.bus.views import user_view

router = APIRouter()


@router.get("/me", tags=["users"])
async def me(principal: PrincipalDep, broker: BrokerDep) -> events.UserView:
    # Read again: the caller's user comes from the credential cache, whose query counts and
    # totals are as they were when the credential was read.
    user = await broker.store.users.get(principal.user.id) if principal.is_stored else None
    return user_view(user or principal.user)


@router.post("/session", tags=["users"])
async def open_session(principal: PrincipalDep, broker: BrokerDep, request: Request) -> Response:
    """Trade an API key (`Authorization: Bearer …`) for a browser session cookie. Only an
    unscoped key (`*`): a session may do all its user may, so a narrower key (or a worker
    token) would otherwise be a way to more than it was given."""
    if principal.via != "api_key":
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            {"code": "invalid", "message": "send the API key as Authorization: Bearer"},
        )
    if "*" not in principal.scopes:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            {"code": "forbidden", "message": "only an unscoped API key opens a session"},
        )
    cookie = await broker.auth.new_session(principal.user)
    response = JSONResponse(user_view(principal.user).model_dump(mode="json"))
    response.headers.append(
        "set-cookie", session_cookie_header(cookie, broker.settings, request.url.scheme)
    )
    return response


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def close_session(request: Request, broker: BrokerDep, _: PrincipalDep) -> Response:
    """Log out: the session is deleted on the server, the cookie cleared in the browser."""
    await broker.auth.end_session(request.cookies)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
