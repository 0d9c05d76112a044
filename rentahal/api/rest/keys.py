"""API keys: issue one (scoped, or a sysop's worker token or peer key), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rentahal.api.deps import BrokerDep, PrincipalDep, SysopDep, TargetUserDep
from rentahal.auth.identity import NAMED_ONLY_SCOPES, Scope
from rentahal.auth.nicknames import NICKNAME, PEER_PREFIX
from rentahal.broker import Broker
from rentahal.core.validation import Storable, StorableText
from rentahal.federation.peers import peer_account
from rentahal.store import User

router = APIRouter()


def _every_scope() -> list[Scope]:
    return ["*"]


class KeyRequest(Storable):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] = (
        "default"
    )
    scopes: list[Scope] = Field(default_factory=_every_scope, min_length=1, max_length=7)


class KeyView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKey(KeyView):
    key: str  # shown once; only its hash is kept


@router.post("/keys", status_code=status.HTTP_201_CREATED, tags=["users"])
async def create_key(request: KeyRequest, principal: PrincipalDep, broker: BrokerDep) -> NewKey:
    """A new API key for yourself, scoped; a key cannot grant more than the key that asks.

    A sysop may make a worker token (scopes `["worker"]`): it lets a machine join the realm
    as a worker (`rentahal worker --broker … --token …`) and does nothing else. A sysop may
    make a peer key (scopes `["federation"]`, named `peer-<its name>`) for another
    installation: it may call the federation routes and nothing else, and the queries it
    forwards run as the peer's account here, with a user's queue, fairness and limits."""
    owner = principal.user
    named = set(request.scopes) & NAMED_ONLY_SCOPES
    if named:
        scope = min(named)
        what = "worker token" if scope == "worker" else "peer key"
        if set(request.scopes) != {scope}:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                {"code": "invalid", "message": f"a {what} has the {scope} scope alone"},
            )
        if not principal.is_sysop:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                {"code": "forbidden", "message": f"only a sysop issues {what}s"},
            )
        if scope == "federation":
            owner = await _peer_account(broker, request.name)
    elif not all(principal.allows(scope) for scope in request.scopes):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            {"code": "forbidden", "message": "a key cannot grant scopes it does not have"},
        )
    row, key = await broker.store.credentials.issue_api_key(
        owner.id, name=request.name, scopes=sorted(set(request.scopes))
    )
    return NewKey(**KeyView.model_validate(row).model_dump(), key=key)


async def _peer_account(broker: Broker, name: str) -> User:
    """The account a peer's forwarded queries run as: `peer-<its name>`."""
    peer = name.removeprefix(PEER_PREFIX)
    if (
        not name.startswith(PEER_PREFIX)
        or not NICKNAME.fullmatch(peer)
        or len(name) > broker.settings.max_nickname_chars
    ):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {
                "code": "invalid",
                "message": f"a peer key is named for its peer: {PEER_PREFIX}<name> (letters, "
                f"digits, '_', '.', '-'), at most {broker.settings.max_nickname_chars} characters",
            },
        )
    return await peer_account(broker.store.users, peer)


@router.get("/keys", tags=["users"])
async def list_keys(principal: PrincipalDep, broker: BrokerDep) -> list[KeyView]:
    keys = await broker.store.credentials.list_api_keys(principal.user.id)
    return [KeyView.model_validate(k) for k in keys]


@router.get("/users/{user_id}/keys", tags=["users"])
async def list_user_keys(_: SysopDep, user: TargetUserDep, broker: BrokerDep) -> list[KeyView]:
    """A user's API keys (sysop), to find one to revoke."""
    keys = await broker.store.credentials.list_api_keys(user.id)
    return [KeyView.model_validate(k) for k in keys]


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def revoke_key(key_id: StorableText, principal: PrincipalDep, broker: BrokerDep) -> None:
    """Revoke one of your keys (a sysop: anyone's). It stops working at once."""
    owner = None if principal.is_sysop else principal.user.id
    if not await broker.store.credentials.revoke_api_key(key_id, owner_id=owner):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, {"code": "not_found", "message": "no such live key"}
        )
    if owner is None:
        await broker.store.audit.record(principal.user, "revoke_api_key", key_id)
