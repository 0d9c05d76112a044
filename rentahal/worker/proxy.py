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
import hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rentahal import __version__
from rentahal.backends import BACKENDS
from rentahal.routing.registry import WorkerState
from rentahal.worker.service import Readiness

log = structlog.get_logger(__name__)

UPSTREAM_WAIT = 60.0  # seconds the proxy waits at start for its upstream to answer
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host"}
# Headers that are the broker's business with the proxy, not the upstream's.
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "content-length"}
OWN_HEALTH = "/_worker/health"


class ProxyService:
    """Stands where an engine's service would: the upstream's models, the load through it."""

    role = "proxy"

    def __init__(self, upstream: str, kind: str, query_type: str, slots: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.kind = kind
        self.query_type = query_type
        self.slots = slots
        self.readiness = Readiness.LOADING
        self.load_error: str | None = None
        self.in_flight = 0
        self.served = 0
        self._models: list[str] = []
        self._loaded = asyncio.Event()
        self.http = httpx.AsyncClient(base_url=self.upstream, timeout=httpx.Timeout(600, connect=5))

    async def load(self) -> None:
        """Wait for the upstream to answer its protocol's health check; learn its models."""
        backend = BACKENDS[self.kind]
        upstream = WorkerState(
            name="upstream",
            address=self.upstream,
            kind=self.kind,
            capabilities=frozenset({self.query_type}),
            models=(),
            max_concurrency=self.slots,
            health_score=100.0,
            blacklisted=False,
            last_active=None,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UPSTREAM_WAIT
        while True:
            try:
                report = await backend.probe(self.http, upstream, 5.0)
                if report.status == 200:
                    self._models = list(report.models or ())
                    self.readiness = Readiness.READY
                    log.info("proxy.upstream_ready", upstream=self.upstream, models=self._models)
                    break
                problem = f"HTTP {report.status}"
            except httpx.HTTPError as exc:
                problem = str(exc) or type(exc).__name__
            if loop.time() > deadline:
                self.readiness, self.load_error = Readiness.FAILED, problem
                log.error("proxy.upstream_unreachable", upstream=self.upstream, error=problem)
                break
            await asyncio.sleep(1.0)
        self._loaded.set()

    async def wait_loaded(self) -> bool:
        await self._loaded.wait()
        return self.readiness is Readiness.READY

    @property
    def models(self) -> list[str]:
        return self._models

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "status": self.readiness.value,
            "role": self.role,
            "engine": f"proxy:{self.kind}",
            "upstream": self.upstream,
            "models": self._models,
            "load": {"in_flight": self.in_flight, "slots": self.slots, "served": self.served},
            "version": __version__,
        }
        if self.load_error:
            report["error"] = self.load_error
        return report


def create_proxy_app(service: ProxyService, *, api_key: str | None = None) -> Starlette:
    """Everything but `/_worker/health` goes to the upstream, with the broker's key checked."""

    async def own_health(_: Request) -> Response:
        status = 200 if service.readiness is Readiness.READY else 503
        return JSONResponse(service.health(), status_code=status)

    async def forward(request: Request) -> Response:
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse(
                    {
                        "error": {
                            "code": "unauthorized",
                            "message": "this worker needs its broker's key",
                        }
                    },
                    status_code=401,
                )
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
