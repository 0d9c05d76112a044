"""Stub of a RENT A HAL worker node (the FastAPI ``/predict`` + ``/health`` service).

The broker POSTs ``{prompt, type, model_type, model_name, image?}`` and expects
``{"response": text}`` back in one piece; errors come back the FastAPI way, as
``{"detail": ...}``. With ``"stream": true`` (a ``rentahal worker`` node's extension) the
answer is NDJSON instead: ``{"response": chunk, "done": false}`` lines ``chunk_delay`` apart,
then ``{"response": "", "done": true}``; ``error_after_chunks`` ends it with an
``{"error": {"code": "engine_error", "message"}, "done": true}`` line instead, and
``streams: false`` answers whole anyway, as the seed's worker does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rentahal.testing.stubs.base import (
    build_app,
    json_object,
    paced,
    pause,
    probe_failure,
    reason_phrase,
)
from rentahal.testing.stubs.state import StubState, split_chunks


def create_app(state: StubState) -> Starlette:
    """Build the worker app around ``state``."""

    async def health(request: Request) -> Response:
        failure = await probe_failure(request, state)
        if failure is not None:
            return JSONResponse({"detail": reason_phrase(failure)}, status_code=failure)
        body: dict[str, object] = {"status": "ok"}
        if state.behaviour.slots is not None:
            body["load"] = {"slots": state.behaviour.slots}
        return JSONResponse(body)

    async def predict(request: Request) -> Response:
        payload = await json_object(request)
        if payload is None or not isinstance(payload.get("prompt"), str):
            return _missing_prompt(payload)
        await pause(request, state.behaviour.latency)
        failure = state.take_failure()
        if failure is not None:
            detail = "Model prediction failed: stub configured to fail"
            return JSONResponse({"detail": detail}, status_code=failure)
        text = state.reply_to(payload["prompt"])
        if payload.get("stream") is not True or not state.behaviour.streams:
            return JSONResponse({"response": text})
        failing_after = state.behaviour.error_after_chunks
        chunks = split_chunks(text)
        if failing_after is not None:
            chunks = chunks[:failing_after]

        async def lines() -> AsyncIterator[bytes]:
            pieces: list[str | None] = [*chunks, None]
            async for piece in paced(request, state, pieces):
                if piece is not None:
                    line: dict[str, Any] = {"response": piece, "done": False}
                elif failing_after is not None:
                    failure = {"code": "engine_error", "message": "stub engine failed mid-answer"}
                    line = {"error": failure, "done": True}
                else:
                    line = {"response": "", "done": True}
                yield json.dumps(line, separators=(",", ":")).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return build_app(
        state,
        [
            Route("/health", health, methods=["GET"]),
            Route("/predict", predict, methods=["POST"]),
        ],
    )


def _missing_prompt(payload: dict[str, Any] | None) -> Response:
    """FastAPI's 422 validation error, as the real worker's pydantic model produces it."""
    error = {
        "type": "missing",
        "loc": ["body", "prompt"],
        "msg": "Field required",
        "input": payload,
    }
    return JSONResponse({"detail": [error]}, status_code=422)
