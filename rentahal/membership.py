"""Workers that join a realm by themselves, with a worker token (SPEC §5 "Workers join").

A worker registers over REST (`rentahal.api.workers`) and heartbeats, or, behind NAT, opens
the worker socket and registers over it. Either way it becomes an ordinary registry entry
owned by the token's user, health-checked like any other; only its address differs
(`tunnel://name` for the socket). A name belongs to the user who first registered it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rentahal.admin.catalog import WorkerCatalog
from rentahal.auth import Principal
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.specs import ModelName, WorkerSpec
from rentahal.core.vocabulary import WorkerKind
from rentahal.routing.registry import Registry, WorkerState
from rentahal.routing.tunnel import tunnel_address

WorkerRole = Annotated[str, StringConstraints(pattern=r"^(chat|vision|imagine|stt|tts)$")]


class WorkerRegistration(BaseModel):
    """What `rentahal worker` sends when it joins (REST body, or the socket's first message)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    role: WorkerRole
    models: list[ModelName] = Field(default_factory=list, max_length=256)
    slots: int = Field(default=1, ge=1, le=1024)
    key: Annotated[str, StringConstraints(min_length=16, max_length=256)]
    address: Annotated[str, StringConstraints(max_length=512, pattern=r"^(https?://\S+)?$")] = ""
    kind: WorkerKind = WorkerKind.RENTAHAL  # a proxy speaks its upstream's protocol


class WorkerLoad(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    in_flight: int = Field(default=0, ge=0, le=100_000)
    slots: int = Field(default=1, ge=1, le=1024)


def holds_worker_token(principal: Principal) -> bool:
    return principal.via == "api_key" and "worker" in principal.scopes


def require_worker_token(principal: Principal) -> None:
    if not holds_worker_token(principal):
        raise ProtocolError(ErrorCode.FORBIDDEN, "this needs a worker token from the sysop")


class Membership:
    """Joins and leaves go through the catalog, audited under the token's user."""

    def __init__(self, registry: Registry, catalog: WorkerCatalog) -> None:
        self._registry = registry
        self._catalog = catalog

    def _own(self, principal: Principal, name: str) -> WorkerState:
        worker = self._registry.get(name)
        if worker is None or not worker.joined or worker.owner_id != principal.user.id:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no worker {name!r} registered by you")
        return worker

    async def register(
        self, principal: Principal, registration: WorkerRegistration, *, outbound: bool
    ) -> WorkerState:
        """Add the worker, or replace the caller's own registration of the same name."""
        require_worker_token(principal)
        if outbound:
            address = tunnel_address(registration.name)
        elif registration.address:
            address = registration.address
        else:
            raise ProtocolError(ErrorCode.INVALID, "a worker that is not outbound needs an address")
        if (existing := self._registry.get(registration.name)) is not None:
            if not existing.joined or existing.owner_id != principal.user.id:
                raise ProtocolError(
                    ErrorCode.CONFLICT, f"the worker name {registration.name!r} is taken"
                )
            await self._catalog.remove_worker(principal.user, registration.name)
        spec = WorkerSpec(
            name=registration.name,
            address=address,
            type=registration.role,  # type: ignore[arg-type]
            kind=registration.kind,
            models=registration.models,
            max_concurrency=registration.slots,
        )
        return await self._catalog.add_worker(
            principal.user, spec, owner_id=principal.user.id, key=registration.key
        )

    def heartbeat(self, principal: Principal, name: str, load: WorkerLoad) -> None:
        """`NOT_FOUND` tells the worker to register again (the broker restarted, say)."""
        require_worker_token(principal)
        worker = self._own(principal, name)
        if worker.key is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"worker {name!r} must register again")
        worker.max_concurrency = load.slots

    async def deregister(self, principal: Principal, name: str) -> None:
        require_worker_token(principal)
        self._own(principal, name)
        await self._catalog.remove_worker(principal.user, name)
