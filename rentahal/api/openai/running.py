"""A `/v1` request as a query: its target, its spec, submitting it and waiting for it, all
through the broker's queries service, as every transport does."""

from __future__ import annotations

from typing import Any

from fastapi import status
from pydantic import ValidationError

from rentahal.api.openai.errors import OpenAIError, bad_request, failed, refused
from rentahal.auth import Principal
from rentahal.broker import Broker
from rentahal.config import Settings
from rentahal.core.errors import ProtocolError
from rentahal.core.specs import QuerySpec
from rentahal.core.validation import describe
from rentahal.core.vocabulary import UNFINISHED_STATES
from rentahal.store import Query, QueryState

AUTO_MODELS = {"", "auto", "default"}
# OpenAI's own model names, which clients often send unasked: "any worker" when no worker
# serves a model of that name.
STOCK_MODELS: dict[str, frozenset[str]] = {
    "imagine": frozenset({"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini"}),
    "stt": frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"}),
    "tts": frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"}),
}


def target(model: str | None) -> str:
    """The query's `model_name` for OpenAI's `model`."""
    name = (model or "").strip()
    return "" if name.lower() in AUTO_MODELS else name


def media_target(broker: Broker, query_type: str, model: str | None) -> str:
    name = target(model)
    if name in STOCK_MODELS.get(query_type, ()) and not broker.router.could_serve(query_type, name):
        return ""
    return name


async def submit(principal: Principal, broker: Broker, spec: QuerySpec) -> Query:
    """Queue the query as the browser's are queued. The caller may start watching the query's
    events right after this returns: nothing runs in between (no await follows the submit)."""
    try:
        query, _ = await broker.queries.submit(principal, spec)
    except ProtocolError as exc:
        raise refused(exc, spec.model_name) from None
    return query


def query_spec(param: str | None = None, **fields: Any) -> QuerySpec:
    """The query a request makes, or a 400 for what `QuerySpec` refuses (its text rule and
    bounds, the options' bounds): the rules every way in applies."""
    try:
        return QuerySpec(**fields)
    except ValidationError as exc:
        raise bad_request(describe(exc), param=param) from None


def wait_bound(settings: Settings) -> float:
    """As long as the scheduler itself may take to end a query: a queue wait, then each
    attempt up to the query timeout."""
    return settings.queue_timeout + settings.max_attempts * settings.query_timeout + 30.0


async def finished(broker: Broker, query: Query) -> Query:
    """`query` (as `submit` returned it) once done; an `OpenAIError` if it failed or took too
    long (then it is cancelled: its client has been told it failed).

    The outcome is the scheduler's own object (`Queries.outcome`): no store read, which an
    outage could fail after the job ran, telling the client it failed when it did not."""
    query = await broker.queries.outcome(query.id, wait_bound(broker.settings))
    if query.state in UNFINISHED_STATES:
        await broker.queries.cancel(query.id, reason="the OpenAI API stopped waiting")
        raise OpenAIError(
            status.HTTP_504_GATEWAY_TIMEOUT,
            "the query did not finish in time",
            type="server_error",
            code="timeout",
        )
    if query.state != QueryState.DONE:
        raise failed(query)
    return query


def created_at(query: Query) -> int:
    return int(query.created_at.timestamp())


def words(text: str) -> int:
    return len(text.split())
