"""Queries by REST: submit (JSON or a file upload), await, list, stream, fetch the output,
cancel; and the sysop's view of every unfinished query and clearing of the waiting ones."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from rentahal.api.deps import BrokerDep, OwnQueryDep, PrincipalDep, SysopDep
from rentahal.api.streaming import KEEP_ALIVE, KEEP_ALIVE_COMMENT
from rentahal.auth import Principal
from rentahal.broker import Broker
from rentahal.bus import events
from rentahal.bus.hub import encode
from rentahal.bus.views import has_output, query_view
from rentahal.core.specs import Alias, Guid, QuerySpec
from rentahal.core.validation import describe
from rentahal.core.vocabulary import QueryType

router = APIRouter()

MAX_WAIT = 300.0
Wait = Annotated[
    float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the query to finish.")
]


class Accepted(BaseModel):
    query_id: str
    position: int
    query: events.QueryView


@router.post("/queries", status_code=status.HTTP_202_ACCEPTED, tags=["queries"])
async def submit_query(
    spec: QuerySpec, principal: PrincipalDep, broker: BrokerDep, wait: Wait = 0
) -> Accepted:
    """Queue a query. With `wait`, hold the answer until it finishes (or `wait` runs out)."""
    return await _submit(spec, principal, broker, wait)


UPLOAD_LIMIT = 12 * 1024 * 1024  # bytes: its base64 must fit the 16 MiB a query may carry


@router.post("/queries/upload", status_code=status.HTTP_202_ACCEPTED, tags=["queries"])
async def submit_upload(
    principal: PrincipalDep,
    broker: BrokerDep,
    file: Annotated[UploadFile, File(description="The image (vision) or recording (stt, speech).")],
    query_type: Annotated[QueryType, Form()] = QueryType.VISION,
    prompt: Annotated[str, Form(max_length=200_000)] = "",
    model_name: Annotated[str, Form(max_length=128)] = "",
    speak: Annotated[bool, Form(description="speech: answer aloud too")] = False,
    wait: Wait = 0,
) -> Accepted:
    """Queue a query whose image or audio comes as a multipart file upload."""
    data = await file.read(UPLOAD_LIMIT + 1)
    if len(data) > UPLOAD_LIMIT:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            {"code": "too_large", "message": f"the file is over {UPLOAD_LIMIT} bytes"},
        )
    media = "audio" if query_type in ("stt", "speech") else "image"
    try:
        spec = QuerySpec.model_validate(
            {
                "prompt": prompt,
                "query_type": query_type,
                "model_name": model_name,
                media: base64.b64encode(data).decode(),
                "options": {"speak": True} if speak else {},
            }
        )
    except ValidationError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, {"code": "invalid", "message": describe(exc)}
        ) from None
    return await _submit(spec, principal, broker, wait)


async def _submit(spec: QuerySpec, principal: Principal, broker: Broker, wait: float) -> Accepted:
    query, position = await broker.queries.submit(principal, spec)
    if wait:
        # The scheduler's own object, as it ends: no store read, which an outage could fail
        # after the job was accepted (the client would think it was not).
        query = await broker.queries.outcome(query.id, wait)
    return Accepted(query_id=query.id, position=position, query=query_view(query))


@router.get("/queries", tags=["queries"])
async def list_queries(
    principal: PrincipalDep, broker: BrokerDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[events.QueryView]:
    return [query_view(q) for q in await broker.queries.history(principal.user.id, limit)]


# Declared before `/queries/{query_id}`, which would take the word `running` for an id.
@router.get("/queries/running", tags=["stats"])
async def running_queries(_: SysopDep, broker: BrokerDep) -> list[events.RunningQueryView]:
    """Every unfinished query of the users (queued, dispatched, running), oldest first, at
    most 200, each prompt cut to 200 characters."""
    return (await broker.dashboard.running_queries()).data


class Cleared(BaseModel):
    cleared: int


@router.delete("/queue", tags=["queries"])
async def clear_queue(
    principal: SysopDep,
    broker: BrokerDep,
    realm: Annotated[Alias | None, Query(description="Only this realm's line.")] = None,
    user_id: Annotated[Guid | None, Query(description="Only this user's queries.")] = None,
) -> Cleared:
    """Cancel the queries still waiting for a worker: of a realm, of a user, of both, or
    (with neither) all of them; running ones go on (as `clear_queue` on the bus)."""
    cleared = await broker.queue_admin.clear(principal.user, realm=realm, user_id=user_id)
    return Cleared(cleared=cleared)


@router.get("/queries/{query_id}", tags=["queries"])
async def get_query(query: OwnQueryDep, broker: BrokerDep, wait: Wait = 0) -> events.QueryView:
    if wait:
        query = await broker.queries.outcome(query.id, wait)
    return query_view(query)


def server_sent(event: events.Outbound) -> str:
    """One bus event as a server-sent event named by its type, its data the bus's JSON."""
    kind = event.model_dump(include={"type"})["type"]
    return f"event: {kind}\ndata: {encode(event)}\n\n"


@router.get(
    "/queries/{query_id}/events",
    tags=["queries"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def query_events(query: OwnQueryDep, broker: BrokerDep) -> Response:
    """The query's events as server-sent events (`event: query_chunk` … then its final
    event), as the bus sends them: a REST client streams the answer token by token."""
    query_id = query.id

    async def stream() -> AsyncIterator[str]:
        async for event in broker.queries.stream(query_id, idle=KEEP_ALIVE):
            yield KEEP_ALIVE_COMMENT if event is None else server_sent(event)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get(
    "/queries/{query_id}/output",
    tags=["queries"],
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}, "image/png": {}, "image/jpeg": {}}}},
)
async def get_query_output(query: OwnQueryDep, broker: BrokerDep) -> Response:
    """The audio or image a query made (a spoken answer, a generated picture), as a file."""
    if has_output(query):
        query = await broker.queries.get(query.id, with_media=True) or query
    if not has_output(query) or not query.output:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, {"code": "not_found", "message": "this query made no file"}
        )
    data = base64.b64decode(query.output)
    return Response(data, media_type=media_type(data))


def media_type(data: bytes) -> str:
    """By the file's own signature, never by anything a worker said."""
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return "audio/wav"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return "application/octet-stream"


@router.delete("/queries/{query_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["queries"])
async def cancel_query(query: OwnQueryDep, principal: PrincipalDep, broker: BrokerDep) -> None:
    by_sysop = query.user_id != principal.user.id
    if not await broker.queries.cancel(query.id, reason="cancelled", by_sysop=by_sysop):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {"code": "conflict", "message": f"the query is already {query.state}"},
        )
