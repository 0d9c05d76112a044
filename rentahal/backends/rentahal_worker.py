"""The seed's worker protocol: `GET /health`, `POST /predict {prompt, type, …} → {response}`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from rentahal.backends.base import Backend, BackendError, BackendRequest, HealthReport
from rentahal.routing.registry import WorkerState


def _reported_slots(response: httpx.Response) -> int | None:
    """`{"load": {"slots": N}}` from a RENT A HAL worker's /health, if it is there and sane."""
    try:
        slots = response.json()["load"]["slots"]
    except (ValueError, KeyError, TypeError):
        return None
    return slots if isinstance(slots, int) and 1 <= slots <= 1024 else None


class RentahalBackend(Backend):
    kind = "rentahal"
    query_types = frozenset({"chat"})
    streams = False

    async def probe(
        self, client: httpx.AsyncClient, worker: WorkerState, seconds: float
    ) -> HealthReport:
        response = await client.get(
            f"{worker.url}/health", headers=self.auth_headers(worker), timeout=seconds
        )
        return HealthReport(status=response.status_code, slots=_reported_slots(response))

    async def generate(
        self, client: httpx.AsyncClient, worker: WorkerState, request: BackendRequest
    ) -> AsyncIterator[str]:
        payload = {
            "prompt": request.prompt,
            "type": request.query_type,
            "model_type": request.model_type,
            "model_name": request.model or request.model_name,
        }
        response = await client.post(
            f"{worker.url}/predict", json=payload, headers=self.auth_headers(worker)
        )
        self.raise_for_status(response, response.content)
        try:
            text = response.json()["response"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError("worker answer has no 'response' field") from exc
        if not isinstance(text, str):
            raise BackendError("worker 'response' is not text")
        yield text
