"""Hugging Face models a sysop adds or removes: each kept in the store and served by its own
cloud worker (`rentahal.cloud`)."""

from __future__ import annotations

from pydantic import ValidationError

from rentahal.admin.audit import AuditTrail
from rentahal.bus import events
from rentahal.bus.hub import Hub
from rentahal.cloud import HUGGINGFACE, CloudWorkers
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.specs import ModelSpec
from rentahal.store import AlreadyExists, User
from rentahal.store.workers import ModelRepository


class HuggingFaceModels:
    def __init__(
        self, models: ModelRepository, cloud: CloudWorkers, hub: Hub, audit: AuditTrail
    ) -> None:
        self._models = models
        self._cloud = cloud
        self._hub = hub
        self._audit = audit

    async def add(self, actor: User | None, spec: ModelSpec) -> None:
        try:  # before storing it: a model whose id makes no URL is refused, not kept
            worker = self._cloud.huggingface_spec(spec.name, spec.type)
        except ValidationError:
            raise ProtocolError(
                ErrorCode.INVALID, f"model id {spec.name[:80]!r} makes no usable URL"
            ) from None
        try:
            await self._models.add(HUGGINGFACE, spec.name, spec.type)
        except AlreadyExists:
            raise ProtocolError(ErrorCode.CONFLICT, f"model {spec.name!r} already added") from None
        await self._audit.record(actor, "add_huggingface_model", spec.name, type=spec.type)
        await self._cloud.add_huggingface(worker)
        await self._announce(f"Added Hugging Face model: {spec.name}")

    async def remove(self, actor: User | None, name: str) -> None:
        if not await self._models.remove(HUGGINGFACE, name):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no Hugging Face model {name!r}")
        await self._audit.record(actor, "remove_huggingface_model", name)
        await self._cloud.remove_huggingface(name)
        await self._announce(f"Removed Hugging Face model: {name}")

    async def update_event(self) -> events.HuggingfaceUpdate:
        """The models as every socket is told them (on connecting, and after a change)."""
        models = await self._models.list(HUGGINGFACE)
        return events.HuggingfaceUpdate(
            models=[{"name": m.name, "type": m.query_type} for m in models]
        )

    async def _announce(self, message: str) -> None:
        self._hub.broadcast(await self.update_event())
        self._hub.broadcast(events.SysopBroadcast(message=message), sysops_only=True)
