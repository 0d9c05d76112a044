"""What installations say to each other on `/api/v1/federation/`: one schema per message."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rentahal.core.validation import StorableText
from rentahal.core.vocabulary import QueryType

FederationId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
MAX_HOPS_ON_THE_WIRE = 8  # the largest `federation_max_hops`: a longer list is refused


class Advertisement(BaseModel):
    """What an installation serves now: the query types and models of its live workers."""

    federation_id: FederationId
    query_types: list[str]
    models: list[str]


class RouteRequest(BaseModel):
    """A query another installation forwards, with where it has been and until when it is
    worth an answer."""

    model_config = ConfigDict(extra="forbid")

    type: QueryType
    prompt: StorableText = ""
    model_name: Annotated[str, StringConstraints(max_length=128)] = ""
    model_type: Annotated[str, StringConstraints(max_length=32)] = "worker_node"
    options: dict[str, Any] = Field(default_factory=dict)
    image: str | None = None
    audio: str | None = None
    hops: Annotated[list[FederationId], Field(min_length=1, max_length=MAX_HOPS_ON_THE_WIRE)]
    deadline: float  # seconds since the epoch


class RouteOutcome(BaseModel):
    """How a forwarded query ended at the installation that ran it."""

    query_id: str
    state: str
    result: str | None = None
    result_type: str | None = None
    worker: str | None = None  # the worker that served it, as the peer names it
    processing_time: float | None = None
    cost: float | None = None
    error_code: str | None = None
    error: str | None = None
