"""The names the broker's parts agree on, each listed once: query types, model types, worker
kinds, roles, a job's states, and the strategies a pool or realm may choose a worker by.

Each is a `StrEnum`, so a member is also the plain string the wire, the store and the page
use ("chat", "sysop"…), and the page learns the lists from the broker's greeting rather than
keeping copies of its own.
"""

from __future__ import annotations

import enum


class QueryType(enum.StrEnum):
    CHAT = "chat"
    VISION = "vision"
    IMAGINE = "imagine"
    SPEECH = "speech"  # spoken in, answered (stt → chat, and tts when asked to speak)
    TTS = "tts"
    STT = "stt"


class ModelType(enum.StrEnum):
    """The seed's `model_type`: how a query asks to be answered, beside what `model_name`
    names. Seed clients send it with every query (`speech` whenever their voice mode is on)."""

    WORKER_NODE = "worker_node"  # no preference: routed by `model_name`, realms and pools
    SPEECH = "speech"  # answered aloud too, as `options.speak` asks
    CLAUDE = "claude"  # a Claude worker, unless `model_name` says which worker or model
    HUGGINGFACE = "huggingface"  # a Hugging Face worker, likewise
    INTERNAL = "internal"  # the broker's own queries (the intent classifier): not in history


# What a client is told it may send (INTERNAL is the broker's own).
CLIENT_MODEL_TYPES = (
    ModelType.WORKER_NODE,
    ModelType.SPEECH,
    ModelType.CLAUDE,
    ModelType.HUGGINGFACE,
)


class WorkerKind(enum.StrEnum):
    """The protocol a worker speaks: one adapter each in `rentahal.backends`."""

    RENTAHAL = "rentahal"
    OLLAMA = "ollama"
    OPENAI = "openai"
    A1111 = "a1111"
    CLAUDE = "claude"
    HUGGINGFACE = "huggingface"
    # Another RENT A HAL installation, reached through its federation routes: a peer the
    # sysop added, never a worker one registers (`rentahal.federation`).
    FEDERATION = "federation"


class Role(enum.StrEnum):
    GUEST = "guest"
    USER = "user"
    PREMIUM = "premium"
    SYSOP = "sysop"


# The roles a sysop may give (a guest is what nobody is given: it is who has no account).
ASSIGNABLE_ROLES = (Role.USER, Role.PREMIUM, Role.SYSOP)


class QueryState(enum.StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {QueryState.DONE, QueryState.FAILED, QueryState.CANCELLED, QueryState.EXPIRED}
)
UNFINISHED_STATES = (QueryState.QUEUED, QueryState.DISPATCHED, QueryState.RUNNING)


class Strategy(enum.StrEnum):
    """How a pool or realm picks among its free workers (`rentahal.routing.strategies`)."""

    AUTO = "auto"
    HEALTH = "health"
    ROUND_ROBIN = "round_robin"
    LEAST_BUSY = "least_busy"
    RANDOM = "random"
    FASTEST = "fastest"
    POWER_OF_TWO = "power_of_two"
