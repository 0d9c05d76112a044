"""Ollama: `POST /api/chat` (NDJSON stream), `GET /api/tags` for models and health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from rentahal.backends.base import (
    Backend,
    BackendError,
    BackendRequest,
    Endpoint,
    HealthReport,
    error_message,
    generation_options,
    ndjson_objects,
)
from rentahal.backends.transport import post_json


def _ollama_options(options: dict[str, Any]) -> dict[str, Any]:
    picked = generation_options(options)
    if "max_tokens" in picked:  # Ollama calls it num_predict
        picked["num_predict"] = picked.pop("max_tokens")
    return picked


class OllamaBackend(Backend):
    kind = "ollama"
    query_types = frozenset({"chat", "vision"})

    async def probe(
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> HealthReport:
        return await self.probe_model_list(
            client,
            endpoint,
            f"{endpoint.url}/api/tags",
            seconds,
            lambda body: (m["name"] for m in body["models"]),
        )

    async def generate(
        self, client: httpx.AsyncClient, endpoint: Endpoint, request: BackendRequest
    ) -> AsyncIterator[str]:
        if not request.model:
            raise BackendError("no model named and the worker lists none")
        message: dict[str, Any] = {"role": "user", "content": request.prompt}
        if request.image is not None:
            message["images"] = [request.image]  # base64, as vision models (llava) take it
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": [message],
            "stream": request.stream,
        }
        if options := _ollama_options(request.options):
            payload["options"] = options
        url = f"{endpoint.url}/api/chat"
        async with post_json(client, url, payload, self.auth_headers(endpoint)) as response:
            if response.status_code != 200:
                self.raise_for_status(response, await response.aread())
            async for part in ndjson_objects(response):
                if "error" in part:
                    raise BackendError(f"worker error: {error_message(part)}")
                content = (part.get("message") or {}).get("content") or ""
                if content:
                    yield content
