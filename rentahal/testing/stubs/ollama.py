"""Stub of an Ollama server (``/api/chat``, ``/api/tags``), per Ollama's API documentation.

Wire details that brokers trip over are kept: ``/api/chat`` streams NDJSON unless
``"stream": false``; the last line carries ``done: true``, ``done_reason`` and the
nanosecond timing/usage counters; names without a tag mean ``:latest``; errors are
``{"error": "..."}`` and an unknown model is a 404.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from rentahal.testing.stubs.base import (
    build_app,
    json_object,
    last_user_text,
    paced,
    pause,
    probe_failure,
    reason_phrase,
    truncate,
    word_count,
)
from rentahal.testing.stubs.state import StubState, split_chunks

OLLAMA_VERSION = "0.5.7"
_MODEL_SIZE = 4_661_224_676
_LOAD_DURATION_NS = 2_000_000


def create_app(state: StubState) -> Starlette:
    """Build the Ollama app around ``state``."""
    installed_at = _timestamp()

    async def root(request: Request) -> Response:
        failure = await probe_failure(request, state)
        if failure is not None:
            return _error(reason_phrase(failure), failure)
        return PlainTextResponse("Ollama is running")

    async def version(request: Request) -> Response:
        failure = await probe_failure(request, state)
        if failure is not None:
            return _error(reason_phrase(failure), failure)
        return JSONResponse({"version": OLLAMA_VERSION})

    async def tags(request: Request) -> Response:
        failure = await probe_failure(request, state)
        if failure is not None:
            return _error(reason_phrase(failure), failure)
        models = [_model_entry(name, installed_at) for name in state.behaviour.models]
        return JSONResponse({"models": models})

    async def chat(request: Request) -> Response:
        started = time.perf_counter_ns()
        payload = await json_object(request)
        if payload is None:
            return _error("invalid request body: expected a JSON object", 400)
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return _error("model is required", 400)
        if _full_name(model) not in {_full_name(name) for name in state.behaviour.models}:
            return _error(f'model "{model}" not found, try pulling it first', 404)
        await pause(request, state.behaviour.latency)
        failure = state.take_failure()
        if failure is not None:
            return _error("stub configured to fail", failure)

        messages = payload.get("messages")
        text = state.reply_to(last_user_text(messages))
        options = payload.get("options")
        limit = options.get("num_predict") if isinstance(options, dict) else None
        chunks, done_reason = truncate(split_chunks(text), limit)
        prompt_tokens = word_count(messages)

        def final(content: str) -> dict[str, Any]:
            total = time.perf_counter_ns() - started
            return {
                "model": model,
                "created_at": _timestamp(),
                "message": {"role": "assistant", "content": content},
                "done_reason": done_reason,
                "done": True,
                "total_duration": total,
                "load_duration": _LOAD_DURATION_NS,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": total // 4,
                "eval_count": len(chunks),
                "eval_duration": total // 2,
            }

        if payload.get("stream") is False:
            return JSONResponse(final("".join(chunks)))

        async def lines() -> AsyncIterator[bytes]:
            pieces: list[str | None] = [*chunks, None]
            async for piece in paced(request, state, pieces):
                if piece is None:
                    line = final("")
                else:
                    line = {
                        "model": model,
                        "created_at": _timestamp(),
                        "message": {"role": "assistant", "content": piece},
                        "done": False,
                    }
                yield json.dumps(line, separators=(",", ":")).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return build_app(
        state,
        [
            Route("/", root, methods=["GET", "HEAD"]),
            Route("/api/version", version, methods=["GET"]),
            Route("/api/tags", tags, methods=["GET"]),
            Route("/api/chat", chat, methods=["POST"]),
        ],
    )


def _full_name(name: str) -> str:
    """Ollama's canonical ``model:tag`` form: a missing tag means ``latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _model_entry(name: str, modified_at: str) -> dict[str, Any]:
    full = _full_name(name)
    family = full.rsplit("/", 1)[-1].split(":", 1)[0]
    return {
        "name": full,
        "model": full,
        "modified_at": modified_at,
        "size": _MODEL_SIZE,
        "digest": hashlib.sha256(full.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": "8.0B",
            "quantization_level": "Q4_0",
        },
    }


def _timestamp() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(message: str, status: int) -> Response:
    return JSONResponse({"error": message}, status_code=status)
