"""Hugging Face models a sysop adds and removes, each served by a cloud worker of its own:
the REST side of the bus's `add_huggingface_model` and `remove_huggingface_model`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel

from rentahal.api.deps import BrokerDep, PrincipalDep, SysopDep
from rentahal.core.specs import ModelSpec
from rentahal.core.validation import StorableText

router = APIRouter(prefix="/huggingface/models", tags=["workers"])


class HuggingFaceModel(BaseModel):
    name: str
    type: str


@router.get("")
async def list_models(_: PrincipalDep, broker: BrokerDep) -> list[HuggingFaceModel]:
    """The models added, as every bus socket is told them (`huggingface_update`)."""
    update = await broker.huggingface.update_event()
    return [HuggingFaceModel(**model) for model in update.models]


@router.post("", status_code=status.HTTP_201_CREATED)
async def add_model(spec: ModelSpec, principal: SysopDep, broker: BrokerDep) -> HuggingFaceModel:
    """Add a model (its id on the Hub, `org/name`) and the worker that serves it."""
    await broker.huggingface.add(principal.user, spec)
    return HuggingFaceModel(name=spec.name, type=spec.type)


@router.delete("/{name:path}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_model(
    name: Annotated[StorableText, Path(min_length=1, max_length=256)],
    principal: SysopDep,
    broker: BrokerDep,
) -> None:
    """Remove a model and its worker."""
    await broker.huggingface.remove(principal.user, name)
