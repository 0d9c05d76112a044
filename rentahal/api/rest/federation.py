"""Federation between installations (SPEC §12), under `/api/v1/federation/`.

A sysop manages this installation's peers (`/peers`). A peer calls `/advertise` (what we
serve) and `/route` (run a query it forwards) with the peer key our sysop issued for it
(`POST /api/v1/keys {"scopes": ["federation"]}`): without a key the answer is 401, with any
other key 403. A forwarded query runs as the key's own account, in our queue with its
fairness and limits, and is accounted to that account like any other, so our ledger holds
what the peer owes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, status
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, StringConstraints, ValidationError

from rentahal.api.deps import BrokerDep, PrincipalDep, SysopDep
from rentahal.auth import Principal
from rentahal.broker import Broker
from rentahal.core.specs import QuerySpec
from rentahal.core.vocabulary import UNFINISHED_STATES
from rentahal.federation.wire import Advertisement, RouteOutcome, RouteRequest
from rentahal.store import Query

router = APIRouter(prefix="/federation", tags=["federation"])

PeerName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


async def require_peer_key(principal: PrincipalDep) -> Principal:
    """Only a peer key reaches the peer-facing routes."""
    if "federation" not in principal.scopes:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            {"code": "forbidden", "message": "a peer key from this installation is required"},
        )
    return principal


PeerDep = Annotated[Principal, Depends(require_peer_key)]


class NewPeer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PeerName
    url: AnyHttpUrl
    key: Annotated[str, StringConstraints(min_length=16, max_length=256)]


class PeerView(BaseModel):
    name: str
    url: str
    account_id: str  # its account here (`/api/v1/users/{id}/credits`: what we owe it)
    reachable: bool
    federation_id: str | None
    query_types: list[str]
    models: list[str]
    checked_at: datetime | None


# --- what our sysop does -----------------------------------------------------------------


@router.get("/peers")
async def list_peers(_: SysopDep, broker: BrokerDep) -> list[PeerView]:
    """The peers, whether each answered its last check, and what it serves."""
    return [PeerView.model_validate(v, from_attributes=True) for v in broker.peers.views()]


@router.post("/peers", status_code=status.HTTP_201_CREATED)
async def add_peer(peer: NewPeer, principal: SysopDep, broker: BrokerDep) -> PeerView:
    """Add a peer with the key it issued for us; it is asked at once what it serves."""
    view = await broker.peers.add(peer.name, str(peer.url), peer.key)
    await broker.audit.record(principal.user, "add_peer", peer.name, url=str(peer.url))
    broker.peers_changed()
    return PeerView.model_validate(view, from_attributes=True)


@router.delete("/peers/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_peer(
    name: Annotated[PeerName, Path()], principal: SysopDep, broker: BrokerDep
) -> None:
    await broker.peers.remove(name)
    await broker.audit.record(principal.user, "remove_peer", name)
    broker.peers_changed()


# --- what a peer calls ------------------------------------------------------------------


@router.get("/advertise")
async def advertise(_: PeerDep, broker: BrokerDep) -> Advertisement:
    """What this installation's live workers serve (not what its own peers do: a query is
    forwarded where it can run, not passed along on the chance)."""
    alive = [w for w in broker.registry if w.alive]
    return Advertisement(
        federation_id=broker.settings.federation_id,
        query_types=sorted({t for w in alive for t in w.capabilities}),
        models=sorted({m for w in alive for m in w.models}),
    )


@router.post("/route")
async def route(
    request: RouteRequest,
    peer: PeerDep,
    broker: BrokerDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=160)
    ] = None,
) -> RouteOutcome:
    """Run a forwarded query as the peer's account and answer with how it ended. Refused:
    a query that has been here before or has come too far (508), one whose deadline has
    passed (504); one nobody here (nor a further peer it has not been through) can serve is
    503 `no_worker`, at once.

    A query sent again with the same `Idempotency-Key` (the peer's broker died while it
    waited, and another of its brokers took the job over) is not run again: the answer is
    the first one's outcome."""
    settings = broker.settings
    if settings.federation_id in request.hops:
        raise _refused(508, "loop_detected", "this query has been through this installation")
    if len(request.hops) > settings.federation_max_hops:
        raise _refused(508, "loop_detected", f"over {settings.federation_max_hops} hops")
    within = request.deadline - time.time()
    if within <= 0:
        raise _refused(504, "expired", "the query's deadline has passed")
    try:
        spec = QuerySpec(
            prompt=request.prompt,
            query_type=request.type,
            model_type=request.model_type,
            model_name=request.model_name,
            image=request.image,
            audio=request.audio,
            options=request.options,
        )
    except ValidationError as exc:
        raise _refused(422, "invalid", str(exc.errors()[0]["msg"])) from None
    query = await _forwarded(broker, peer, spec, request.hops, idempotency_key)
    ended = await broker.queries.outcome(query.id, within)
    if ended.state in UNFINISHED_STATES:
        await broker.queries.cancel(query.id, reason="the forwarding installation gave up")
        raise _refused(504, "expired", "the query did not finish by its deadline")
    media = ended.result_type in ("audio", "image")
    return RouteOutcome(
        query_id=ended.id,
        state=ended.state,
        result=(ended.output if media else ended.result),
        result_type=ended.result_type,
        worker=ended.worker_name,
        processing_time=ended.processing_time,
        cost=ended.cost,
        error_code=ended.error_code,
        error=ended.error,
    )


async def _forwarded(
    broker: Broker, peer: Principal, spec: QuerySpec, hops: list[str], key: str | None
) -> Query:
    """The query a forwarded request stands for: the one it was sent as before (by its
    idempotency key), or a new one, submitted as the peer's account."""
    queries = broker.store.queries
    if key is not None and (first := await queries.with_idempotency_key(peer.user.id, key)):
        return first
    # The account may make any query a user may (its key's scope is for the routes).
    as_account = replace(peer, scopes=frozenset({"*"}))
    query, _ = await broker.queries.submit(as_account, spec, hops=hops)
    if key is None or await queries.set_idempotency_key(query, key):
        return query
    # The same request, twice at once: the first to be named runs, this one does not.
    await broker.queries.cancel(query.id, reason="a repeat of a forwarded query")
    first = await queries.with_idempotency_key(peer.user.id, key)
    assert first is not None
    return first


def _refused(status_code: int, code: str, message: str) -> HTTPException:
    return HTTPException(status_code, {"code": code, "message": message})
