"""SQLAlchemy models: the tables of SPEC §11 that the broker's foundation needs.

The seed's tables (users, queries, ai_workers, huggingface_models, system_stats) are a subset:
identities are random server-side ids, a query row is the job with its whole lifecycle, and
statistics are counters updated in the same transaction as the query that changes them.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from rentahal.core.vocabulary import QueryState, Role


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use rentahal.store.utcnow()")
        return value.astimezone(UTC)  # SQLite drops the offset: store the instant in UTC

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    nickname: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.GUEST.value)
    is_banned: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    query_count: Mapped[int] = mapped_column(Integer, default=0)
    total_query_time: Mapped[float] = mapped_column(Float, default=0.0)
    total_cost: Mapped[float] = mapped_column(Float, default=0.0)
    # An argon2id hash (rentahal.auth.passwords); None for guests and key-only accounts.
    password_hash: Mapped[str | None] = mapped_column(String(256), default=None)
    # Queries need credit: refused with `insufficient_credit` when the balance runs out.
    budget_enforced: Mapped[bool] = mapped_column(Boolean, default=False)
    # The sum of the user's ledger rows (micro-credits), kept by every write that adds one
    # (`ledger.append`), so a balance is one row's read however long the history.
    balance: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def is_sysop(self) -> bool:
        return self.role == Role.SYSOP.value

    @property
    def is_registered(self) -> bool:
        """Has a password: can log in by nickname (a guest has only their cookie)."""
        return self.password_hash is not None


# "HAL" and "hal" are one nickname: nobody may pass for another user by case.
Index("uq_users_nickname_lower", func.lower(User.nickname), unique=True)


class Session(Base):
    """A browser session. The cookie carries a signed random token; only its hash is stored."""

    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class ApiKey(Base):
    """An API key; only a SHA-256 of the key is kept (keys are long random strings)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="default")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


INTERNAL_MODEL_TYPE = "internal"


class Query(Base):
    """One query and its job lifecycle: `queued → dispatched → running → done|failed|…`."""

    __tablename__ = "queries"
    __table_args__ = (
        Index("ix_queries_user_created", "user_id", "created_at"),
        Index("ix_queries_state", "state"),
        Index("ix_queries_broker_state", "broker_id", "state"),
        Index("uq_queries_user_idempotency_key", "user_id", "idempotency_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    query_type: Mapped[str] = mapped_column(String(16))
    model_type: Mapped[str] = mapped_column(String(32), default="worker_node")
    model_name: Mapped[str] = mapped_column(String(128), default="")
    prompt: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default=QueryState.QUEUED.value)
    realm: Mapped[str] = mapped_column(String(64), default="")
    worker_name: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str | None] = mapped_column(Text, default=None)
    result_type: Mapped[str | None] = mapped_column(String(16), default=None)
    error_code: Mapped[str | None] = mapped_column(String(32), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    queue_wait: Mapped[float | None] = mapped_column(Float, default=None)
    processing_time: Mapped[float | None] = mapped_column(Float, default=None)
    cost: Mapped[float | None] = mapped_column(Float, default=None)
    # The electricity the workers used for it, from the watt rates (the owner's view of cost).
    energy_kwh: Mapped[float | None] = mapped_column(Float, default=None)
    # False until the owner's connection has been sent the final result.
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    # Media in and out, base64 as on the wire: the user's image or recorded speech, and a
    # spoken answer or generated image. Deferred, so lists of queries never load them.
    image: Mapped[str | None] = mapped_column(
        Text, default=None, deferred=True, deferred_group="media"
    )
    audio: Mapped[str | None] = mapped_column(
        Text, default=None, deferred=True, deferred_group="media"
    )
    output: Mapped[str | None] = mapped_column(
        Text, default=None, deferred=True, deferred_group="media"
    )
    # Which step of a multi-step query runs next (a speech query: stt → chat → tts).
    stage: Mapped[int] = mapped_column(Integer, default=0)
    # The broker process that holds it while it is unfinished (`rentahal.cluster.reclaim`).
    broker_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # The installations a query forwarded by federation came through, first first: it is
    # never sent to one of them again (`rentahal.federation`).
    hops: Mapped[list[str]] = mapped_column(default=list)
    # The key a forwarded query came with: a peer that sends it again (its broker died
    # mid-forward) is answered with this query's outcome, not a second run.
    idempotency_key: Mapped[str | None] = mapped_column(String(160), default=None)

    @property
    def is_internal(self) -> bool:
        """A query the broker asks for itself, as its user (the intent router classifying
        their words): accounted like theirs, but its events and its place in their history
        are not shown to them."""
        return self.model_type == INTERNAL_MODEL_TYPE


class Peer(Base):
    """Another installation this one may forward queries to (`rentahal.federation`), the key
    it issued for us (sealed with this installation's secret), and its account here."""

    __tablename__ = "peers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(512))
    sealed_key: Mapped[str] = mapped_column(Text)
    # The account the peer's work is credited to here: its balance is what we owe it.
    account_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """A registered worker: where it is, what protocol it speaks and how healthy it is."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16))
    capabilities: Mapped[list[str]] = mapped_column(default=list)
    models: Mapped[list[str]] = mapped_column(default=list)
    # What its last health check listed, kept so that a restarted broker can dispatch
    # resumed jobs before its first probe of the worker.
    reported_models: Mapped[list[str]] = mapped_column(default=list)
    max_concurrency: Mapped[int] = mapped_column(Integer, default=4)
    health_score: Mapped[float] = mapped_column(Float, default=100.0)
    blacklisted: Mapped[bool] = mapped_column(Boolean, default=False)
    last_active: Mapped[datetime | None] = mapped_column(default=None)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # {topic: [keywords]}: preferred for prompts that mention a keyword (the seed's pools).
    specializations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    realm: Mapped[str] = mapped_column(String(64), default="")
    # Name of the environment variable that holds the worker's API key (never the key itself).
    api_key_env: Mapped[str | None] = mapped_column(String(128), default=None)
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Realm(Base):
    """A partition of the installation by kind of work (SPEC §12): its own queue and limits.

    `primary_for` lists the query types routed here first (each type has exactly one primary
    realm); `backup_for` the types it takes when their primary realm has no capacity.
    """

    __tablename__ = "realms"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    primary_for: Mapped[list[str]] = mapped_column(default=list)
    backup_for: Mapped[list[str]] = mapped_column(default=list)
    strategy: Mapped[str] = mapped_column(String(16), default="health")
    max_queue_size: Mapped[int] = mapped_column(Integer, default=100)
    min_workers: Mapped[int] = mapped_column(Integer, default=0)
    max_workers: Mapped[int] = mapped_column(Integer, default=1000)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pool(Base):
    """A named alias (`$NAME`) for a set of workers, with a selection strategy (SPEC §5)."""

    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    query_type: Mapped[str] = mapped_column(String(16), default="chat")
    members: Mapped[list[str]] = mapped_column(default=list)
    strategy: Mapped[str] = mapped_column(String(16), default="auto")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    """A named model reachable through a cloud provider (the seed's `huggingface_models`)."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    provider: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256))
    query_type: Mapped[str] = mapped_column(String(16), default="chat")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("uq_models_provider_name", "provider", "name", unique=True),)


class AuditEntry(Base):
    """One sysop action: who did what to what, when. Rows are only ever added."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    actor: Mapped[str] = mapped_column(String(64))  # the nickname at the time
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class TypeStats(Base):
    """Lifetime statistics per query type (the seed's `*_time` lists, as sums and counts)."""

    __tablename__ = "type_stats"

    query_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    query_count: Mapped[int] = mapped_column(Integer, default=0)
    total_processing_time: Mapped[float] = mapped_column(Float, default=0.0)
    total_cost: Mapped[float] = mapped_column(Float, default=0.0)
    last_updated: Mapped[datetime] = mapped_column(default=utcnow)


class Counter(Base):
    """Named system-wide integers such as `max_connected_users`."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class OAuthToken(Base):
    """A user's grant at an OAuth provider (Gmail, read-only), kept so the broker can act for
    them. Everything about the grant (tokens, expiry, scope, account) is in `sealed`, encrypted
    with a key derived from the broker's secret key (`rentahal.store.oauth_tokens`)."""

    __tablename__ = "oauth_tokens"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OAuthState(Base):
    """An OAuth authorization in progress: the hash of the `state` sent to the provider, whose
    it is, and (sealed) the PKCE code verifier and redirect URI. Used once, then deleted;
    stale after ten minutes. In the database so a restart or another broker can finish it."""

    __tablename__ = "oauth_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class LedgerKind(enum.StrEnum):
    QUERY = "query"  # a user pays for a finished query (negative)
    EARNING = "earning"  # a worker's owner is paid for the seconds it served (positive)
    GRANT = "grant"  # a sysop adds (or takes back) credit


class LedgerEntry(Base):
    """One change of one user's credit. Rows are only ever added; a balance is the sum of a
    user's rows (kept as `User.balance` as they are added). Amounts are whole micro-credits
    (1 credit = 1,000,000), so sums are exact."""

    __tablename__ = "ledger"
    __table_args__ = (Index("ix_ledger_user", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    query_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    worker_name: Mapped[str | None] = mapped_column(String(64), default=None)
    actor_id: Mapped[str | None] = mapped_column(String(32), default=None)  # who granted it
    memo: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
