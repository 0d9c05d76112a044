"""REST under `/api/v1`: queries (submit, await, cancel, history) and sysop worker admin."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from rentahal.api.deps import BrokerDep, PrincipalDep, SysopDep, TargetUserDep
from rentahal.api.errors import REFUSED
from rentahal.api.security import session_cookie_header
from rentahal.auth import Principal
from rentahal.auth.identity import SESSION_COOKIE, Scope
from rentahal.broker import Broker
from rentahal.bus import events
from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.bus.messages import (
    PoolSpec,
    QuerySpec,
    QueryType,
    RealmPatch,
    RealmSpec,
    WorkerSpec,
)
from rentahal.bus.views import final_event, has_output, query_view, user_view, worker_view
from rentahal.store.queries import UNFINISHED_STATES
from rentahal.sysop import TIMELINE_BUCKET, TIMELINE_WINDOW

router = APIRouter(prefix="/api/v1", responses=REFUSED)

HTTP_STATUS = {
    ErrorCode.INVALID: status.HTTP_422_UNPROCESSABLE_CONTENT,
    ErrorCode.NOT_FOUND: status.HTTP_404_NOT_FOUND,
    ErrorCode.CONFLICT: status.HTTP_409_CONFLICT,
    ErrorCode.FORBIDDEN: status.HTTP_403_FORBIDDEN,
    ErrorCode.BANNED: status.HTTP_403_FORBIDDEN,
    ErrorCode.NO_WORKER: status.HTTP_503_SERVICE_UNAVAILABLE,
    ErrorCode.QUEUE_FULL: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.USER_LIMIT: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.RATE_LIMITED: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.QUOTA_EXCEEDED: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.INSUFFICIENT_CREDIT: status.HTTP_402_PAYMENT_REQUIRED,
    ErrorCode.UNSUPPORTED: status.HTTP_422_UNPROCESSABLE_CONTENT,
}

MAX_WAIT = 300.0
Wait = Annotated[
    float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the query to finish.")
]


def http_error(exc: ProtocolError) -> HTTPException:
    detail: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.retry_after is not None:
        detail["retry_after"] = exc.retry_after
    return HTTPException(
        HTTP_STATUS.get(exc.code, status.HTTP_400_BAD_REQUEST),
        detail=detail,
        headers=exc.http_headers(),
    )


class AuditView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    actor_id: str | None
    action: str
    target: str
    detail: dict[str, Any]


class Accepted(BaseModel):
    query_id: str
    position: int
    query: events.QueryView


@router.get("/me", tags=["users"])
async def me(principal: PrincipalDep) -> events.UserView:
    return user_view(principal.user)


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
    query_type: Annotated[QueryType, Form()] = "vision",
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
            status.HTTP_422_UNPROCESSABLE_CONTENT, {"code": "invalid", "message": str(exc)}
        ) from None
    return await _submit(spec, principal, broker, wait)


async def _submit(spec: QuerySpec, principal: Principal, broker: Broker, wait: float) -> Accepted:
    try:
        query, position = await broker.admission.submit(principal, spec)
    except ProtocolError as exc:
        raise http_error(exc) from None
    if wait:
        await broker.scheduler.wait_finished(query.id, wait)
        query = await broker.store.queries.get(query.id) or query
    return Accepted(query_id=query.id, position=position, query=query_view(query))


@router.get("/queries", tags=["queries"])
async def list_queries(
    principal: PrincipalDep, broker: BrokerDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[events.QueryView]:
    return [query_view(q) for q in await broker.store.queries.history(principal.user.id, limit)]


# Declared before `/queries/{query_id}`, which would take the word `running` for an id.
@router.get("/queries/running", tags=["stats"])
async def running_queries(_: SysopDep, broker: BrokerDep) -> list[events.RunningQueryView]:
    """Every unfinished query of the users (queued, dispatched, running), oldest first, at
    most 200, each prompt cut to 200 characters."""
    return (await broker.sysop.running_queries()).data


@router.get("/queries/{query_id}", tags=["queries"])
async def get_query(
    query_id: str, principal: PrincipalDep, broker: BrokerDep, wait: Wait = 0
) -> events.QueryView:
    query = await broker.store.queries.get(query_id)
    if query is None or (query.user_id != principal.user.id and not principal.is_sysop):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, {"code": "not_found", "message": "no such query"}
        )
    if wait:
        await broker.scheduler.wait_finished(query.id, wait)
        query = await broker.store.queries.get(query_id) or query
    return query_view(query)


KEEP_ALIVE = 15.0  # seconds between SSE comments on a quiet stream
FINAL_EVENTS = {"query_result", "speech_result", "error"}


def server_sent(text: str) -> str:
    """One bus event (JSON text) as a server-sent event named by its type."""
    return f"event: {json.loads(text)['type']}\ndata: {text}\n\n"


def is_final(message: dict[str, Any]) -> bool:
    if message.get("type") == "transcription_result":
        return bool(message.get("final", True))
    return message.get("type") in FINAL_EVENTS


@router.get(
    "/queries/{query_id}/events",
    tags=["queries"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def query_events(query_id: str, principal: PrincipalDep, broker: BrokerDep) -> Response:
    """The query's events as server-sent events (`event: query_chunk` … then its final
    event), as the bus sends them: a REST client streams the answer token by token."""
    query = await broker.store.queries.get(query_id)
    if query is None or (query.user_id != principal.user.id and not principal.is_sysop):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, {"code": "not_found", "message": "no such query"}
        )

    async def stream() -> AsyncIterator[str]:
        # Watch first, then look: a final event in between is in the queue, not lost.
        with broker.hub.watch(query_id) as events:
            current = await broker.store.queries.get(query_id, with_media=True)
            if current is not None and current.state not in UNFINISHED_STATES:
                event = final_event(current, broker.scheduler.vocabulary)
                yield server_sent(event.wire_json())
                return
            while True:
                try:
                    text = await asyncio.wait_for(events.get(), KEEP_ALIVE)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield server_sent(text)
                if is_final(json.loads(text)):
                    return

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get(
    "/queries/{query_id}/output",
    tags=["queries"],
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}, "image/png": {}, "image/jpeg": {}}}},
)
async def get_query_output(query_id: str, principal: PrincipalDep, broker: BrokerDep) -> Response:
    """The audio or image a query made (a spoken answer, a generated picture), as a file."""
    query = await broker.store.queries.get(query_id, with_media=True)
    if query is None or (query.user_id != principal.user.id and not principal.is_sysop):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, {"code": "not_found", "message": "no such query"}
        )
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
async def cancel_query(query_id: str, principal: PrincipalDep, broker: BrokerDep) -> None:
    query = await broker.store.queries.get(query_id)
    if query is None or (query.user_id != principal.user.id and not principal.is_sysop):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, {"code": "not_found", "message": "no such query"}
        )
    by_sysop = query.user_id != principal.user.id
    if not await broker.scheduler.cancel(query.id, reason="cancelled", by_sysop=by_sysop):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {"code": "conflict", "message": f"the query is already {query.state}"},
        )


@router.get("/workers", tags=["workers"])
async def list_workers(_: SysopDep, broker: BrokerDep) -> list[events.WorkerView]:
    return broker.worker_views()


@router.post("/workers", status_code=status.HTTP_201_CREATED, tags=["workers"])
async def add_worker(spec: WorkerSpec, principal: SysopDep, broker: BrokerDep) -> events.WorkerView:
    try:
        worker = await broker.sysop_for(principal.user).add_worker(spec, owner_id=principal.user.id)
    except ProtocolError as exc:
        raise http_error(exc) from None
    return worker_view(worker, broker.router.home_realm(worker))


@router.delete("/workers/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["workers"])
async def remove_worker(name: str, principal: SysopDep, broker: BrokerDep) -> None:
    try:
        await broker.sysop_for(principal.user).remove_worker(name)
    except ProtocolError as exc:
        raise http_error(exc) from None


@router.get("/pools", tags=["routing"])
async def list_pools(_: PrincipalDep, broker: BrokerDep) -> events.PoolUpdate:
    """Pools and realms: the `$NAME` targets a query may name."""
    return broker.pools_event()


@router.post("/pools", status_code=status.HTTP_201_CREATED, tags=["routing"])
async def add_pool(spec: PoolSpec, principal: SysopDep, broker: BrokerDep) -> events.PoolUpdate:
    await _sysop_call(broker.sysop_for(principal.user).save_pool(spec, create=True))
    return broker.pools_event()


@router.put("/pools/{name}", tags=["routing"])
async def replace_pool(
    name: str, spec: PoolSpec, principal: SysopDep, broker: BrokerDep
) -> events.PoolUpdate:
    if spec.name != name:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {"code": "invalid", "message": "the body's name differs from the URL's"},
        )
    await _sysop_call(broker.sysop_for(principal.user).save_pool(spec, create=False))
    return broker.pools_event()


@router.delete("/pools/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["routing"])
async def remove_pool(name: str, principal: SysopDep, broker: BrokerDep) -> None:
    await _sysop_call(broker.sysop_for(principal.user).remove_pool(name))


@router.get("/realms", tags=["routing"])
async def list_realms(_: SysopDep, broker: BrokerDep) -> list[events.RealmView]:
    return broker.realm_views()


@router.post("/realms", status_code=status.HTTP_201_CREATED, tags=["routing"])
async def add_realm(
    spec: RealmSpec, principal: SysopDep, broker: BrokerDep
) -> list[events.RealmView]:
    await _sysop_call(broker.sysop_for(principal.user).add_realm(spec))
    return broker.realm_views()


@router.patch("/realms/{name}", tags=["routing"])
async def update_realm(
    name: str, patch: RealmPatch, principal: SysopDep, broker: BrokerDep
) -> list[events.RealmView]:
    await _sysop_call(broker.sysop_for(principal.user).update_realm(name, patch))
    return broker.realm_views()


@router.delete("/realms/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["routing"])
async def remove_realm(name: str, principal: SysopDep, broker: BrokerDep) -> None:
    await _sysop_call(broker.sysop_for(principal.user).remove_realm(name))


async def _sysop_call(call: Awaitable[None]) -> None:
    try:
        await call
    except ProtocolError as exc:
        raise http_error(exc) from None


def _every_scope() -> list[Scope]:
    return ["*"]


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] = (
        "default"
    )
    scopes: list[Scope] = Field(default_factory=_every_scope, min_length=1, max_length=7)


class KeyView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKey(KeyView):
    key: str  # shown once; only its hash is kept


@router.post("/keys", status_code=status.HTTP_201_CREATED, tags=["users"])
async def create_key(request: KeyRequest, principal: PrincipalDep, broker: BrokerDep) -> NewKey:
    """A new API key for yourself, scoped; a key cannot grant more than the key that asks.

    A sysop may make a worker token (scopes `["worker"]`): it lets a machine join the realm
    as a worker (`rentahal worker --broker … --token …`) and does nothing else."""
    if "worker" in request.scopes:
        if set(request.scopes) != {"worker"}:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                {"code": "invalid", "message": "a worker token has the worker scope alone"},
            )
        if not principal.is_sysop:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                {"code": "forbidden", "message": "only a sysop issues worker tokens"},
            )
    elif not all(principal.allows(scope) for scope in request.scopes):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            {"code": "forbidden", "message": "a key cannot grant scopes it does not have"},
        )
    row, key = await broker.store.credentials.issue_api_key(
        principal.user.id, name=request.name, scopes=sorted(set(request.scopes))
    )
    return NewKey(**KeyView.model_validate(row).model_dump(), key=key)


@router.get("/keys", tags=["users"])
async def list_keys(principal: PrincipalDep, broker: BrokerDep) -> list[KeyView]:
    keys = await broker.store.credentials.list_api_keys(principal.user.id)
    return [KeyView.model_validate(k) for k in keys]


@router.get("/users/{user_id}/keys", tags=["users"])
async def list_user_keys(_: SysopDep, user: TargetUserDep, broker: BrokerDep) -> list[KeyView]:
    """A user's API keys (sysop), to find one to revoke."""
    keys = await broker.store.credentials.list_api_keys(user.id)
    return [KeyView.model_validate(k) for k in keys]


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def revoke_key(key_id: str, principal: PrincipalDep, broker: BrokerDep) -> None:
    """Revoke one of your keys (a sysop: anyone's). It stops working at once."""
    owner = None if principal.is_sysop else principal.user.id
    if not await broker.store.credentials.revoke_api_key(key_id, owner_id=owner):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, {"code": "not_found", "message": "no such live key"}
        )
    if owner is None:
        await broker.store.audit.record(principal.user, "revoke_api_key", key_id)


@router.get("/audit", tags=["stats"])
async def audit_log(
    _: SysopDep, broker: BrokerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[AuditView]:
    """Sysop actions, newest first: who did what to what, when."""
    return [AuditView.model_validate(e) for e in await broker.store.audit.list(limit)]


@router.get("/stats", tags=["stats"])
async def system_stats(_: SysopDep, broker: BrokerDep) -> events.StatsView:
    return (await broker.sysop.system_stats()).data


TimelineWindow = Annotated[int, Query(ge=60, le=86400, description="Seconds back from now.")]
TimelineBucket = Annotated[int, Query(ge=10, le=3600, description="Seconds per bucket.")]


@router.get("/stats/timeline", tags=["stats"])
async def stats_timeline(
    _: SysopDep,
    broker: BrokerDep,
    window: TimelineWindow = TIMELINE_WINDOW,
    bucket: TimelineBucket = TIMELINE_BUCKET,
) -> events.TimelineView:
    """Queries that ended, counted per bucket by type and by worker, with the mean
    processing time of those done; at most 500 buckets."""
    try:
        return (await broker.sysop.stats_timeline(window, bucket)).data
    except ProtocolError as exc:
        raise http_error(exc) from None


@router.post("/session", tags=["users"])
async def open_session(principal: PrincipalDep, broker: BrokerDep, request: Request) -> Response:
    """Trade an API key (`Authorization: Bearer …`) for a browser session cookie. Only an
    unscoped key (`*`): a session may do all its user may, so a narrower key (or a worker
    token) would otherwise be a way to more than it was given."""
    if principal.via != "api_key":
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            {"code": "invalid", "message": "send the API key as Authorization: Bearer"},
        )
    if "*" not in principal.scopes:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            {"code": "forbidden", "message": "only an unscoped API key opens a session"},
        )
    cookie = await broker.auth.new_session(principal.user)
    response = JSONResponse(user_view(principal.user).model_dump(mode="json"))
    response.headers.append(
        "set-cookie", session_cookie_header(cookie, broker.settings, request.url.scheme)
    )
    return response


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def close_session(request: Request, broker: BrokerDep, _: PrincipalDep) -> Response:
    """Log out: the session is deleted on the server, the cookie cleared in the browser."""
    await broker.auth.end_session(request.cookies)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
