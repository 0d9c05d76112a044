"""The ASGI application: FastAPI with the bus, REST, the page, and the broker's lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from rentahal import __version__
from rentahal.api import (
    accounting,
    accounts,
    errors,
    oauth,
    outage,
    pages,
    rest,
    workers,
)
from rentahal.api.openai import router as openai_router
from rentahal.api.openai.errors import install_error_handlers as install_openai_errors
from rentahal.api.security import SecurityHeadersMiddleware
from rentahal.api.ws import websocket_endpoint
from rentahal.broker import Broker
from rentahal.config import Settings
from rentahal.request_ids import RequestIdMiddleware


def freeze_the_startup_heap() -> None:
    """Once started: leave what the process has made so far (modules, classes, the broker's
    own objects, which live as long as it does) out of every later garbage collection.

    Python's collector walks every tracked object of the generations it collects, and the
    oldest holds the whole of the imported frameworks: in a `bench overhead` run, collections
    took 12 % of the broker's CPU (`docs/benchmarks.md`). The garbage made so far is collected
    first, so none of it is kept for ever. (Collecting young objects less often as well saved
    a little more CPU, but kept tens of MiB more garbage alive under load.)"""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings) -> FastAPI:
    broker = Broker(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        freeze_the_startup_heap()
        try:
            yield
        finally:
            await broker.stop()

    # FastAPIOffline serves the /docs assets itself: no CDN, as for every page here. ReDoc is
    # off: its bundle names outside URLs, and /docs already shows the same OpenAPI document.
    app = FastAPIOffline(
        redoc_url=None,
        title="RENT A HAL",
        version=__version__,
        description="Self-hosted multi-user AI orchestration broker.",
        lifespan=lifespan,
    )
    app.state.broker = broker
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every layer logs under the id
    errors.install(app)  # a refusal raised anywhere answers with its status and code
    outage.install(app, broker.store.health.failed)
    # /v1 first: routes are matched in order, and it takes the busiest traffic.
    app.include_router(openai_router)  # /v1: the OpenAI-compatible API
    install_openai_errors(app)
    app.include_router(pages.router)
    app.include_router(rest.router)
    app.include_router(accounts.router)  # register, password login, users and roles
    app.include_router(accounting.router)  # credit, the ledger, exports
    app.include_router(workers.router)
    app.include_router(oauth.router)  # /api/v1/gmail: connecting Gmail (OAuth 2.0, PKCE)
    app.add_api_websocket_route("/ws", websocket_endpoint)
    app.add_api_websocket_route("/ws/worker", workers.worker_socket)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return app
