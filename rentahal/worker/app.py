"""The worker's HTTP face: the seed's `GET /health` and `POST /predict`, done safely.

Errors are `{"error": {"code", "message"}}` with a 4xx for the caller's mistakes (malformed
JSON, a field out of bounds, audio that is not audio, an unknown speaker), 503 while the model
loads, and 500 only when the engine itself fails.
"""

from __future__ import annotations

import hmac
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from rentahal.media import BadMedia
from rentahal.worker.protocol import MAX_AUDIO_B64, MAX_IMAGE_B64
from rentahal.worker.service import Readiness, Served, WorkerService

log = structlog.get_logger(__name__)

MAX_BODY = max(MAX_AUDIO_B64, MAX_IMAGE_B64) + 64 * 1024


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


def health_response(service: Served) -> JSONResponse:
    status = 200 if service.readiness is Readiness.READY else 503
    return JSONResponse(service.health(), status_code=status)


def refused(request: Request, api_key: str | None) -> JSONResponse | None:
    """401 unless the request carries the key (when there is one)."""
    if api_key is None:
        return None
    given = request.headers.get("authorization", "")
    if hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
        return None
    return error(401, "unauthorized", "this worker needs its broker's key")


class BodyTooLarge(Exception):
    pass


async def read_bounded(request: Request, limit: int) -> bytes:
    """The body, refusing early (by Content-Length) or as soon as it grows past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def create_worker_app(service: WorkerService, *, api_key: str | None = None) -> FastAPI:
    """The app for `service` (whose loading the caller starts).

    `api_key`: when set, `/predict` needs `Authorization: Bearer <key>` (the broker that
    registered this worker holds it); `/health` stays open, it grants nothing."""

    app = FastAPI(
        title=f"RENT A HAL {service.role} worker",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/health")
    async def health() -> JSONResponse:
        return health_response(service)

    async def predict(request: Request) -> JSONResponse:
        if (refusal := refused(request, api_key)) is not None:
            return refusal
        if service.readiness is not Readiness.READY:
            return error(503, service.readiness.value, f"the model is {service.readiness.value}")
        try:
            body = await read_bounded(request, MAX_BODY)
            parsed = service.schema.model_validate_json(body)
        except BodyTooLarge:
            return error(413, "too_large", f"the request is over {MAX_BODY} bytes")
        except ValidationError as exc:
            fields = [
                {"field": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()
            ]
            return error(422, "invalid", "the request does not fit the schema", fields=fields)
        try:
            answer = await service.run(parsed)
        except BadMedia as exc:  # BadInput, or media that failed its checks
            return error(400, exc.code, exc.message)
        except Exception as exc:
            log.exception("worker.engine_failed", engine=service.engine.name)
            return error(500, "engine_error", f"{service.engine.name} failed: {exc}")
        return JSONResponse(answer.model_dump())

    # The seed declared `/predict/` while its broker posted `/predict`: answer both.
    app.add_api_route("/predict", predict, methods=["POST"])
    app.add_api_route("/predict/", predict, methods=["POST"], include_in_schema=False)
    return app
