"""`GET /v1/models`: what a request's `model` may name."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from rentahal.api.deps import BrokerDep
from rentahal.api.openai.auth import KeyDep
from rentahal.api.openai.errors import OpenAIRoute, model_not_found
from rentahal.broker import Broker

STARTED = int(time.time())  # `created` of every model: the broker keeps no such date

router = APIRouter(route_class=OpenAIRoute)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = STARTED
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def model_cards(broker: Broker) -> list[ModelCard]:
    """Every model of every live worker, every such worker, every pool and realm: each a
    name a query may give as `model`."""
    cards: dict[str, ModelCard] = {}
    live = [w for w in broker.registry if w.alive]
    for worker in live:
        for model in worker.models:
            cards.setdefault(model, ModelCard(id=model, owned_by=worker.name))
    for worker in live:
        cards.setdefault(worker.name, ModelCard(id=worker.name, owned_by=worker.kind))
    for pool in sorted(broker.router.pools):
        cards.setdefault(pool, ModelCard(id=pool, owned_by="pool"))
    for realm in broker.router.realms:
        cards.setdefault(realm.name, ModelCard(id=realm.name, owned_by="realm"))
    return list(cards.values())


@router.get("/models")
async def list_models(_: KeyDep, broker: BrokerDep) -> ModelList:
    """What `model` may name: models, workers, pools and realms (`$CHAT`)."""
    return ModelList(data=model_cards(broker))


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, _: KeyDep, broker: BrokerDep) -> ModelCard:
    """One of `/v1/models` (ids may hold `/`, as `org/model`, and `$`, as `$CHAT`)."""
    for card in model_cards(broker):
        if card.id == model_id:
            return card
    raise model_not_found(model_id)
