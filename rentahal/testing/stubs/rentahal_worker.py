"""Stub of a RENT A HAL worker node (the FastAPI ``/predict`` + ``/health`` service).

The broker POSTs ``{prompt, type, model_type, model_name, image?}`` and expects
``{"response": text}`` back in one piece; errors come back the FastAPI way, as
``{"detail": ...}``.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rentahal.testing.stubs.base import (
    build_app,
    json_object,
    pause,
    probe_failure,
    reason_phrase,
)
from rentahal.testing.stubs.state import StubState


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
        return JSONResponse({"response": state.reply_to(payload["prompt"])})

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
