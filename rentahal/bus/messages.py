"""Client → broker messages on the bus (`/ws`): one pydantic schema per message type.

Wire names and shapes are the seed's (SPEC §3); fields the seed spelled two ways are
accepted both ways (`remove_worker {worker_name | name}`). Every message may carry `id`,
which the broker echoes as `response_to` on its direct replies.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.options import Language, Options, Speaker
from rentahal.core.specs import (
    Alias,
    Base64,
    Guid,
    ModelName,
    ModelSpec,
    Name,
    PoolSpec,
    Prompt,
    QuerySpec,
    WorkerSpec,
)
from rentahal.core.validation import Storable, describe, lone_surrogate
from rentahal.core.vocabulary import QueryType

# A message's own id, echoed as `response_to` on the broker's direct replies.
MessageId = Annotated[str, StringConstraints(max_length=128)] | int


class Inbound(Storable):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: MessageId | None = None


class SysopInbound(Inbound):
    """Marker base: only a sysop may send these."""


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
            prompt=self.prompt,
            query_type=QueryType.CHAT,
            model_name=self.model_name,
            options=self.options,
        )


class Vision(Inbound):
    """The developer guide's shorthand for a vision `submit_query`."""

    type: Literal["vision"]
    prompt: Prompt = "Describe this image in detail"
    image: Base64
    model_name: ModelName = ""

    def to_query(self) -> QuerySpec:
        return QuerySpec(
            prompt=self.prompt,
            query_type=QueryType.VISION,
            model_name=self.model_name,
            image=self.image,
        )


class SpeechToText(Inbound):
    """Transcribe recorded speech (WAV, webm/opus, ogg…); answered by `transcription_result`."""

    type: Literal["speech_to_text"]
    audio: Base64
    language: Language | None = None
    # Voice mode: list the wake and command words said in `transcription_result.spotted`.
    spot: bool = False

    def to_query(self) -> QuerySpec:
        options: dict[str, Any] = {"language": self.language} if self.language else {}
        if self.spot:
            options["spot"] = True
        return QuerySpec(query_type=QueryType.STT, audio=self.audio, options=options)


class TextToSpeech(Inbound):
    """Speak a text; answered by `speech_result` (a WAV file, base64)."""

    type: Literal["text_to_speech"]
    text: Prompt
    speaker: Speaker | None = None

    def to_query(self) -> QuerySpec:
        options = {"speaker": self.speaker} if self.speaker else {}
        return QuerySpec(prompt=self.text, query_type=QueryType.TTS, options=options)


class VisionChunk(Inbound):
    type: Literal["vision_chunk"]
    chunk_id: int = Field(ge=0)
    total_chunks: int = Field(ge=1, le=64)
    chunk_data: Base64
    image_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    prompt: Prompt = ""
    query_type: QueryType = QueryType.VISION
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


class AddWorker(SysopInbound):
    type: Literal["add_worker"]
    worker: WorkerSpec


class RemoveWorker(SysopInbound):
    type: Literal["remove_worker"]
    worker_name: Name = Field(validation_alias=AliasChoices("worker_name", "name"))


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


class ClearQueue(SysopInbound):
    """Cancel the waiting jobs of a realm, of a user, of both, or (neither) all of them."""

    type: Literal["clear_queue"]
    realm: Alias | None = None
    user_guid: Guid | None = Field(
        default=None, validation_alias=AliasChoices("user_guid", "user_id", "guid")
    )


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
    | ClearQueue
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


MAX_DEPTH = 32  # nesting of a message's JSON; real messages need 4


def _check_shape(data: object) -> None:
    """Refuse nesting deeper than MAX_DEPTH (validating it would recurse without bound) and
    text with lone surrogates, before the frame's `id` is read: a reply echoing it could not
    be sent. (A bytes frame may hold one unescaped: `json.loads` decodes them with
    `surrogatepass`.)"""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ProtocolError(ErrorCode.MALFORMED, f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    stack.append((key, depth))
                stack.append((item, depth + 1))
        elif isinstance(value, str) and lone_surrogate(value):
            raise ProtocolError(ErrorCode.MALFORMED, "text holds a lone UTF-16 surrogate")


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
    _check_shape(data)
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
        raise ProtocolError(ErrorCode.INVALID, describe(exc, skip=1), message_id) from None


def is_sysop_only(message: Inbound) -> bool:
    return isinstance(message, SysopInbound)
