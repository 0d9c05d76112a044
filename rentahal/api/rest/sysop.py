"""The sysop's voice and record: a message to everyone connected, and the audit log of
sysop actions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, StringConstraints

from rentahal.api.deps import BrokerDep, SysopDep
from rentahal.core.validation import Storable

router = APIRouter()


class Broadcast(Storable):
    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


@router.post("/broadcast", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def broadcast(body: Broadcast, principal: SysopDep, broker: BrokerDep) -> None:
    """A message to everyone connected (as `sysop_message` on the bus)."""
    await broker.broadcaster.broadcast(principal.user, body.message)


class AuditView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    actor_id: str | None
    action: str
    target: str
    detail: dict[str, Any]


@router.get("/audit", tags=["stats"])
async def audit_log(
    _: SysopDep, broker: BrokerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[AuditView]:
    """Sysop actions, newest first: who did what to what, when."""
    return [AuditView.model_validate(e) for e in await broker.store.audit.list(limit)]
