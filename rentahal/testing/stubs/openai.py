"""Stub of an OpenAI-compatible server (``/v1/models``, ``/v1/chat/completions``).

Follows OpenAI's API reference: streaming answers are server-sent events of
``chat.completion.chunk`` objects (a role-only first delta, content deltas, an empty delta
carrying ``finish_reason``, an optional usage chunk) closed by ``data: [DONE]``; errors use
the ``{"error": {message, type, param, code}}`` envelope; a server started with an API key
rejects other bearer tokens with 401, as api.openai.com and vLLM/llama.cpp servers do.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rentahal.testing.stubs.base import (
    build_app,
    json_object,
    last_user_text,
    paced,
    pause,
    probe_failure,
    truncate,
    word_count,
)
from rentahal.testing.stubs.state import StubState, split_chunks

_MODEL_CREATED = 1_700_000_000
_DONE = b"data: [DONE]\n\n"


def create_app(state: StubState) -> Starlette:
    """Build the OpenAI-compatible app around ``state``."""

    async def models(request: Request) -> Response:
        refused = _check_api_key(request, state.api_key)
        if refused is not None:
            return refused
        failure = await probe_failure(request, state)
        if failure is not None:
            return _server_error(failure)
        data = [
            {"id": name, "object": "model", "created": _MODEL_CREATED, "owned_by": "stub"}
            for name in state.behaviour.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(request: Request) -> Response:
        refused = _check_api_key(request, state.api_key)
        if refused is not None:
            return refused
        payload = await json_object(request)
        if payload is None:
            return _error(400, "We could not parse the JSON body of your request.")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter")
        messages = payload.get("messages")
        if not isinstance(messages, list):
            return _error(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if model not in state.behaviour.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return _error(404, message, code="model_not_found")
        await pause(request, state.behaviour.latency)
        failure = state.take_failure()
        if failure is not None:
            return _server_error(failure)

        limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
        reply = split_chunks(state.reply_to(last_user_text(messages)))
        chunks, finish_reason = truncate(reply, limit)
        prompt_tokens = word_count(messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(chunks),
            "total_tokens": prompt_tokens + len(chunks),
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        if payload.get("stream") is not True:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(chunks), "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            )

        stream_options = payload.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage")

        def chunk(
            choices: list[dict[str, Any]], chunk_usage: dict[str, int] | None = None
        ) -> bytes:
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if include_usage:
                body["usage"] = chunk_usage
            return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

        def delta(content: dict[str, str], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

        events = [
            chunk(delta({"role": "assistant", "content": ""})),
            *(chunk(delta({"content": piece})) for piece in chunks),
            chunk(delta({}, finish_reason)),
        ]
        if include_usage:
            events.append(chunk([], usage))
        events.append(_DONE)

        return StreamingResponse(paced(request, state, events), media_type="text/event-stream")

    return build_app(
        state,
        [
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        ],
    )


def _check_api_key(request: Request, api_key: str | None) -> Response | None:
    """Reject the request the way OpenAI does unless it carries ``Bearer <api_key>``."""
    if api_key is None:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return _error(401, message)
    token = token.strip()
    if not secrets.compare_digest(token.encode(), api_key.encode()):
        message = (
            f"Incorrect API key provided: {_mask(token)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return _error(401, message, code="invalid_api_key")
    return None


def _mask(key: str) -> str:
    return key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else "*" * len(key)


def _server_error(status: int) -> Response:
    message = "The server had an error while processing your request. Sorry about that!"
    return _error(status, message, kind="server_error" if status >= 500 else None)


def _error(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> Response:
    error = {
        "message": message,
        "type": kind or "invalid_request_error",
        "param": param,
        "code": code,
    }
    return JSONResponse({"error": error}, status_code=status)
