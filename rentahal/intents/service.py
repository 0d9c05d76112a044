"""Running intents in the broker: recognise the words, call the intent's handler as the
user, and, in voice mode, have the answer spoken by the realm's TTS workers."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import httpx
import structlog

from rentahal.auth import Principal
from rentahal.bus import events
from rentahal.bus import messages as m
from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.intents.base import Answer, IntentCall, IntentError
from rentahal.intents.registry import IntentRegistry
from rentahal.intents.router import IntentRouter, UnknownIntent
from rentahal.store import Query, QueryState
from rentahal.store.models import INTERNAL_MODEL_TYPE

if TYPE_CHECKING:
    from rentahal.broker import Broker

log = structlog.get_logger(__name__)

# The classifier answers with one word; a few tokens leave room for "Intent: weather".
CLASSIFY_OPTIONS = {"stream": False, "max_tokens": 8, "temperature": 0.0}
WEB_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class Intents:
    """The broker's intents: what is installed, the router, and running a request."""

    def __init__(self, broker: Broker, registry: IntentRegistry | None = None) -> None:
        self._broker = broker
        self.registry = registry or IntentRegistry.discover()
        self.router = IntentRouter(self.registry)
        # Intents call web APIs (weather, mail): a client of their own, apart from the
        # worker pool's, with a web-sized timeout and no redirects followed.
        self.http = httpx.AsyncClient(timeout=WEB_TIMEOUT, follow_redirects=False)

    async def close(self) -> None:
        await self.http.aclose()

    def menu(self) -> events.Intents:
        settings = self._broker.settings
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
        broker = self._broker
        could_serve = broker.router.could_serve
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
            units=message.units or broker.settings.weather_units,
            location=message.location,
            image=message.image,
            settings=broker.settings,
            store=broker.store,
            http=self.http,
            secret_key=broker.secret_key,
            submit_query=partial(broker.admission.queue_counted, principal),
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
        """Queue the spoken answer; without it (the queue is full, the key may not use
        speech) the user still has the answer in text."""
        limit = self._broker.settings.max_prompt_chars
        try:
            query, _ = await self._broker.admission.queue_counted(
                principal, m.QuerySpec(prompt=text[:limit], query_type="tts")
            )
        except ProtocolError as exc:
            log.info("intent.not_spoken", reason=exc.code)
            return None
        return query

    async def _classify(self, principal: Principal, prompt: str) -> str | None:
        """Ask a chat worker, as the user and through the fair queue, which intent the words
        are; None if it cannot answer in time."""
        broker = self._broker
        spec = m.QuerySpec(
            prompt=prompt,
            query_type="chat",
            model_type=INTERNAL_MODEL_TYPE,
            options=CLASSIFY_OPTIONS,
        )
        try:
            query, _ = await broker.scheduler.submit(principal.user, spec)
        except ProtocolError as exc:
            log.info("intent.classifier_refused", reason=exc.code)
            return None
        await broker.scheduler.wait_finished(query.id, broker.settings.intent_router_timeout)
        finished = await broker.store.queries.get(query.id)
        if finished is None or finished.state != QueryState.DONE:
            await broker.scheduler.cancel(query.id, reason="the intent router stopped waiting")
            return None
        return finished.result
