"""Stub of the Anthropic API: the Messages API (``POST /v1/messages``) and the Models API
(``GET /v1/models``, ``GET /v1/models/{model_id}``).

Follows Anthropic's API reference (Messages, Streaming Messages, Models, Errors):

- Every request needs an ``anthropic-version`` header (a ``YYYY-MM-DD`` date). A stub started
  with an API key wants it in ``x-api-key`` (the documented header; ``Authorization: Bearer``
  is accepted too, as the current SDKs send keys that way) and answers 401
  ``authentication_error`` otherwise.
- A non-streamed answer is a ``message`` object; a streamed one is server-sent events, each
  ``event: <name>`` + ``data: <json>``: ``message_start`` (the message with empty content),
  ``content_block_start`` (an empty text block), ``ping``, ``content_block_delta``
  (``text_delta``) per chunk, ``content_block_stop``, ``message_delta`` (``stop_reason``,
  cumulative ``usage.output_tokens``), ``message_stop``.
- ``max_tokens`` is required; the reply is cut there with ``stop_reason: "max_tokens"``
  (one word-sized chunk counts as one token), else ``"end_turn"``.
- Errors are ``{"type": "error", "error": {"type", "message"}, "request_id"}`` with the
  documented statuses (400 invalid_request_error, 401 authentication_error, 403
  permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500
  api_error, 529 overloaded_error …); every answer carries a ``request-id`` header.

Beyond the shared :class:`~rentahal.testing.stubs.state.Behaviour` knobs, ``POST
/_stub/anthropic/stream_error {"error_type": "overloaded_error", "after_chunks": 1}`` makes
the next streamed answer break off with an ``event: error`` after that many text deltas
(the way the real API reports a failure once it has answered 200); it applies once.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import string
from collections.abc import AsyncIterator
from datetime import UTC, datetime
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

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "The requested resource could not be found.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}
IMAGE_MEDIA_TYPES: dict[str, tuple[bytes, ...]] = {
    # media type → the file signatures the API accepts for it
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
# API version 2026-10-21 refuses the sampling parameters that 2023-06-01 takes.
SAMPLING_REMOVED = "2026-10-21"
SAMPLING_PARAMETERS = ("temperature", "top_p", "top_k")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATED = re.compile(r"^(?P<alias>.+)-(?P<date>\d{8})$")
_ID_CHARS = string.ascii_letters + string.digits
_UNDATED_CREATED_AT = "2025-01-01T00:00:00Z"


class _Invalid(Exception):
    """A request the API refuses; carries the status and message of its error answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(state: StubState) -> Starlette:
    """Build the Anthropic API app around ``state``."""
    # One-shot mid-stream failure, set through /_stub/anthropic/stream_error.
    stream_error: dict[str, Any] = {}

    async def models(request: Request) -> Response:
        refused = _check_headers(request, state.api_key)
        if refused is not None:
            return refused
        failure = await probe_failure(request, state)
        if failure is not None:
            return error_response(failure)
        try:
            page, has_more = _page(list(state.behaviour.models), request.query_params)
        except _Invalid as exc:
            return error_response(exc.status, exc.message)
        data = [model_info(name) for name in page]
        return _json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def model(request: Request) -> Response:
        refused = _check_headers(request, state.api_key)
        if refused is not None:
            return refused
        failure = await probe_failure(request, state)
        if failure is not None:
            return error_response(failure)
        name = request.path_params["model_id"]
        resolved = resolve_model(name, state.behaviour.models)
        if resolved is None:
            return error_response(404, f"model: {name}")
        return _json(model_info(resolved))

    async def messages(request: Request) -> Response:
        refused = _check_headers(request, state.api_key)
        if refused is not None:
            return refused
        payload = await json_object(request)
        if payload is None:
            return error_response(400, "There was an error parsing the body of your request.")
        try:
            validate_message_request(payload, request.headers["anthropic-version"])
        except _Invalid as exc:
            return error_response(exc.status, exc.message)
        model_name: str = payload["model"]
        if resolve_model(model_name, state.behaviour.models) is None:
            return error_response(404, f"model: {model_name}")
        await pause(request, state.behaviour.latency)
        failure = state.take_failure()
        if failure is not None:
            return error_response(failure)

        conversation = payload["messages"]
        reply = split_chunks(state.reply_to(last_user_text(conversation)))
        chunks, finish = truncate(reply, payload["max_tokens"])
        stop_reason = "max_tokens" if finish == "length" else "end_turn"
        input_tokens = word_count(conversation) + _system_words(payload.get("system"))
        message_id = "msg_01" + "".join(secrets.choice(_ID_CHARS) for _ in range(22))

        def message(content: list[dict[str, Any]], stop: str | None, output: int) -> dict[str, Any]:
            return {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model_name,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 0,
                        "ephemeral_1h_input_tokens": 0,
                    },
                    "output_tokens": output,
                    "service_tier": "standard",
                },
            }

        if payload.get("stream") is not True:
            text = "".join(chunks)
            return _json(message([{"type": "text", "text": text}], stop_reason, len(chunks)))

        broken = dict(stream_error)
        stream_error.clear()
        head = [
            sse("message_start", {"type": "message_start", "message": message([], None, 1)}),
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse("ping", {"type": "ping"}),
        ]
        tail = [
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": len(chunks)},
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]

        async def events() -> AsyncIterator[bytes]:
            for event in head:
                yield event
            sent = 0
            async for piece in paced(request, state, chunks):
                if broken and sent >= broken["after_chunks"]:
                    break
                delta = {"type": "text_delta", "text": piece}
                yield sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
                sent += 1
            if broken:
                kind = broken["error_type"]
                body = {"type": "error", "error": {"type": kind, "message": _message_for(kind)}}
                yield sse("error", body)
                return
            for event in tail:
                yield event

        return StreamingResponse(
            events(),
            media_type="text/event-stream; charset=utf-8",
            headers={"request-id": _request_id(), "cache-control": "no-cache"},
        )

    async def set_stream_error(request: Request) -> Response:
        payload = await json_object(request) or {}
        kind = payload.get("error_type", "overloaded_error")
        after = payload.get("after_chunks", 0)
        if not isinstance(kind, str) or not isinstance(after, int) or isinstance(after, bool):
            return JSONResponse({"error": "error_type: str, after_chunks: int"}, status_code=400)
        stream_error.clear()
        stream_error.update(error_type=kind, after_chunks=max(after, 0))
        return JSONResponse(stream_error)

    return build_app(
        state,
        [
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", model, methods=["GET"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/_stub/anthropic/stream_error", set_stream_error, methods=["POST"]),
        ],
    )


def resolve_model(name: str, models: list[str]) -> str | None:
    """The listed model `name` stands for: itself, or the dated model it is the alias of
    (``claude-sonnet-4-5`` → ``claude-sonnet-4-5-20250929``), as the API resolves aliases."""
    if name in models:
        return name
    for listed in models:
        dated = _DATED.match(listed)
        if dated is not None and dated["alias"] == name:
            return listed
    return None


def model_info(name: str) -> dict[str, Any]:
    """A Models API entry: ``{type, id, display_name, created_at}`` (+ ``lifecycle``)."""
    dated = _DATED.match(name)
    created_at = _UNDATED_CREATED_AT
    base = name
    if dated is not None:
        base = dated["alias"]
        with_date = datetime.strptime(dated["date"], "%Y%m%d").replace(tzinfo=UTC)
        created_at = with_date.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": name,
        "display_name": _display_name(base),
        "created_at": created_at,
        "lifecycle": "active",
    }


def _display_name(base: str) -> str:
    """``claude-sonnet-4-5`` → ``Claude Sonnet 4.5``."""
    words: list[str] = []
    for part in base.split("-"):
        if part.isdigit() and words and words[-1][-1].isdigit():
            words[-1] += f".{part}"
        else:
            words.append(part.capitalize() if not part.isdigit() else part)
    return " ".join(words)


def _page(names: list[str], query: Any) -> tuple[list[str], bool]:
    """One page of the model list: ``limit`` (1–1000, default 20), ``after_id``/``before_id``."""
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise _Invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise _Invalid("limit: Input should be between 1 and 1000")
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise _Invalid("Only one of before_id and after_id may be given")
    for cursor in (after, before):
        if cursor is not None and cursor not in names:
            raise _Invalid(f"Invalid cursor: {cursor}")
    if before is not None:
        earlier = names[: names.index(before)]
        return earlier[-limit:], len(earlier) > limit
    start = names.index(after) + 1 if after is not None else 0
    rest = names[start:]
    return rest[:limit], len(rest) > limit


def validate_message_request(payload: dict[str, Any], version: str) -> None:
    """Refuse what the Messages API refuses at API `version` (with its wording, roughly)."""
    model = payload.get("model")
    if model is None:
        raise _Invalid("model: Field required")
    if not isinstance(model, str) or not model:
        raise _Invalid("model: Input should be a valid string")
    max_tokens = payload.get("max_tokens")
    if max_tokens is None:
        raise _Invalid("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise _Invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _Invalid("max_tokens: Input should be greater than or equal to 1")
    conversation = payload.get("messages")
    if conversation is None:
        raise _Invalid("messages: Field required")
    if not isinstance(conversation, list):
        raise _Invalid("messages: Input should be a valid list")
    if not conversation:
        raise _Invalid("messages: at least one message is required")
    for index, message in enumerate(conversation):
        _validate_message(f"messages.{index}", message)
    for name in SAMPLING_PARAMETERS:
        value = payload.get(name)
        if value is None:
            continue
        if version >= SAMPLING_REMOVED:
            raise _Invalid(f"{name}: Extra inputs are not permitted")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Invalid(f"{name}: Input should be a valid number")
        if value < 0:
            raise _Invalid(f"{name}: Input should be greater than or equal to 0")
        if name != "top_k" and value > 1:
            raise _Invalid(f"{name}: Input should be less than or equal to 1")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _Invalid("stream: Input should be a valid boolean")
    system = payload.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _Invalid("system: Input should be a valid string or a list of text blocks")


def _validate_message(where: str, message: object) -> None:
    if not isinstance(message, dict):
        raise _Invalid(f"{where}: Input should be a valid dictionary")
    if message.get("role") not in ("user", "assistant"):
        raise _Invalid(f"{where}.role: Input should be 'user' or 'assistant'")
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            raise _Invalid(f"{where}: text content blocks must be non-empty")
        return
    if not isinstance(content, list):
        raise _Invalid(f"{where}.content: Input should be a valid string or list")
    if not content:
        raise _Invalid(f"{where}: all messages must have non-empty content")
    for index, block in enumerate(content):
        _validate_block(f"{where}.content.{index}", block)


def _validate_block(where: str, block: object) -> None:
    if not isinstance(block, dict):
        raise _Invalid(f"{where}: Input should be a valid dictionary")
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str) or not text:
            raise _Invalid(f"{where}.text: text content blocks must be non-empty")
        return
    if kind != "image":
        raise _Invalid(f"{where}.type: Input tag '{kind}' is not a supported content block type")
    source = block.get("source")
    if not isinstance(source, dict):
        raise _Invalid(f"{where}.image.source: Field required")
    if source.get("type") == "url":
        if not isinstance(source.get("url"), str):
            raise _Invalid(f"{where}.image.source.url: Field required")
        return
    if source.get("type") != "base64":
        raise _Invalid(f"{where}.image.source.type: Input should be 'base64' or 'url'")
    media_type = source.get("media_type")
    if media_type not in IMAGE_MEDIA_TYPES:
        allowed = ", ".join(f"'{name}'" for name in IMAGE_MEDIA_TYPES)
        raise _Invalid(f"{where}.image.source.base64.media_type: Input should be {allowed}")
    data = source.get("data")
    try:
        raw = base64.b64decode(data if isinstance(data, str) else "", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise _Invalid(f"{where}.image.source.base64.data: invalid base64 data")
    if not raw.startswith(IMAGE_MEDIA_TYPES[media_type]):
        raise _Invalid(
            f"{where}.image.source.base64.data: Image does not match the provided media type "
            f"{media_type}"
        )


def _system_words(system: object) -> int:
    if isinstance(system, str):
        return len(system.split())
    if isinstance(system, list):
        return word_count([{"content": system}])
    return 0


def _check_headers(request: Request, api_key: str | None) -> Response | None:
    """The API key (when the stub has one) and the ``anthropic-version`` header."""
    if api_key is not None:
        given = request.headers.get("x-api-key")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if given is None:
            return error_response(401, "x-api-key header is required")
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            return error_response(401, "invalid x-api-key")
    version = request.headers.get("anthropic-version")
    if version is None:
        return error_response(400, "anthropic-version: header is required")
    if not _VERSION.match(version):
        return error_response(400, f"anthropic-version: invalid version {version!r}")
    return None


def error_response(status: int, message: str | None = None) -> Response:
    """The API's error envelope, with the error type its docs give for `status`."""
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    request_id = _request_id()
    body = {
        "type": "error",
        "error": {"type": kind, "message": message or _message_for(kind)},
        "request_id": request_id,
    }
    return JSONResponse(body, status_code=status, headers={"request-id": request_id})


def _message_for(kind: str) -> str:
    return _ERROR_MESSAGES.get(kind, "Internal server error")


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event as the API frames it: ``event:`` then ``data:`` lines."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _json(body: object, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers={"request-id": _request_id()})


def _request_id() -> str:
    return "req_01" + "".join(secrets.choice(_ID_CHARS) for _ in range(22))
