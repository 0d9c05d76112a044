"""What an intent is: a named thing a user can ask for by voice or text ("weather",
"chat"), the words that select it, and the handler that answers it.

Built-in intents and third-party ones are the same kind of class, registered through the
entry-point group `rentahal.intents` (see `rentahal.intents.registry`). A handler sees the
request and a narrow set of broker services (`IntentCall`), never the broker itself, so a
plugin written today keeps working as the broker changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

import httpx

from rentahal.bus.messages import Location, Units
from rentahal.config import Settings
from rentahal.core.errors import ErrorCode
from rentahal.core.specs import QuerySpec
from rentahal.store import Query, Store, User


@dataclass(frozen=True, slots=True)
class IntentCall:
    """One request for an intent, and the broker services its handler may use."""

    text: str  # the words after the trigger word: the prompt, the place, …
    utterance: str  # everything the user said or typed
    user: User
    speak: bool  # voice mode, and the realm can speak: ask for a spoken answer
    units: Units
    location: Location | None
    image: str | None  # base64, for intents that look (vision)
    settings: Settings
    store: Store
    http: httpx.AsyncClient  # for the web APIs intents call (not the worker pool's client)
    secret_key: str  # the broker's own key, for encrypting what an intent keeps
    submit_query: Callable[[QuerySpec], Awaitable[tuple[Query, int]]]  # as this user, queued

    async def submit(self, spec: QuerySpec) -> Submitted:
        """Queue a query as the user, through the same fairness, scopes and accounting as
        their own queries; its events reach them as usual."""
        query, position = await self.submit_query(spec)
        return Submitted(query_id=query.id, position=position)


@dataclass(frozen=True, slots=True)
class Answer:
    """The intent answered by itself (weather, mail): text to show, and speak in voice mode."""

    text: str


@dataclass(frozen=True, slots=True)
class Submitted:
    """The intent queued a query (chat, vision, imagine); its usual events follow."""

    query_id: str
    position: int


IntentOutcome = Answer | Submitted


class IntentError(Exception):
    """A failure the user should hear about in words ("Gmail is not connected"); becomes an
    `error {code, message}` reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Intent(ABC):
    """An intent. Subclasses set the class attributes and implement `handle`.

    `name` is the wire name (lower case letters, digits, `_`). `triggers` are menu words: an
    utterance that starts with one selects the intent ("weather in Paris"). `keywords` are
    phrases that select it wherever they occur ("read my email"). `description` is one line
    for the spoken menu and for the LLM that classifies free text.
    """

    name: ClassVar[str]
    triggers: ClassVar[tuple[str, ...]] = ()
    keywords: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def available(self, settings: Settings) -> bool:
        """False when the realm is not set up for this intent (no API key, say); it is then
        left out of the menu, and asking for it explains what is missing."""
        return True

    @abstractmethod
    async def handle(self, call: IntentCall) -> IntentOutcome:
        """Answer the call, or raise `IntentError`."""
