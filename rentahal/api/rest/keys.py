"""API keys: issue one (scoped, or a sysop's worker token), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rentahal.api.deps import BrokerDep, PrincipalDep, SysopDep, TargetUserDep
from rentahal.auth.identity import Scope
from rentahal.core.validation import Storable, StorableText

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
    as a worker (`rentahal worker --broker … --token …`) and does nothing else."""
    if "worker" in request.scopes:
        if set(request.scopes) != {"worker"}:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                {"code": "invalid", "message": "a worker token has the worker scope alone"},
            )
        if not principal.is_sysop:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                {"code": "forbidden", "message": "only a sysop issues worker tokens"},
            )
    elif not all(principal.allows(scope) for scope in request.scopes):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            {"code": "forbidden", "message": "a key cannot grant scopes it does not have"},
        )
    row, key = await broker.store.credentials.issue_api_key(
        principal.user.id, name=request.name, scopes=sorted(set(request.scopes))
    )
    return NewKey(**KeyView.model_validate(row).model_dump(), key=key)


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
