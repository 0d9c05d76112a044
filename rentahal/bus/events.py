"""Broker → client messages on the bus: one pydantic schema per message type (SPEC §3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from rentahal.bus.topics import Topic
from rentahal.core.vocabulary import ASSIGNABLE_ROLES, QueryType, Strategy, WorkerKind

_NO_REPLY = {"response_to"}


class Outbound(BaseModel):
    model_config = ConfigDict(frozen=True)

    # The fan-out topic the event belongs to (`rentahal.bus.topics`): a broadcast reaches
    # only the connections subscribed to it. The default, `queries`, is always heard.
    topic: ClassVar[Topic] = Topic.QUERIES

    response_to: str | int | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict, without an unset `response_to`."""
        return self.model_dump(mode="json", exclude=_NO_REPLY if self.response_to is None else None)

    def wire_json(self) -> str:
        """`wire()` as JSON text, encoded by pydantic's core in one step."""
        return self.model_dump_json(exclude=_NO_REPLY if self.response_to is None else None)

    @property
    def is_final(self) -> bool:
        """Whether the event ends its query: nothing more of it follows, so whoever waits
        for the query stops here. The events that can end one (a result, or the error that
        stands for one) carry it on the wire as `is_final`, so that no client keeps its own
        list of final event types."""
        return False


class UserView(BaseModel):
    """What a user may see of an account (their own, or any, for a sysop)."""

    guid: str
    nickname: str
    role: str
    is_sysop: bool
    is_banned: bool
    query_count: int
    total_query_time: float
    total_cost: float


class QueryView(BaseModel):
    query_id: str
    prompt: str
    query_type: str
    model_type: str
    model_name: str
    state: str
    worker: str | None
    result: str | None
    result_type: str | None
    error: str | None
    processing_time: float | None
    cost: float | None
    timestamp: datetime
    output_url: str | None = None  # where a spoken answer or an image can be fetched


class WorkerView(BaseModel):
    name: str
    realm: str
    address: str
    kind: str
    type: str
    capabilities: list[str]
    models: list[str]
    max_concurrency: int
    in_flight: int
    health_score: float
    is_blacklisted: bool
    circuit: str
    last_active: datetime | None


class TypeStatsView(BaseModel):
    queries: int
    processing_time: float  # seconds, all of them
    cost: float


class StatsView(BaseModel):
    total_queries: int
    total_processing_time: float
    total_cost: float
    last_updated: datetime | None
    max_connected_users: int
    connected_users: int
    average_times: dict[str, float]
    by_type: dict[str, TypeStatsView] = {}  # lifetime totals per query type


class UserInfo(Outbound):
    type: Literal["user_info"] = "user_info"
    data: UserView


class Vocabulary(Outbound):
    """The names this broker knows, first in every greeting, so that a client (the page's
    sysop panel) offers exactly these rather than lists of its own."""

    type: Literal["vocabulary"] = "vocabulary"
    query_types: list[str] = [t.value for t in QueryType]
    worker_kinds: list[str] = [k.value for k in WorkerKind if k != WorkerKind.FEDERATION]
    strategies: list[str] = [s.value for s in Strategy]
    roles: list[str] = [r.value for r in ASSIGNABLE_ROLES]  # what a sysop may give a user


class SysopBroadcast(Outbound):
    type: Literal["sysop_message"] = "sysop_message"
    topic: ClassVar[Topic] = Topic.BROADCASTS
    message: str


class PreviousQueries(Outbound):
    type: Literal["previous_queries"] = "previous_queries"
    data: list[QueryView]


class WorkerUpdate(Outbound):
    type: Literal["worker_update"] = "worker_update"
    topic: ClassVar[Topic] = Topic.WORKERS
    workers: list[WorkerView]


class HuggingfaceUpdate(Outbound):
    type: Literal["huggingface_update"] = "huggingface_update"
    topic: ClassVar[Topic] = Topic.WORKERS
    models: list[dict[str, str]]


class ActiveUsers(Outbound):
    type: Literal["active_users"] = "active_users"
    topic: ClassVar[Topic] = Topic.USERS
    users: list[str]


class QueryAccepted(Outbound):
    type: Literal["query_accepted"] = "query_accepted"
    query_id: str
    position: int


class QueryStatus(Outbound):
    type: Literal["query_status"] = "query_status"
    query_id: str
    state: str
    worker: str | None = None


class QueryChunk(Outbound):
    type: Literal["query_chunk"] = "query_chunk"
    query_id: str
    delta: str


class SpeechChunk(Outbound):
    """One sentence of a spoken answer, said while the rest is still being written: `seq`
    counts from 0 and the chunks come in order, all before the query's final event (which
    carries the whole text and the whole audio, for clients that want one file)."""

    type: Literal["speech_chunk"] = "speech_chunk"
    query_id: str
    seq: int
    text: str  # what is said (the answer's sentence as speech suits it)
    audio: str  # base64 WAV


class QueryResult(Outbound):
    type: Literal["query_result"] = "query_result"
    query_id: str
    result: str
    result_type: str
    processing_time: float
    cost: float
    queue_wait: float = 0.0
    worker: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_final(self) -> bool:
        return True


class QueryResultWithMedia(QueryResult):
    """A spoken answer (a `speech` query, or a chat or vision query asked with
    `options.speak`): the text, what the user said (speech queries), and the audio."""

    transcript: str = ""
    audio: str | None = None  # base64 WAV, when the user asked for a spoken answer


class TranscriptionResult(Outbound):
    """What the user said (`speech_to_text`, or the first step of a `speech` query)."""

    type: Literal["transcription_result"] = "transcription_result"
    query_id: str
    text: str
    processing_time: float = 0.0
    cost: float = 0.0
    final: bool = True  # False: a speech query goes on to answer it
    # The voice mode's words said in `text`, when `speech_to_text` asked (`spot`); see
    # `rentahal.core.spotting`.
    spotted: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_final(self) -> bool:
        return self.final


class SpeechResult(Outbound):
    """Spoken text (`text_to_speech`): a WAV file, base64."""

    type: Literal["speech_result"] = "speech_result"
    query_id: str
    audio: str
    processing_time: float = 0.0
    cost: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_final(self) -> bool:
        return True


class IntentView(BaseModel):
    name: str
    description: str
    triggers: list[str]
    available: bool  # the realm is set up for it (an API key, a worker)


class Intents(Outbound):
    """The intents this realm offers: the voice menu, and what the router chooses from."""

    type: Literal["intents"] = "intents"
    intents: list[IntentView]


class IntentResult(Outbound):
    """How an `intent` message was understood and answered.

    `via` says how the intent was chosen: `named` (the message named it), `menu` (the first
    word), `keyword`, `llm` (a chat worker classified the words) or `default` (chat). An
    intent that answers by itself has `answer`; one that queued a query has `query_id`, whose
    usual events follow. `speech_query_id` is the query that speaks the answer (its
    `speech_result` follows), when the user asked to hear it and the realm can speak."""

    type: Literal["intent_result"] = "intent_result"
    intent: str
    via: str
    prompt: str
    answer: str | None = None
    query_id: str | None = None
    position: int | None = None
    speech_query_id: str | None = None


class VisionChunkReceived(Outbound):
    type: Literal["vision_chunk_received"] = "vision_chunk_received"
    image_id: str
    chunk_id: int
    received: int
    total_chunks: int


class VisionUploadComplete(Outbound):
    """Every chunk is in; the query is submitted (`query_accepted` follows)."""

    type: Literal["vision_upload_complete"] = "vision_upload_complete"
    image_id: str


class QueueUpdate(Outbound):
    type: Literal["queue_update"] = "queue_update"
    topic: ClassVar[Topic] = Topic.QUEUE
    depth: int
    total: int
    realms: dict[str, int] = {}  # depth per realm


class SystemStatsEvent(Outbound):
    type: Literal["system_stats"] = "system_stats"
    data: StatsView


class UserStats(Outbound):
    type: Literal["user_stats"] = "user_stats"
    topic: ClassVar[Topic] = Topic.USERS
    data: list[UserView]


class WorkerHealth(Outbound):
    type: Literal["worker_health"] = "worker_health"
    topic: ClassVar[Topic] = Topic.WORKERS
    data: list[WorkerView]


class RunningQueryView(BaseModel):
    """A query not finished yet, as the sysop's list of running queries shows it."""

    query_id: str
    user_guid: str
    nickname: str
    query_type: str
    model_name: str
    state: str  # queued, dispatched or running
    worker: str | None
    realm: str
    prompt: str  # its first 200 characters
    created_at: datetime
    waited: float  # seconds since it was submitted


class RunningQueries(Outbound):
    """Every unfinished query of the users (not the broker's own), oldest first."""

    type: Literal["running_queries"] = "running_queries"
    data: list[RunningQueryView]


class TimelineView(BaseModel):
    """Finished queries over time, for the sysop's charts: `buckets` buckets of
    `bucket_seconds` from `start`, the last ending now. Counts are of every query that ended
    in the bucket (done, failed, cancelled, expired); latencies are the mean processing time
    of those done, in seconds, or null where none was."""

    bucket_seconds: int
    start: datetime
    buckets: int
    by_type: dict[str, list[int]]
    latency_by_type: dict[str, list[float | None]]
    by_worker: dict[str, list[int]]
    latency_by_worker: dict[str, list[float | None]]


class StatsTimeline(Outbound):
    type: Literal["stats_timeline"] = "stats_timeline"
    data: TimelineView


class UserBanned(Outbound):
    type: Literal["user_banned"] = "user_banned"
    topic: ClassVar[Topic] = Topic.USERS
    guid: str


class UserUnbanned(Outbound):
    type: Literal["user_unbanned"] = "user_unbanned"
    topic: ClassVar[Topic] = Topic.USERS
    guid: str


class QueryTerminated(Outbound):
    type: Literal["query_terminated"] = "query_terminated"
    guid: str
    query_id: str


class PoolView(BaseModel):
    name: str
    type: str
    members: list[str]
    strategy: str


class RealmView(BaseModel):
    name: str
    primary_for: list[str]
    backup_for: list[str]
    strategy: str
    max_queue_size: int
    min_workers: int
    max_workers: int
    workers: list[str]
    queue_depth: int
    workers_short: int  # how many workers the realm lacks to reach min_workers


class PoolUpdate(Outbound):
    type: Literal["pool_update"] = "pool_update"
    topic: ClassVar[Topic] = Topic.WORKERS
    pools: list[PoolView]
    realms: list[str]  # realm names also work as `$NAME` targets
    realm_types: dict[str, list[str]] = {}  # realm → the query types it takes (primary, backup)


class Error(Outbound):
    """A refusal (no `query_id`), or why a query ended without a result (its final event)."""

    type: Literal["error"] = "error"
    code: str
    message: str
    query_id: str | None = None
    retry_after: float | None = None  # seconds until a rate limit or quota lets it through

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_final(self) -> bool:
        return self.query_id is not None


class Ping(Outbound):
    type: Literal["ping"] = "ping"


class Pong(Outbound):
    type: Literal["pong"] = "pong"


class Subscribed(Outbound):
    """The reply to `subscribe`: the topics the connection hears from now on."""

    type: Literal["subscribed"] = "subscribed"
    topics: list[str]


class QueueCleared(Outbound):
    """The reply to `clear_queue`: how many waiting queries were cancelled."""

    type: Literal["queue_cleared"] = "queue_cleared"
    cleared: int
    message: str


class Ack(Outbound):
    """A plain success reply to a command that has nothing else to say."""

    type: Literal["ok"] = "ok"
    message: str


def _schemas(base: type[Outbound]) -> dict[str, type[Outbound]]:
    found: dict[str, type[Outbound]] = {}
    for schema in base.__subclasses__():
        found[schema.__name__] = schema
        found |= _schemas(schema)
    return found


def schema_named(name: str) -> type[Outbound] | None:
    """The event schema of this class name (an event another broker encoded names its
    schema, so that the one receiving it can hand it on typed: `rentahal.cluster.hub`)."""
    return _schemas(Outbound).get(name)
