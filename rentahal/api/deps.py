"""FastAPI dependencies: the broker, the caller, and the sysop gate."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from rentahal.api.security import client_address, csrf_safe
from rentahal.auth import Principal
from rentahal.broker import Broker
from rentahal.core.validation import StorableText
from rentahal.membership import holds_worker_token
from rentahal.store import Query, User


async def get_broker(request: Request) -> Broker:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop on every request.
    return request.app.state.broker


BrokerDep = Annotated[Broker, Depends(get_broker)]
FEDERATION_ROUTES = "/api/v1/federation/"


async def require_principal(request: Request, broker: BrokerDep) -> Principal:
    principal = await broker.auth.authenticate(request.headers, request.cookies)
    if principal is not None:
        principal = principal.seen_at(client_address(request))
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail={"code": "unauthorized", "message": "send a session cookie or an API key"},
            headers={"WWW-Authenticate": "Bearer"},
        )
    if principal.is_peer_key and not request.url.path.startswith(FEDERATION_ROUTES):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail={"code": "forbidden", "message": "a peer key is for the federation routes"},
        )
    if principal.via == "session" and not csrf_safe(
        request.method, request.headers, broker.settings
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail={"code": "forbidden", "message": "cross-site request refused"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(require_principal)]


async def require_sysop(principal: PrincipalDep) -> Principal:
    if not principal.is_sysop:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail={"code": "forbidden", "message": "sysop access required"},
        )
    return principal


SysopDep = Annotated[Principal, Depends(require_sysop)]


async def require_worker_token(principal: PrincipalDep) -> Principal:
    """Worker routes answer 403 to anything but a worker token, before reading the body."""
    if not holds_worker_token(principal):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail={"code": "forbidden", "message": "a worker token from the sysop is required"},
        )
    return principal


WorkerTokenDep = Annotated[Principal, Depends(require_worker_token)]


async def target_user(user_id: StorableText, broker: BrokerDep) -> User:
    """The user a route names in its path (`/users/{user_id}/…`), or 404. Declare it after
    the caller's own dependency, so a caller who may not ask learns nothing of who exists."""
    user = await broker.store.users.get(user_id)
    if user is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail={"code": "not_found", "message": "no such user"}
        )
    return user


TargetUserDep = Annotated[User, Depends(target_user)]


async def own_query(query_id: StorableText, principal: PrincipalDep, broker: BrokerDep) -> Query:
    """The query a route names (`/queries/{query_id}…`) if it is the caller's own or the
    caller is a sysop; else 404, the same as for none, so nobody learns others' query ids.
    Its media are loaded when a route asks for them (`with_media`), not here."""
    query = await broker.store.queries.get(query_id)
    if query is None or (query.user_id != principal.user.id and not principal.is_sysop):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail={"code": "not_found", "message": "no such query"}
        )
    return query


OwnQueryDep = Annotated[Query, Depends(own_query)]
