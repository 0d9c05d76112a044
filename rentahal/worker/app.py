"""The worker's HTTP face: the seed's `GET /health` and `POST /predict`, done safely.

Errors are `{"error": {"code", "message"}}` with a 4xx for the caller's mistakes (malformed
JSON, a field out of bounds, audio that is not audio, an unknown speaker), 503 while the model
loads, and 500 only when the engine itself fails.

A chat or vision `/predict` with `"stream": true` answers as it is generated, Ollama-style:
`Content-Type: application/x-ndjson`, one JSON object a line, `{"response": "<text>",
"done": false}` for each piece (the pieces join to the answer), then `{"response": "",
"done": true}`. An error before the first piece is the usual JSON error and status; after
it, the stream ends with `{"error": {"code": "engine_error", "message"}, "done": true}`. A
client that hangs up stops the engine at its next token. Without `stream` (the seed's
clients) the answer is `{"response"}` in one piece.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncGenerator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rentahal.media import BadMedia
from rentahal.request_ids import RequestIdMiddleware
from rentahal.worker.idempotency import HEADER, MAX_KEY_LENGTH, IdempotentRuns, Run
from rentahal.worker.protocol import MAX_AUDIO_B64, MAX_IMAGE_B64, ChatRequest, ChatResponse
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


def ndjson_line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class NdjsonStream(StreamingResponse):
    """A streamed answer whose pieces are closed however the response ends, so a client
    that hangs up (the response cancelled) lets go of its run at once, not when the
    garbage collector finds the iterator."""

    media_type = "application/x-ndjson"

    def __init__(self, pieces: AsyncGenerator[bytes]) -> None:
        super().__init__(pieces)
        self._pieces = pieces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._pieces.aclose()


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
    app.add_middleware(RequestIdMiddleware)  # the broker's request id, in this node's logs
    runs: IdempotentRuns[Any] = IdempotentRuns()

    @app.get("/health")
    async def health() -> JSONResponse:
        return health_response(service)

    async def predict(request: Request) -> Response:
        if (refusal := refused(request, api_key)) is not None:
            return refusal
        key = request.headers.get(HEADER)
        if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
            return error(400, "invalid", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
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
        streamed = isinstance(parsed, ChatRequest) and parsed.stream
        if streamed:
            run = runs.start(key, lambda run: stream_into(run, parsed), stops=True)
        else:
            run = runs.start(key, lambda run: whole(run, parsed))
        pieces = run.follow() if streamed else None
        try:
            if pieces is None:
                answer = await run.answer()
            else:  # the first piece, or the error that came before it
                first = await anext(pieces, "")
        except BadMedia as exc:  # BadInput, or media that failed its checks
            return error(400, exc.code, exc.message)
        except Exception as exc:
            log.exception("worker.engine_failed", engine=service.engine.name)
            return error(500, "engine_error", f"{service.engine.name} failed: {exc}")
        except BaseException:
            if pieces is not None:
                await pieces.aclose()
            raise
        if pieces is None:
            return JSONResponse(answer.model_dump())
        return NdjsonStream(ndjson(first, pieces))

    async def whole(run: Run[Any], request: BaseModel) -> BaseModel:
        answer = await service.run(request)
        if isinstance(answer, ChatResponse):
            run.write(answer.response)  # for a streamed repeat
        return answer

    async def stream_into(run: Run[Any], request: BaseModel) -> BaseModel:
        async for piece in service.stream(request, stop=run.abandoned):
            run.write(piece)
        return ChatResponse(response="".join(run.parts))

    async def ndjson(first: str, pieces: AsyncGenerator[str]) -> AsyncGenerator[bytes]:
        try:
            if first:
                yield ndjson_line({"response": first, "done": False})
            async for piece in pieces:
                yield ndjson_line({"response": piece, "done": False})
        except Exception as exc:
            log.exception("worker.engine_failed", engine=service.engine.name, streamed=True)
            message = f"{service.engine.name} failed: {exc}"
            yield ndjson_line({"error": {"code": "engine_error", "message": message}, "done": True})
            return
        finally:
            await pieces.aclose()
        yield ndjson_line({"response": "", "done": True})

    # The seed declared `/predict/` while its broker posted `/predict`: answer both.
    app.add_api_route("/predict", predict, methods=["POST"])
    app.add_api_route("/predict/", predict, methods=["POST"], include_in_schema=False)
    return app
