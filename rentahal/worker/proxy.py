"""Proxy mode: a worker node in front of a server that already speaks a backend protocol
(a local Ollama, an OpenAI-compatible server such as vLLM or llama.cpp's, another RENT A HAL
worker), adding what that server lacks: joining a realm, heartbeats, load reporting, the
broker's key, and outbound mode for a machine behind NAT.

Requests pass through unchanged, streamed both ways, so the broker talks to the upstream's
own protocol through the proxy. The upstream's models are read with the broker's own
adapter for that protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rentahal.backends import BACKENDS, Endpoint
from rentahal.core.addresses import base_url
from rentahal.worker.app import health_response, refused
from rentahal.worker.service import Served

log = structlog.get_logger(__name__)

UPSTREAM_WAIT = 60.0  # seconds the proxy waits at start for its upstream to answer
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host"}
# Headers that are the broker's business with the proxy, not the upstream's.
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "content-length"}
OWN_HEALTH = "/_worker/health"


class ProxyService(Served):
    """Stands where an engine's service would: the upstream's models, the load through it."""

    role = "proxy"

    def __init__(self, upstream: str, kind: str, query_type: str, slots: int) -> None:
        super().__init__(slots)
        self.upstream = upstream.rstrip("/")
        self.kind = kind
        self.engine_name = f"proxy:{kind}"
        self.query_type = query_type
        self._models: list[str] = []
        self.http = httpx.AsyncClient(base_url=self.upstream, timeout=httpx.Timeout(600, connect=5))

    async def load(self) -> None:
        """Wait for the upstream to answer its protocol's health check; learn its models."""
        backend = BACKENDS[self.kind]
        upstream = Endpoint(name="upstream", kind=self.kind, url=base_url(self.upstream))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UPSTREAM_WAIT
        while True:
            try:
                report = await backend.probe(self.http, upstream, 5.0)
                if report.status == 200:
                    self._models = list(report.models or ())
                    log.info("proxy.upstream_ready", upstream=self.upstream, models=self._models)
                    self._done_loading(None)
                    return
                problem = f"HTTP {report.status}"
            except httpx.HTTPError as exc:
                problem = str(exc) or type(exc).__name__
            if loop.time() > deadline:
                log.error("proxy.upstream_unreachable", upstream=self.upstream, error=problem)
                self._done_loading(problem)
                return
            await asyncio.sleep(1.0)

    @property
    def models(self) -> list[str]:
        return self._models

    def health(self) -> dict[str, Any]:
        return super().health() | {"upstream": self.upstream}


def create_proxy_app(service: ProxyService, *, api_key: str | None = None) -> Starlette:
    """Everything but `/_worker/health` goes to the upstream, with the broker's key checked."""

    async def own_health(_: Request) -> Response:
        return health_response(service)

    async def forward(request: Request) -> Response:
        if (refusal := refused(request, api_key)) is not None:
            return refusal
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        outgoing = service.http.build_request(
            request.method,
            request.url.path,
            params=request.query_params,
            headers=headers,
            content=await request.body(),
        )
        service.in_flight += 1
        try:
            upstream = await service.http.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            service.in_flight -= 1
            return JSONResponse(
                {"error": {"code": "upstream_unreachable", "message": str(exc)}}, status_code=502
            )

        async def body() -> AsyncIterator[bytes]:
            # Streamed as it comes (token by token for NDJSON and SSE); the request counts as
            # in flight until the last byte, or until the broker hangs up.
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                service.in_flight -= 1
                service.served += 1

        return StreamingResponse(
            body(),
            status_code=upstream.status_code,
            headers={k: v for k, v in upstream.headers.items() if k.lower() not in NOT_FORWARDED},
        )

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            Route(OWN_HEALTH, own_health, methods=["GET"]),
            Route("/{path:path}", forward, methods=methods),
        ]
    )
