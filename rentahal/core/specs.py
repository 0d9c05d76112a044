"""The specs the broker acts on, whichever way they came in: a query, a worker, a model, a
pool, a realm. Wire messages (`rentahal.bus.messages`), REST bodies and the OpenAI API all
build these, so each rule about what a query or a worker may be lives here once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import httpx
from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from rentahal.core.addresses import base_url
from rentahal.core.options import Options
from rentahal.core.validation import Storable
from rentahal.core.vocabulary import (
    CLIENT_MODEL_TYPES,
    ModelType,
    QueryType,
    Strategy,
    WorkerKind,
)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Guid = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
HOST = re.compile(r"^(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|[0-9A-Fa-f:.]+)$")  # name, IPv4/6
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)]
Prompt = Annotated[str, StringConstraints(max_length=200_000)]
Alias = Annotated[str, StringConstraints(pattern=r"^\$[A-Z0-9_]{1,63}$")]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Base64 = Annotated[str, StringConstraints(max_length=16 * 1024 * 1024)]


def model_type_of(value: object) -> ModelType:
    """A sent `model_type` as one of ours: case and spaces do not matter, and nothing (the
    seed page's select before its script fills it) is no preference."""
    if not isinstance(value, str):
        raise ValueError("model_type is a string")
    try:
        return ModelType(value.strip().lower() or ModelType.WORKER_NODE)
    except ValueError:
        accepted = ", ".join(CLIENT_MODEL_TYPES)
        raise ValueError(f"model_type is one of {accepted}") from None


class QuerySpec(Storable):
    """The seed's `Query`: what to run and where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Prompt = ""
    query_type: QueryType = QueryType.CHAT
    # A `ModelType` (a str: the wire and other specs hand plain strings in).
    model_type: str = ModelType.WORKER_NODE
    model_name: ModelName = ""
    image: Base64 | None = None
    audio: Base64 | None = None
    options: Options = Field(default_factory=dict)

    @field_validator("model_type", mode="before")
    @classmethod
    def _a_known_model_type(cls, value: object) -> ModelType:
        return model_type_of(value)

    @model_validator(mode="before")
    @classmethod
    def _speech_is_spoken(cls, data: Any) -> Any:
        """A seed client asks for a spoken answer with `model_type: "speech"` (its voice mode);
        this broker's way of asking is `options.speak`, which the query's steps read."""
        if not isinstance(data, dict) or not _is_speech(data.get("model_type")):
            return data
        options = data.get("options") or {}
        return (
            {**data, "options": {**options, "speak": True}} if isinstance(options, dict) else data
        )


def _is_speech(value: object) -> bool:
    try:
        return model_type_of(value) == ModelType.SPEECH
    except ValueError:
        return False  # refused, with its reason, by the field's own validator


class WorkerSpec(Storable):
    """A worker as the sysop describes it (`add_worker {worker: {...}}`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # the seed also sends health fields

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=512)]
    type: QueryType = QueryType.CHAT
    kind: WorkerKind = WorkerKind.RENTAHAL
    models: list[ModelName] = Field(default_factory=list, max_length=256)
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    api_key_env: Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")] | None = (
        None
    )
    realm: Alias | None = None  # default: the primary realm of its type, as routing changes
    specializations: dict[Keyword, list[Keyword]] = Field(default_factory=dict, max_length=32)

    @field_validator("address")
    @classmethod
    def _an_address_requests_can_use(cls, address: str) -> str:
        """`host:port` or an http(s) URL (`tunnel://name` for outbound workers) that makes
        a valid request URL: a worker nobody can reach would fail every health check."""
        try:
            url = httpx.URL(f"{base_url(address)}/health")
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a usable address: {exc}") from None
        if url.scheme not in ("http", "https", "tunnel") or not HOST.match(url.host):
            raise ValueError("an address is host:port or an http(s):// URL")
        if url.port is not None and not 0 < url.port < 65536:
            raise ValueError(f"port {url.port} is not a port")
        return address


class ModelSpec(Storable):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # A model's id becomes part of its URL: printable text only.
    name: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"
        ),
    ]
    type: QueryType = QueryType.CHAT


class PoolSpec(Storable):
    """A pool: `$NAME`, the query type it serves, its members and how to choose among them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Alias
    type: QueryType = QueryType.CHAT
    members: list[Name] = Field(default_factory=list, max_length=256)
    strategy: Strategy = Strategy.AUTO


class RealmSpec(Storable):
    """A realm as the sysop creates it (REST `POST /api/v1/realms`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Alias
    primary_for: list[QueryType] = Field(default_factory=list)
    backup_for: list[QueryType] = Field(default_factory=list)
    strategy: Strategy = Strategy.HEALTH
    max_queue_size: int = Field(default=100, ge=1, le=1_000_000)
    min_workers: int = Field(default=0, ge=0, le=100_000)
    max_workers: int = Field(default=1000, ge=1, le=100_000)


class RealmPatch(Storable):
    """A change to a realm (REST `PATCH /api/v1/realms/{name}`): only the fields given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    primary_for: list[QueryType] | None = None
    backup_for: list[QueryType] | None = None
    strategy: Strategy | None = None
    max_queue_size: int | None = Field(default=None, ge=1, le=1_000_000)
    min_workers: int | None = Field(default=None, ge=0, le=100_000)
    max_workers: int | None = Field(default=None, ge=1, le=100_000)
