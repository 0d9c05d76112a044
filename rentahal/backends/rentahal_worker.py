"""The seed's worker protocol, `GET /health` and `POST /predict`, with each worker type's
request and answer shape (SPEC §5.1): chat and vision `{prompt, …, image?} → {response}`,
STT `{audio, …} → {text, …}`, TTS `{prompt, speaker?} → {audio_base64, sample_rate}`,
imagine `{prompt, …} → {image_base64, …}`. The seed's broker sent every worker the chat
shape and read `response`, so it could not talk to its own speech workers; this adapter can.

Chat and vision are asked for `"stream": true`: a RENT A HAL worker then answers NDJSON lines
`{"response": piece, "done": false}` … `{"response": "", "done": true}` (or a last
`{"error": {...}, "done": true}`), and the pieces are yielded as they come, so a spoken answer
starts with its first sentence. A worker that answers JSON anyway (the seed's, an older node)
is read whole, as before.
"""

from __future__ import annotations

import json
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
    ndjson_objects,
)
from rentahal.backends.transport import Reply, post_json
from rentahal.worker.idempotency import HEADER as IDEMPOTENCY_HEADER

# query type → the field of the worker's answer that holds the result
ANSWER_FIELD = {
    "chat": "response",
    "vision": "response",
    "stt": "text",
    "tts": "audio_base64",
    "imagine": "image_base64",
}
RESULT_TYPE = {"tts": "audio", "imagine": "image"}
STREAMED = frozenset({"chat", "vision"})  # the query types a worker writes as it generates
NDJSON = "application/x-ndjson"
# Per-request settings a user may pass through `options`, by query type.
PASSED_OPTIONS = {
    "stt": (
        "language",
        "task",
        "beam_size",
        "vad_filter",
        "word_timestamps",
        "hotwords",
        "temperature",
    ),
    "tts": ("speaker", "text_temp", "waveform_temp"),
    "imagine": ("negative_prompt", "steps", "cfg_scale", "width", "height", "seed"),
}


def _reported_slots(response: httpx.Response) -> int | None:
    """`{"load": {"slots": N}}` from a RENT A HAL worker's /health, if it is there and sane."""
    try:
        slots = response.json()["load"]["slots"]
    except (ValueError, KeyError, TypeError):
        return None
    return slots if isinstance(slots, int) and 1 <= slots <= 1024 else None


def predict_body(request: BackendRequest) -> dict[str, Any]:
    """The `/predict` body for the request's query type."""
    passed = {
        k: request.options[k]
        for k in PASSED_OPTIONS.get(request.query_type, ())
        if k in request.options
    }
    if request.query_type == "stt":
        return {"audio": request.audio or "", **passed}
    if request.query_type in ("tts", "imagine"):
        return {"prompt": request.prompt, **passed}
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "type": request.query_type,
        "model_type": request.model_type,
        "model_name": request.model or request.model_name,
    }
    if request.image is not None:
        body["image"] = request.image
    if request.query_type in STREAMED:
        body["stream"] = True
    return body


class RentahalBackend(Backend):
    kind = "rentahal"
    query_types = frozenset(ANSWER_FIELD)
    streams = True  # chat and vision, from a worker that streams; the rest in one piece

    def result_type(self, query_type: str) -> str:
        return RESULT_TYPE.get(query_type, "text")

    async def probe(
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> HealthReport:
        response = await client.get(
            f"{endpoint.url}/health", headers=self.auth_headers(endpoint), timeout=seconds
        )
        return HealthReport(status=response.status_code, slots=_reported_slots(response))

    async def generate(
        self, client: httpx.AsyncClient, endpoint: Endpoint, request: BackendRequest
    ) -> AsyncIterator[str]:
        headers = self.auth_headers(endpoint)
        if request.job_id:
            headers[IDEMPOTENCY_HEADER] = request.job_id
        async with post_json(
            client, f"{endpoint.url}/predict", predict_body(request), headers
        ) as response:
            if response.status_code != 200:
                self.raise_for_status(response, await response.aread())
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
            if media_type.lower() == NDJSON:
                async for piece in _pieces(response):
                    yield piece
                return
            body = await response.aread()
        field = ANSWER_FIELD.get(request.query_type, "response")
        try:
            answer = json.loads(body)[field]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"worker answer has no {field!r} field") from exc
        if not isinstance(answer, str):
            raise BackendError(f"worker {field!r} is not text")
        yield answer


async def _pieces(response: Reply) -> AsyncIterator[str]:
    """The text of a streamed answer, piece by piece; `BackendError` on an error line or a
    stream that ends before its `done` line."""
    async for part in ndjson_objects(response):
        if "error" in part:
            raise BackendError(f"worker failed mid-answer: {error_message(part)}")
        piece = part.get("response")
        if not isinstance(piece, str):
            raise BackendError("worker 'response' is not text")
        if piece:
            yield piece
