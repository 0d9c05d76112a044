"""Another RENT A HAL installation as a worker: a query this one cannot serve is forwarded to
its `POST /api/v1/federation/route`, with the peer key it issued (`rentahal.federation`).

The peer runs the query in its own queue as our account there and answers when it has ended,
so the answer comes in one piece, with the name of the peer's worker that served it (the
query shows `<peer>/<its worker>`). Health is `GET /api/v1/federation/advertise`. A peer that
has no worker either answers 503 `no_worker`, and so does one that finds itself in the
query's hop list: the query is never passed round in a loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import ClassVar

import httpx

from rentahal.backends.base import (
    Backend,
    BackendError,
    BackendRequest,
    Endpoint,
    HealthReport,
    ServedBy,
)
from rentahal.core.vocabulary import QueryType
from rentahal.federation.wire import Advertisement, RouteOutcome

RESULT_TYPES = {"imagine": "image", "tts": "audio"}
ROUTE_TIMEOUT = 300.0  # the longest a peer is waited for; the query's own timeout is shorter


class FederationBackend(Backend):
    kind: ClassVar[str] = "federation"
    query_types: ClassVar[frozenset[str]] = frozenset(t.value for t in QueryType)
    streams: ClassVar[bool] = False

    def result_type(self, query_type: str) -> str:
        return RESULT_TYPES.get(query_type, "text")

    async def probe(
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> HealthReport:
        response = await client.get(
            f"{endpoint.url}/api/v1/federation/advertise",
            headers=self.auth_headers(endpoint),
            timeout=seconds,
        )
        if response.status_code != 200:
            return HealthReport(status=response.status_code)
        try:
            advertised = Advertisement.model_validate_json(response.content)
        except ValueError:
            return HealthReport(status=502)
        return HealthReport(status=200, models=tuple(advertised.models))

    async def generate(
        self, client: httpx.AsyncClient, endpoint: Endpoint, request: BackendRequest
    ) -> AsyncIterator[str | ServedBy]:
        timeout = client.timeout.read or ROUTE_TIMEOUT
        body = {
            "type": request.query_type,
            "prompt": request.prompt,
            "model_name": request.model_name,
            "model_type": request.model_type,
            "options": request.options,
            "image": request.image,
            "audio": request.audio,
            "hops": list(request.hops),
            "deadline": time.time() + timeout,
        }
        response = await client.post(
            f"{endpoint.url}/api/v1/federation/route",
            json=body,
            headers=self.auth_headers(endpoint) | {"Idempotency-Key": request.job_id},
            timeout=timeout + 5.0,
        )
        self.raise_for_status(response, response.content)
        try:
            outcome = RouteOutcome.model_validate_json(response.content)
        except ValueError:
            raise BackendError(
                "the peer's answer is not a federation outcome", status=502
            ) from None
        if outcome.result is None:
            raise BackendError(
                f"the peer's query ended {outcome.state}: {outcome.error or outcome.error_code}",
                status=502,
            )
        yield outcome.result
        if outcome.worker:
            yield ServedBy(outcome.worker)
