"""Client → broker messages on the bus (`/ws`): one pydantic schema per message type.

Wire names and shapes are the seed's (SPEC §3); fields the seed spelled two ways are
accepted both ways (`remove_worker {worker_name | name}`). Every message may carry `id`,
which the broker echoes as `response_to` on its direct replies.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, get_args

import httpx
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.routing.registry import base_url
from rentahal.routing.strategies import StrategyName

QueryType = Literal["chat", "vision", "imagine", "speech", "tts", "stt"]
WorkerKind = Literal["rentahal", "ollama", "openai", "a1111", "claude", "huggingface"]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Guid = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
HOST = re.compile(r"^(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|[0-9A-Fa-f:.]+)$")  # name, IPv4/6
MessageId = Annotated[str, StringConstraints(max_length=128)] | int
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)]
Prompt = Annotated[str, StringConstraints(max_length=200_000)]
Alias = Annotated[str, StringConstraints(pattern=r"^\$[A-Z0-9_]{1,63}$")]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Base64 = Annotated[str, StringConstraints(max_length=16 * 1024 * 1024)]


def _bounded_options(options: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(options)) > 4096:
        raise ValueError("options are limited to 4 KiB of JSON")
    return options


# A query's settings (`stream`, `speak`, `temperature`…), checked where a message is parsed.
Options = Annotated[dict[str, Any], AfterValidator(_bounded_options)]


class Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: MessageId | None = None


class SysopInbound(Inbound):
    """Marker base: only a sysop may send these."""


class QuerySpec(BaseModel):
    """The seed's `Query`: what to run and where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Prompt = ""
    query_type: QueryType = "chat"
    model_type: Annotated[str, StringConstraints(max_length=32)] = "worker_node"
    model_name: ModelName = ""
    image: Base64 | None = None
    audio: Base64 | None = None
    options: Options = Field(default_factory=dict)


class SetNickname(Inbound):
    type: Literal["set_nickname"]
    nickname: Annotated[str, StringConstraints(strip_whitespace=True, max_length=256)]


class SubmitQuery(Inbound):
    type: Literal["submit_query"]
    query: QuerySpec


class Chat(Inbound):
    """The developer guide's shorthand for a chat `submit_query`."""

    type: Literal["chat"]
    prompt: Prompt
    model_name: ModelName = ""
    options: Options = Field(default_factory=dict)

    def to_query(self) -> QuerySpec:
        return QuerySpec(
            prompt=self.prompt, query_type="chat", model_name=self.model_name, options=self.options
        )


class Vision(Inbound):
    """The developer guide's shorthand for a vision `submit_query`."""

    type: Literal["vision"]
    prompt: Prompt = "Describe this image in detail"
    image: Base64
    model_name: ModelName = ""

    def to_query(self) -> QuerySpec:
        return QuerySpec(
            prompt=self.prompt, query_type="vision", model_name=self.model_name, image=self.image
        )


class SpeechToText(Inbound):
    """Transcribe recorded speech (WAV, webm/opus, ogg…); answered by `transcription_result`."""

    type: Literal["speech_to_text"]
    audio: Base64
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")] | None = None
    # Voice mode: list the wake and command words said in `transcription_result.spotted`.
    spot: bool = False

    def to_query(self) -> QuerySpec:
        options: dict[str, Any] = {"language": self.language} if self.language else {}
        if self.spot:
            options["spot"] = True
        return QuerySpec(query_type="stt", audio=self.audio, options=options)


class TextToSpeech(Inbound):
    """Speak a text; answered by `speech_result` (a WAV file, base64)."""

    type: Literal["text_to_speech"]
    text: Prompt
    speaker: Annotated[str, StringConstraints(max_length=64)] | None = None

    def to_query(self) -> QuerySpec:
        options = {"speaker": self.speaker} if self.speaker else {}
        return QuerySpec(prompt=self.text, query_type="tts", options=options)


class VisionChunk(Inbound):
    type: Literal["vision_chunk"]
    chunk_id: int = Field(ge=0)
    total_chunks: int = Field(ge=1, le=64)
    chunk_data: Base64
    image_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    prompt: Prompt = ""
    query_type: QueryType = "vision"
    model_type: Annotated[str, StringConstraints(max_length=32)] = "worker_node"
    model_name: ModelName = ""


class Location(BaseModel):
    """Where the user is, from the browser's geolocation (only when they allow it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


Units = Literal["metric", "imperial"]
IntentName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class Intent(Inbound):
    """Words from voice or the composer, for the intent router (SPEC §7): answered by
    `intent_result`, then the usual events of any query the intent queues."""

    type: Literal["intent"]
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
    intent: IntentName | None = None  # the mode already chosen (the voice menu): no guessing
    speak: bool = False  # voice mode: the answer is spoken too
    units: Units | None = None
    location: Location | None = None
    image: Base64 | None = None  # for vision (a webcam frame)


class ListIntents(Inbound):
    type: Literal["list_intents"]


class GetPreviousQueries(Inbound):
    type: Literal["get_previous_queries"]
    limit: int = Field(default=10, ge=1, le=100)


class Pong(Inbound):
    type: Literal["pong"]


class Ping(Inbound):
    type: Literal["ping"]


class CancelQuery(Inbound):
    type: Literal["cancel_query"]
    query_id: Guid


class Subscribe(Inbound):
    type: Literal["subscribe"]
    topics: list[Annotated[str, StringConstraints(max_length=64)]] = Field(max_length=32)


# --- sysop -------------------------------------------------------------------------------


class GetStats(SysopInbound):
    type: Literal["get_stats"]


class WorkerSpec(BaseModel):
    """A worker as the sysop describes it (`add_worker {worker: {...}}`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # the seed also sends health fields

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=512)]
    type: QueryType = "chat"
    kind: WorkerKind = "rentahal"
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


class AddWorker(SysopInbound):
    type: Literal["add_worker"]
    worker: WorkerSpec


class RemoveWorker(SysopInbound):
    type: Literal["remove_worker"]
    worker_name: Name = Field(validation_alias=AliasChoices("worker_name", "name"))


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # A model's id becomes part of its URL: printable text only.
    name: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"
        ),
    ]
    type: QueryType = "chat"


class AddHuggingfaceModel(SysopInbound):
    type: Literal["add_huggingface_model"]
    model: ModelSpec


class RemoveHuggingfaceModel(SysopInbound):
    type: Literal["remove_huggingface_model"]
    model_name: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        validation_alias=AliasChoices("model_name", "name")
    )


class BanUser(SysopInbound):
    type: Literal["ban_user"]
    user_guid: Guid = Field(validation_alias=AliasChoices("user_guid", "guid"))


class UnbanUser(SysopInbound):
    type: Literal["unban_user"]
    user_guid: Guid = Field(validation_alias=AliasChoices("user_guid", "guid"))


AssignableRole = Literal["user", "premium", "sysop"]


class SetRole(SysopInbound):
    """Promote or demote a user (`user`, `premium`, `sysop`); a guest gets a role by
    registering, never becomes a sysop, and the last sysop cannot be demoted."""

    type: Literal["set_role"]
    user_guid: Guid = Field(validation_alias=AliasChoices("user_guid", "guid"))
    role: AssignableRole


class TerminateQuery(SysopInbound):
    """Terminate one query (`query_id`) or all of a user's queries (`user_guid`)."""

    type: Literal["terminate_query"]
    user_guid: Guid | None = Field(default=None, validation_alias=AliasChoices("user_guid", "guid"))
    query_id: Guid | None = None

    @model_validator(mode="after")
    def _one_target(self) -> TerminateQuery:
        if (self.user_guid is None) == (self.query_id is None):
            raise ValueError("give exactly one of user_guid or query_id")
        return self


class PoolSpec(BaseModel):
    """A pool: `$NAME`, the query type it serves, its members and how to choose among them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Alias
    type: QueryType = "chat"
    members: list[Name] = Field(default_factory=list, max_length=256)
    strategy: StrategyName = "auto"


class RealmSpec(BaseModel):
    """A realm as the sysop creates it (REST `POST /api/v1/realms`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Alias
    primary_for: list[QueryType] = Field(default_factory=list)
    backup_for: list[QueryType] = Field(default_factory=list)
    strategy: StrategyName = "health"
    max_queue_size: int = Field(default=100, ge=1, le=1_000_000)
    min_workers: int = Field(default=0, ge=0, le=100_000)
    max_workers: int = Field(default=1000, ge=1, le=100_000)


class RealmPatch(BaseModel):
    """A change to a realm (REST `PATCH /api/v1/realms/{name}`): only the fields given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    primary_for: list[QueryType] | None = None
    backup_for: list[QueryType] | None = None
    strategy: StrategyName | None = None
    max_queue_size: int | None = Field(default=None, ge=1, le=1_000_000)
    min_workers: int | None = Field(default=None, ge=0, le=100_000)
    max_workers: int | None = Field(default=None, ge=1, le=100_000)


class AddPool(SysopInbound):
    type: Literal["add_pool"]
    pool: PoolSpec


class UpdatePool(SysopInbound):
    type: Literal["update_pool"]
    pool: PoolSpec


class RemovePool(SysopInbound):
    type: Literal["remove_pool"]
    name: Alias


class SysopMessage(SysopInbound):
    type: Literal["sysop_message"]
    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


InboundMessage = Annotated[
    SetNickname
    | SubmitQuery
    | Chat
    | Vision
    | SpeechToText
    | TextToSpeech
    | VisionChunk
    | Intent
    | ListIntents
    | GetPreviousQueries
    | Pong
    | Ping
    | CancelQuery
    | Subscribe
    | GetStats
    | AddWorker
    | RemoveWorker
    | AddHuggingfaceModel
    | RemoveHuggingfaceModel
    | BanUser
    | UnbanUser
    | SetRole
    | TerminateQuery
    | AddPool
    | UpdatePool
    | RemovePool
    | SysopMessage,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[InboundMessage] = TypeAdapter(InboundMessage)
MESSAGE_TYPES: frozenset[str] = frozenset(
    get_args(cls.model_fields["type"].annotation)[0]
    for cls in get_args(get_args(InboundMessage)[0])
)
SYSOP_MESSAGE_TYPES: frozenset[str] = frozenset(
    get_args(cls.model_fields["type"].annotation)[0]
    for cls in get_args(get_args(InboundMessage)[0])
    if issubclass(cls, SysopInbound)
)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(p) for p in item["loc"][1:]) or "message"  # [0] is the type
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


MAX_DEPTH = 32  # nesting of a message's JSON; real messages need 4


def _check_shape(data: object, *, surrogates: bool) -> None:
    """Refuse nesting deeper than MAX_DEPTH (validating it would recurse without bound) and,
    when the frame escapes any, text with lone surrogates (it cannot be stored or echoed)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ProtocolError(ErrorCode.MALFORMED, f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if surrogates and isinstance(key, str):
                    stack.append((key, depth))
                stack.append((item, depth + 1))
        elif surrogates and isinstance(value, str) and _LONE_SURROGATE.search(value):
            raise ProtocolError(ErrorCode.MALFORMED, "text holds a lone UTF-16 surrogate")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a surrogate escaped in the JSON text


def parse_message(raw: str | bytes, *, sysop: bool = True) -> InboundMessage:
    """Parse one frame, or raise `ProtocolError` with the reply's code and the frame's `id`.

    Without `sysop`, a sysop message type is refused as `forbidden` before its fields are
    looked at: nobody else learns even how to shape one."""
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.MALFORMED, "not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"not valid JSON: {exc.msg}") from None
    except ValueError as exc:  # an integer literal of thousands of digits
        raise ProtocolError(ErrorCode.MALFORMED, f"not valid JSON: {exc}"[:200]) from None
    except RecursionError:
        raise ProtocolError(ErrorCode.MALFORMED, "nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "a message must be a JSON object")
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    _check_shape(data, surrogates=_SURROGATE_ESCAPE.search(text) is not None)
    message_id = data.get("id")
    if not isinstance(message_id, str | int) or isinstance(message_id, bool):
        message_id = None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID, "missing field: type", message_id)
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown message type: {kind[:64]!r}", message_id
        )
    if kind in SYSOP_MESSAGE_TYPES and not sysop:
        raise ProtocolError(ErrorCode.FORBIDDEN, "Unauthorized: sysop access required", message_id)
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID, _describe(exc), message_id) from None


def is_sysop_only(message: Inbound) -> bool:
    return isinstance(message, SysopInbound)
