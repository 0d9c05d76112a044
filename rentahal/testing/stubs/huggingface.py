"""Stub of a Hugging Face inference server: Text Generation Inference (TGI) and an Inference
Endpoint, as `huggingface_hub.InferenceClient` talks to them when given their URL.

- ``GET /info``: TGI's endpoint info (``model_id`` is the first configured model, then
  ``model_sha``, ``max_concurrent_requests``, ... ``version``, ``sha``, ``docker_label``).
- ``GET /health``: 200 with an empty body; 503 ``{"error": "unhealthy", "error_type":
  "healthcheck"}`` when unhealthy.
- ``POST /v1/chat/completions``: TGI's Messages API. Streamed, one ``chat.completion.chunk``
  SSE event per token, each delta carrying ``role: "assistant"`` and the token's text, the
  last one its ``finish_reason`` (``stop`` or ``length``), then a usage chunk when
  ``stream_options.include_usage``, then ``data: [DONE]``; or one ``chat.completion``.
  TGI serves one model and ignores the request's ``model``; so does the stub.
- ``POST /``: the endpoint's task route, which the client posts every other task to. An
  endpoint serves the one task its model does; this one serves two, told apart by the body:
  image-to-text for an image (raw bytes, or JSON ``{"inputs": base64}``), answering
  ``[{"generated_text": ...}]``; text-to-image for JSON ``{"inputs": prompt, "parameters":
  {width, height, num_inference_steps, guidance_scale, seed, negative_prompt}}``, answering a
  real PNG of the requested size (512×512 by default; JPEG when the ``Accept`` header asks
  for JPEG and not PNG). Without a fixed ``reply`` the caption describes the image received
  (format, size, byte count, SHA-256), so tests can tell exactly what reached the worker;
  with one, image-to-text answers it and text-to-image sends its bytes as an "image/png"
  body, like an endpoint gone wrong.
- Every route is also served per model under ``/hf-inference/models/<model>``, the
  serverless router's layout, where RENT A HAL's configured Hugging Face models live.
- Errors use Hugging Face's envelope ``{"error": message}``, with TGI's ``error_type`` where
  TGI sets one: 503 is ``{"error": "Model <id> is currently loading", "estimated_time":
  20.0}``, 429 ``overloaded``, 422 ``validation``; a server started with an API key answers
  401 ``{"error": "Invalid credentials in Authorization header"}`` to any other token, on
  every route (protected Inference Endpoints guard all of them).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import secrets
import time
from typing import Any

from PIL import Image, ImageDraw, UnidentifiedImageError
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
    reason_phrase,
    truncate,
    word_count,
)
from rentahal.testing.stubs.state import StubState, split_chunks

SERVERLESS_PREFIX = "/hf-inference/models"

TGI_VERSION = "3.2.1"
TGI_SHA = "4d28897b4e345f4dfdd93d3434e50ac8afcdf9e1"
TGI_DOCKER_LABEL = "sha-4d28897"
FINGERPRINT = f"{TGI_VERSION}-{TGI_DOCKER_LABEL}"
LOADING_ESTIMATE = 20.0
DEFAULT_SIZE = 512
SIZE_LIMITS = (64, 2048)
_DONE = b"data: [DONE]\n\n"


def create_app(state: StubState) -> Starlette:
    """Build the TGI / Inference Endpoint app around ``state``."""

    def model_id() -> str:
        models = state.behaviour.models
        return models[0] if models else "stub-model"

    async def info(request: Request) -> Response:
        refused = _check_token(request, state.api_key)
        if refused is not None:
            return refused
        failure = await probe_failure(request, state)
        if failure is not None:
            return _error(failure, reason_phrase(failure))
        return JSONResponse(
            {
                "model_id": model_id(),
                "model_sha": hashlib.sha1(model_id().encode()).hexdigest(),
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": 8191,
                "max_total_tokens": 8192,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": TGI_VERSION,
                "sha": TGI_SHA,
                "docker_label": TGI_DOCKER_LABEL,
            }
        )

    async def health(request: Request) -> Response:
        refused = _check_token(request, state.api_key)
        if refused is not None:
            return refused
        failure = await probe_failure(request, state)
        if failure is not None:
            return _error(failure, "unhealthy", error_type="healthcheck")
        return Response(status_code=200)

    def failed() -> Response | None:
        status = state.take_failure()
        return None if status is None else _failure(status, model_id())

    async def chat_completions(request: Request) -> Response:
        refused = _check_token(request, state.api_key)
        if refused is not None:
            return refused
        payload = await json_object(request)
        if payload is None:
            return _error(422, "Failed to parse the request body as JSON", error_type="validation")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(
                422,
                "Input validation error: `messages` must be a non-empty list",
                error_type="validation",
            )
        limit = payload.get("max_tokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return _error(
                422,
                "Input validation error: `max_new_tokens` must be strictly positive",
                error_type="validation",
            )
        await pause(request, state.behaviour.latency)
        failure = failed()
        if failure is not None:
            return failure

        chunks, finish_reason = truncate(
            split_chunks(state.reply_to(last_user_text(messages))), limit
        )
        prompt_tokens = word_count(messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(chunks),
            "total_tokens": prompt_tokens + len(chunks),
        }
        created = int(time.time())
        if payload.get("stream") is not True:
            return JSONResponse(
                {
                    "object": "chat.completion",
                    "id": "",
                    "created": created,
                    "model": model_id(),
                    "system_fingerprint": FINGERPRINT,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(chunks)},
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                }
            )

        def event(choices: list[dict[str, Any]], chunk_usage: dict[str, int] | None) -> bytes:
            body = {
                "object": "chat.completion.chunk",
                "id": "",
                "created": created,
                "model": model_id(),
                "system_fingerprint": FINGERPRINT,
                "choices": choices,
                "usage": chunk_usage,
            }
            return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

        tokens = chunks or [""]  # the last token's event carries the finish reason
        events = [
            event(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": token},
                        "logprobs": None,
                        "finish_reason": finish_reason if index == len(tokens) - 1 else None,
                    }
                ],
                None,
            )
            for index, token in enumerate(tokens)
        ]
        options = payload.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            events.append(event([], usage))
        events.append(_DONE)
        return StreamingResponse(paced(request, state, events), media_type="text/event-stream")

    async def task(request: Request) -> Response:
        refused = _check_token(request, state.api_key)
        if refused is not None:
            return refused
        body = await request.body()
        payload = _json(body)
        if payload is None:
            image = await asyncio.to_thread(_open_image, body)
            if image is None:
                return _error(400, "cannot identify image file")
        else:
            inputs = payload.get("inputs")
            if not isinstance(inputs, str) or not inputs:
                return _error(400, "`inputs` must be a non-empty string")
            image = await asyncio.to_thread(_open_image, _base64(inputs))
        if image is not None:
            return await image_to_text(request, image)
        assert payload is not None
        return await text_to_image(request, payload)

    async def image_to_text(request: Request, image: tuple[Image.Image, bytes]) -> Response:
        await pause(request, state.behaviour.latency)
        failure = failed()
        if failure is not None:
            return failure
        picture, raw = image
        caption = state.behaviour.reply
        if caption is None:
            caption = (
                f"a {picture.width}x{picture.height} {picture.format} image, {len(raw)} bytes, "
                f"sha256 {hashlib.sha256(raw).hexdigest()}"
            )
        return JSONResponse([{"generated_text": caption}])

    async def text_to_image(request: Request, payload: dict[str, Any]) -> Response:
        parameters = payload.get("parameters") or {}
        if not isinstance(parameters, dict):
            return _error(400, "`parameters` must be an object")
        problem = _check_parameters(parameters)
        if problem is not None:
            return _error(400, problem)
        await pause(request, state.behaviour.latency)
        failure = failed()
        if failure is not None:
            return failure
        if state.behaviour.reply is not None:
            return Response(state.behaviour.reply.encode(), media_type="image/png")
        accept = request.headers.get("accept", "")
        fmt = "JPEG" if "image/jpeg" in accept and "image/png" not in accept else "PNG"
        data = await asyncio.to_thread(_render, payload["inputs"], parameters, fmt)
        return Response(data, media_type=f"image/{fmt.lower()}")

    endpoint = [
        Route("/info", info, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/", task, methods=["POST"]),
    ]
    # The same, per model, under the serverless router's layout: <base>/<model>/...
    per_model = [
        Route(
            f"{SERVERLESS_PREFIX}/{{model}}{route.path.rstrip('/')}",
            route.endpoint,
            methods=route.methods,
        )
        for route in endpoint
    ]
    return build_app(state, [*endpoint, *per_model])


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _open_image(data: bytes) -> tuple[Image.Image, bytes] | None:
    """The decoded image and its bytes, or ``None`` if ``data`` is not an image."""
    if not data:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None
    return image, data


def _check_parameters(parameters: dict[str, Any]) -> str | None:
    """What is wrong with text-to-image parameters, as the endpoint would say it."""
    for side in ("width", "height"):
        value = parameters.get(side)
        if value is None:
            continue
        low, high = SIZE_LIMITS
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f"`{side}` must be an integer between {low} and {high}"
        if value % 8:
            return f"`{side}` has to be divisible by 8 but is {value}"
    steps = parameters.get("num_inference_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        return "`num_inference_steps` must be a positive integer"
    guidance = parameters.get("guidance_scale")
    if guidance is not None and (not isinstance(guidance, int | float) or guidance < 0):
        return "`guidance_scale` must be a non-negative number"
    return None


def _render(prompt: str, parameters: dict[str, Any], fmt: str) -> bytes:
    """A real picture of the requested size, its colours chosen by the prompt and seed."""
    width = parameters.get("width") or DEFAULT_SIZE
    height = parameters.get("height") or DEFAULT_SIZE
    digest = hashlib.sha256(f"{prompt}|{parameters.get('seed')}".encode()).digest()
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(image)
    draw.ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4),
        fill=(digest[3], digest[4], digest[5]),
    )
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _check_token(request: Request, api_key: str | None) -> Response | None:
    """401 unless the request carries ``Authorization: Bearer <api_key>``."""
    if api_key is None:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and secrets.compare_digest(token.encode(), api_key.encode()):
        return None
    return _error(401, "Invalid credentials in Authorization header")


def _failure(status: int, model: str) -> Response:
    """The answer of an inference call configured to fail with ``status``."""
    if status == 503:
        return JSONResponse(
            {"error": f"Model {model} is currently loading", "estimated_time": LOADING_ESTIMATE},
            status_code=503,
        )
    if status == 429:
        return _error(429, "Model is overloaded", error_type="overloaded")
    if status == 422:
        return _error(
            422, "Input validation error: stub refused the input", error_type="validation"
        )
    if status == 400:
        return _error(400, "Bad request: stub refused the input")
    if status == 401:
        return _error(401, "Invalid credentials in Authorization header")
    return _error(status, reason_phrase(status))


def _error(status: int, message: str, *, error_type: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if error_type is not None:
        body["error_type"] = error_type
    return JSONResponse(body, status_code=status)
