"""Running intents in the broker: recognise the words, call the intent's handler as the
user, and, in voice mode, have the answer spoken by the realm's TTS workers."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import httpx
import structlog

from rentahal.auth import Principal
from rentahal.bus import events
from rentahal.bus import messages as m
from rentahal.config import Settings
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.specs import QuerySpec
from rentahal.core.vocabulary import QueryType
from rentahal.intents.base import Answer, IntentCall, IntentError
from rentahal.intents.registry import IntentRegistry
from rentahal.intents.router import IntentRouter, UnknownIntent
from rentahal.queries import Queries
from rentahal.speech.speakable import speakable
from rentahal.store import Query, QueryState, Store
from rentahal.store.models import INTERNAL_MODEL_TYPE

log = structlog.get_logger(__name__)

# The classifier answers with one word; a few tokens leave room for "Intent: weather".
CLASSIFY_OPTIONS = {"stream": False, "max_tokens": 8, "temperature": 0.0}
WEB_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class Intents:
    """The broker's intents: what is installed, the router, and running a request.

    It queues queries through `queries`, as the user; `could_serve(query_type, model)` says
    whether a live worker takes a query (a chat worker to classify the words, a TTS worker to
    speak the answer); `store` and `secret_key` are for the intents' own records (a Gmail
    connection)."""

    def __init__(
        self,
        settings: Settings,
        queries: Queries,
        *,
        could_serve: Callable[[str, str], bool],
        store: Store,
        secret_key: str,
        registry: IntentRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._queries = queries
        self._could_serve = could_serve
        self._store = store
        self._secret_key = secret_key
        self.registry = registry or IntentRegistry.discover()
        self.router = IntentRouter(self.registry)
        # Intents call web APIs (weather, mail): a client of their own, apart from the
        # worker pool's, with a web-sized timeout and no redirects followed.
        self.http = httpx.AsyncClient(timeout=WEB_TIMEOUT, follow_redirects=False)

    async def close(self) -> None:
        await self.http.aclose()

    def menu(self) -> events.Intents:
        settings = self._settings
        return events.Intents(
            intents=[
                events.IntentView(
                    name=intent.name,
                    description=intent.description,
                    triggers=list(intent.triggers),
                    available=intent.available(settings),
                )
                for intent in self.registry
            ]
        )

    async def run(self, principal: Principal, message: m.Intent) -> events.IntentResult:
        """Answer an `intent` message, or raise `ProtocolError` with words for the user."""
        could_serve = self._could_serve
        ask = partial(self._classify, principal)
        try:
            recognized = await self.router.recognize(
                message.text,
                named=message.intent,
                ask_model=ask if principal.allows("chat") and could_serve("chat", "") else None,
            )
        except UnknownIntent as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"this realm has no {exc} intent") from None
        intent = recognized.intent
        speak = message.speak and could_serve("tts", "")
        call = IntentCall(
            text=recognized.prompt,
            utterance=message.text,
            user=principal.user,
            speak=speak,
            units=message.units or self._settings.weather_units,
            location=message.location,
            image=message.image,
            settings=self._settings,
            store=self._store,
            http=self.http,
            secret_key=self._secret_key,
            submit_query=partial(self._queries.submit, principal, counted=True),
        )
        try:
            outcome = await intent.handle(call)
        except IntentError as exc:
            raise ProtocolError(exc.code, exc.message) from None
        except ProtocolError:
            raise
        except Exception:
            log.exception("intent.failed", intent=intent.name)
            raise ProtocolError(ErrorCode.INTERNAL, f"the {intent.name} intent failed") from None
        result = events.IntentResult(
            intent=intent.name, via=recognized.via, prompt=recognized.prompt
        )
        if not isinstance(outcome, Answer):
            return result.model_copy(
                update={"query_id": outcome.query_id, "position": outcome.position}
            )
        speech = await self._speak(principal, outcome.text) if speak else None
        return result.model_copy(
            update={"answer": outcome.text, "speech_query_id": speech.id if speech else None}
        )

    async def _speak(self, principal: Principal, text: str) -> Query | None:
        """Queue the spoken answer, as it suits speech and within the cap for spoken
        answers; without it (the queue is full, the key may not use speech) the user still
        has the answer in text."""
        settings = self._settings
        said = speakable(
            text,
            max_sentences=settings.spoken_answer_max_sentences,
            max_seconds=settings.spoken_answer_max_seconds,
        )
        if not said:
            return None
        spec = QuerySpec(prompt=said[: settings.max_prompt_chars], query_type=QueryType.TTS)
        try:
            query, _ = await self._queries.submit(principal, spec, counted=True)
        except ProtocolError as exc:
            log.info("intent.not_spoken", reason=exc.code)
            return None
        return query

    async def _classify(self, principal: Principal, prompt: str) -> str | None:
        """Ask a chat worker, as the user and through the fair queue, which intent the words
        are; None if it cannot answer in time."""
        spec = QuerySpec(
            prompt=prompt,
            query_type=QueryType.CHAT,
            model_type=INTERNAL_MODEL_TYPE,
            options=CLASSIFY_OPTIONS,
        )
        try:
            # Counted with the request that asked; only offered when the key may chat.
            query, _ = await self._queries.submit(principal, spec, counted=True)
        except ProtocolError as exc:
            log.info("intent.classifier_refused", reason=exc.code)
            return None
        finished = await self._queries.outcome(query.id, self._settings.intent_router_timeout)
        if finished.state != QueryState.DONE:
            await self._queries.cancel(query.id, reason="the intent router stopped waiting")
            return None
        return finished.result
