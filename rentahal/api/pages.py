"""The page at `/` and its static files. Loading the page is what gives a browser its guest
cookie (HttpOnly, so the page's script never sees it); nothing is stored until the guest
acts (`Authenticator.save`), so page loads alone leave no rows."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rentahal.api.deps import BrokerDep, SysopDep
from rentahal.api.security import session_cookie_header

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index(request: Request, broker: BrokerDep) -> Response:
    response = FileResponse(STATIC_DIR / "index.html", media_type="text/html")
    response.headers["cache-control"] = "no-store"
    if await broker.auth.from_headers(request.headers, request.cookies, lazy=True) is None:
        guest = broker.auth.new_guest()
        response.headers.append(
            "set-cookie", session_cookie_header(guest.cookie, broker.settings, request.url.scheme)
        )
    return response


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"])
async def readyz(broker: BrokerDep) -> Response:
    """The broker has started (migrations ran, the scheduler is running) and its store (and,
    in a cluster, its Redis) answers now; each part's state is in the body."""
    store = await broker.store.health.check()
    ready = broker.ready and store
    body = {"ready": ready, "store": "ok" if store else "unavailable"}
    if broker.node is not None:  # one of a cluster's brokers: its Redis too
        cluster = await broker.node.ready()
        ready = ready and cluster
        body |= {"ready": ready, "cluster": "ok" if cluster else "unavailable"}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
async def metrics(_: SysopDep, broker: BrokerDep) -> Response:
    """Prometheus metrics (sysop API key as a Bearer token: scrape configs support it)."""
    broker.refresh_worker_metrics()
    broker.metrics.connected_users.set(broker.hub.connected_count)
    return Response(generate_latest(broker.metrics.registry), media_type=CONTENT_TYPE_LATEST)
