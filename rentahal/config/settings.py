"""The broker's settings: defaults from the seed, a config file, `RENTAHAL_*` environment.

Precedence, highest first: values passed in code (the CLI's flags), environment variables,
secret files (`<data_dir>/secrets/<name>`, or in `RENTAHAL_SECRETS_DIR`), the config file,
then the defaults below (the seed's `config.ini` keys and values).

Secrets (`SecretStr` fields) may not come from the config file: the seed kept its API keys and
signing key in a plain file it rewrote at every start, and a config file is the thing people
paste into bug reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from rentahal.config.database_url import async_database_url
from rentahal.config.file_source import ConfigFileSource
from rentahal.config.secret_files import SecretFilesSource, is_secret_field


class Settings(BaseSettings):
    """Every tunable of the broker. Field names are the flattened seed keys."""

    model_config = SettingsConfigDict(
        env_prefix="RENTAHAL_",
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
    )

    config_file: Path | None = Field(default=None, description="TOML or INI file to read.")
    data_dir: Path = Field(default=Path("data"), description="SQLite file and secrets live here.")
    secrets_dir: Path | None = None

    # [Server]
    host: str = "0.0.0.0"
    port: int = Field(default=5000, ge=1, le=65535)
    # [Settings]
    debug: bool = False
    log_json: bool = False
    # One line per HTTP request (uvicorn's access log). Off by default: every query is kept in
    # the store with its request id, and a line per request costs the busy path real CPU.
    access_log: bool = False
    idle_watt_rate: float = Field(default=500.0, ge=0)
    premium_watt_rate: float = Field(default=1000.0, ge=0)
    electricity_cost_per_kwh: float = Field(default=0.25, ge=0)
    # [Database]
    database_name: str = "llm_broker.db"
    database_url: str | None = None
    # [Cluster] — with a Redis URL (and a PostgreSQL `database_url`), this broker is one of
    # an installation's many (docs/cluster.md): worker slots, events, bans and the jobs of a
    # broker that died are shared through Redis and PostgreSQL.
    redis_url: str | None = None
    # The prefix of every Redis key and channel: several installations may share one Redis.
    cluster_name: str = Field(default="rentahal", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Seconds a broker that stopped answering keeps its jobs and worker slots before the
    # other brokers take them over.
    cluster_lease: float = Field(default=10.0, ge=1.0, le=300.0)
    # [Federation] — installations forwarding to each other what they cannot serve
    # (docs/cluster.md). This installation's name in hop lists; empty: derived from the
    # secret key, which every broker of an installation shares.
    federation_id: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    federation_max_hops: int = Field(default=3, ge=1, le=8)
    # Seconds a query may wait for a local worker before a peer that serves it may take it
    # instead (0: only a query that no local worker could serve goes to a peer).
    federation_forward_after: float = Field(default=0.0, ge=0)
    # Peers to add at start if the store has no peer of that name: a secret (it holds their
    # keys), as JSON `[{"name": "y", "url": "https://y.example", "key": "…"}]`, from the
    # environment or `<secrets dir>/federation_peers`.
    federation_peers: SecretStr | None = None
    # How often each peer is asked what it serves.
    federation_refresh_interval: float = Field(default=30.0, gt=0)
    # [Websocket]
    max_message_size: int = Field(default=1_048_576, ge=1024)
    # Origins (scheme://host[:port]) besides the broker's own that may open /ws with cookies.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ping_interval: float = Field(default=25.0, gt=0)
    # [Workers]
    default_worker_address: str = "localhost:8000"
    health_check_interval: float = Field(default=60.0, gt=0)
    no_blacklist_imagine: bool = True
    # Worker roles the broker runs itself, as `rentahal worker` child processes on this
    # machine (e.g. "stt,tts,chat,vision"): speech in and out with no GPU and no internet.
    local_workers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The first of their ports (0: any free ones).
    local_worker_port: int = Field(default=5100, ge=0, le=65000)
    # [Security]
    secret_key: SecretStr | None = None
    token_expiration: int = Field(default=3600, ge=60)
    # [Performance]
    max_connections: int = Field(default=100, ge=1)
    # Open bus WebSockets (/ws): `max_connections` in all, this many from one client address
    # (0: no limit). Outbound workers' sockets (/ws/worker) have a room of their own, so users
    # cannot lock the workers out; HTTP has `max_http_connections` besides both
    # (rentahal.api.connections).
    max_connections_per_ip: int = Field(default=20, ge=0)
    max_worker_connections: int = Field(default=100, ge=1)
    max_http_connections: int = Field(default=100, ge=1)
    # Slow clients (rentahal.api.slow_clients): a request's headers must arrive within
    # `header_timeout` seconds, its body within `body_timeout` (plus a second per KiB).
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=10.0, gt=0)
    # Guests stored (at their first query or nickname) who left nothing behind and were last
    # seen this many days ago are deleted (rentahal.auth.guests).
    guest_expiry_days: int = Field(default=30, ge=1)
    query_timeout: float = Field(default=30.0, gt=0)
    # [Costs]
    base_cost_per_query: float = Field(default=0.01, ge=0)
    cost_per_second: float = Field(default=0.001, ge=0)
    # [Queue]
    max_queue_size: int = Field(default=100, ge=1)  # per realm, unless the realm says
    queue_timeout: float = Field(default=300.0, gt=0)
    max_queued_per_user: int = Field(default=50, ge=1)  # sysops are exempt
    max_running_per_user: int = Field(default=8, ge=1)  # sysops are exempt
    # [Failover]
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_backoff: float = Field(default=0.25, ge=0)  # doubles with each attempt
    circuit_failures: int = Field(default=5, ge=1)
    circuit_open_seconds: float = Field(default=30.0, gt=0)
    slow_job_seconds: float = Field(default=60.0, gt=0)
    # Self-registered workers: how often they heartbeat, and how long an outbound worker's
    # requests wait for it to reconnect before the job is retried elsewhere.
    worker_heartbeat_interval: float = Field(default=10.0, gt=0)
    tunnel_reconnect_grace: float = Field(default=10.0, ge=0)
    # [Chunking]
    chunk_size: int = Field(default=1_048_576, ge=1024)
    # [Limits] — bounds on user input
    max_prompt_chars: int = Field(default=32_000, ge=1)
    max_audio_seconds: float = Field(default=300.0, gt=0)  # a recording to transcribe
    max_nickname_chars: int = Field(default=32, ge=3)
    # Queries a minute (token buckets: a burst of that many, refilled evenly) per user by role,
    # per API key and per client IP; and queries a day per role. 0: no limit. Sysops: none.
    queries_per_minute_guest: float = Field(default=20, ge=0)
    queries_per_minute_user: float = Field(default=60, ge=0)
    queries_per_minute_premium: float = Field(default=240, ge=0)
    queries_per_minute_per_key: float = Field(default=120, ge=0)
    queries_per_minute_per_ip: float = Field(default=240, ge=0)
    queries_per_day_guest: int = Field(default=500, ge=0)
    queries_per_day_user: int = Field(default=0, ge=0)
    queries_per_day_premium: int = Field(default=0, ge=0)
    # Accounts registered an hour from one client address (each costs an argon2 hash).
    registrations_per_hour_per_ip: float = Field(default=10, ge=0)
    # Every user's queries need credit (else only those whose budget a sysop enforced).
    enforce_budgets: bool = False
    # [HuggingFace] / [Claude] (used by their backends)
    huggingface_default_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gpt2", "gpt2-medium", "gpt2-large"]
    )
    huggingface_api_key: SecretStr | None = None
    # Each Hugging Face model is reached at <endpoint>/<model> (the serverless API, or your
    # own Inference Endpoint or TGI server).
    huggingface_endpoint: str = "https://router.huggingface.co/hf-inference/models"
    claude_api_key: SecretStr | None = None
    claude_endpoint: str = "https://api.anthropic.com"
    claude_model_name: str = "claude-sonnet-4-5"
    # [Speech] — a spoken answer (voice mode, `options.speak`) says at most this many
    # sentences, and stops before the one that would take it past this many seconds; the
    # text answer stays whole (`rentahal.speech.speakable`).
    spoken_answer_max_sentences: int = Field(default=6, ge=1, le=200)
    spoken_answer_max_seconds: float = Field(default=40.0, ge=1, le=1800)
    # [Intents] — free text is classified by keyword rules, then by a chat worker (this long)
    intent_router_timeout: float = Field(default=10.0, gt=0)
    # Weather: OpenWeatherMap One Call 3.0 and geocoding, called by the broker (the key never
    # reaches a page). Without the browser's location, the default place (e.g. "London,GB").
    openweathermap_api_key: SecretStr | None = None
    openweathermap_endpoint: str = "https://api.openweathermap.org"
    weather_default_location: str = ""
    weather_units: Literal["metric", "imperial"] = "metric"
    # Gmail, read-only: OAuth 2.0 authorization code with PKCE, tokens kept by the broker.
    google_client_id: str = ""
    google_client_secret: SecretStr | None = None
    google_auth_endpoint: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_endpoint: str = "https://oauth2.googleapis.com/token"
    google_revoke_endpoint: str = "https://oauth2.googleapis.com/revoke"
    gmail_api_endpoint: str = "https://gmail.googleapis.com"
    # The broker's address as browsers reach it (for OAuth redirects); default: the request's.
    public_url: str = ""

    @field_validator(
        "huggingface_default_models", "allowed_origins", "local_workers", mode="before"
    )
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _a_database_the_broker_runs_on(cls, value: str | None) -> str | None:
        if value:
            async_database_url(value)  # refused now, by name, rather than at the first query
        return value or None

    @model_validator(mode="after")
    def _a_cluster_needs_postgresql(self) -> Settings:
        if self.redis_url and not self.database_url:
            raise ValueError(
                "redis_url needs a PostgreSQL database_url: brokers in a cluster share one "
                "database (SQLite is one machine's file)"
            )
        return self

    @field_validator("local_workers")
    @classmethod
    def _known_roles(cls, roles: list[str]) -> list[str]:
        known = ("stt", "tts", "chat", "vision", "imagine")
        if unknown := [r for r in roles if r not in known]:
            raise ValueError(f"unknown worker roles {unknown}; known: {', '.join(known)}")
        return list(dict.fromkeys(roles))

    @property
    def resolved_database_url(self) -> str:
        """`database_url` with its async driver if set, else the SQLite file in the data
        directory."""
        if self.database_url:
            return async_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / self.database_name).resolve()}"

    @property
    def resolved_secrets_dir(self) -> Path:
        return self.secrets_dir or self.data_dir / "secrets"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        secrets_dir = getattr(file_secret_settings, "secrets_dir", None)
        return (
            init_settings,
            env_settings,
            SecretFilesSource(settings_cls, Path(secrets_dir) if secrets_dir else None),
            ConfigFileSource(settings_cls, init_settings, env_settings),
        )


def secret_field_names() -> frozenset[str]:
    """Names of the fields that hold secrets (never read from the config file, never logged)."""
    return frozenset(
        name for name, field in Settings.model_fields.items() if is_secret_field(field)
    )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; `overrides` (CLI flags) win over everything else.

    The secrets directory depends on the data directory, which may itself come from the
    environment or the CLI, so it is resolved in a first pass and then applied.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    first = Settings(**overrides)
    secrets_dir = first.resolved_secrets_dir
    if not secrets_dir.is_dir():
        return first
    return Settings(_secrets_dir=secrets_dir, **overrides)  # type: ignore[call-arg]
