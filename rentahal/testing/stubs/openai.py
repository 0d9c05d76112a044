"""Stub of an OpenAI-compatible server: ``GET /v1/models``, ``POST /v1/chat/completions``,
``POST /v1/images/generations``, ``POST /v1/audio/transcriptions``, ``POST /v1/audio/speech``.

Follows OpenAI's API reference: streaming answers are server-sent events of
``chat.completion.chunk`` objects (a role-only first delta, content deltas, an empty delta
carrying ``finish_reason``, an optional usage chunk) closed by ``data: [DONE]``; errors use
the ``{"error": {message, type, param, code}}`` envelope; a server started with an API key
rejects other bearer tokens with 401, as api.openai.com and vLLM/llama.cpp servers do.

Media, as the reference's "Create image", "Create transcription" and "Create speech" say:

- images: JSON in; ``{"created", "data": [{"b64_json" | "url", "revised_prompt"}]}`` out, each
  image a real PNG of the requested ``size``, drawn by Pillow from the prompt's hash. Each
  model family takes only its sizes (dall-e-2: 256/512/1024 squares; dall-e-3: 1024x1024,
  1792x1024, 1024x1792; GPT image models: 1024x1024, 1536x1024, 1024x1536, auto), any other
  model any ``WxH`` with sides 64-2048. GPT image models answer base64 only, with
  ``background``, ``output_format``, ``quality``, ``size`` and ``usage``, and refuse
  ``response_format``; the others default to ``url`` (served by this stub under
  ``/v1/images/files/``) and add ``revised_prompt``. Unknown parameters are refused.
- transcriptions: ``multipart/form-data`` with ``file`` and ``model`` (``language``,
  ``prompt``, ``response_format``, ``temperature`` optional). Like OpenAI, the format is taken
  from the file's name (``Invalid file format`` otherwise), and the bytes must be that
  container (``Audio file might be corrupted or unsupported`` otherwise; a WAV must parse).
  The transcript is the configured ``reply``, else ``"<size> bytes of <ext> audio"``. The log
  entry gets ``form`` (the text fields) and ``files`` (field, filename, content type, size),
  as a multipart body has no ``json``.
- speech: JSON ``{model, input, voice, response_format, speed, instructions}`` in; audio bytes
  out, streamed in chunks (``chunk_delay`` and ``crash_after_chunks`` apply). ``wav`` is a
  real 24 kHz mono 16-bit WAV written by :mod:`wave`, its RIFF and ``data`` sizes then set to
  0xFFFFFFFF as OpenAI's streamed WAVs have them; ``pcm`` the bare samples. The stub encodes
  nothing else: ``mp3`` (the API's default), ``opus``, ``aac`` and ``flac`` get a 400 that
  says so. The tone lasts :func:`speech_seconds` of the input.

``latency`` and ``fail_status``/``fail_count`` apply to every POST after its validation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import re
import secrets
import time
import uuid
import wave
from array import array
from collections import OrderedDict
from typing import Any

from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
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
    truncate,
    word_count,
)
from rentahal.testing.stubs.state import StubState, split_chunks

_MODEL_CREATED = 1_700_000_000
_DONE = b"data: [DONE]\n\n"

_IMAGE_PARAMETERS = frozenset(
    {
        "prompt",
        "model",
        "n",
        "quality",
        "response_format",
        "size",
        "style",
        "user",
        "safety_identifier",
        "background",
        "moderation",
        "output_compression",
        "output_format",
        "partial_images",
        "stream",
    }
)
_GPT_IMAGE = ("gpt-image", "chatgpt-image")
_DEFAULT_IMAGE_MODEL = "dall-e-2"
_FREE_IMAGE_SIDES = (64, 2048)
_KEPT_IMAGE_FILES = 32

_SPEECH_PARAMETERS = frozenset(
    {"model", "input", "voice", "instructions", "response_format", "speed", "stream_format"}
)
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
_SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEECH_RATE = 24_000  # OpenAI's speech: 24 kHz, mono, 16-bit
_SPEECH_CHUNK = 8192
_MAX_SPEECH_INPUT = 4096

_TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
# file extension → the container its bytes must be in
_CONTAINER_OF = {
    "flac": "flac",
    "m4a": "mp4",
    "mp4": "mp4",
    "mp3": "mp3",
    "mpeg": "mp3",
    "mpga": "mp3",
    "oga": "ogg",
    "ogg": "ogg",
    "wav": "wav",
    "webm": "webm",
}
_MAX_AUDIO_BYTES = 25 * 1024 * 1024


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

    image_files: OrderedDict[str, bytes] = OrderedDict()  # images answered as URLs

    async def images_generations(request: Request) -> Response:
        refused = _check_api_key(request, state.api_key)
        if refused is not None:
            return refused
        payload = await json_object(request)
        if payload is None:
            return _error(400, "We could not parse the JSON body of your request.")
        checked = _check_image_request(payload, state.behaviour.models)
        if isinstance(checked, Response):
            return checked
        model, prompt, n, (width, height), response_format = checked
        await pause(request, state.behaviour.latency)
        failure = state.take_failure()
        if failure is not None:
            return _server_error(failure)

        pngs = await asyncio.to_thread(
            lambda: [_png(prompt, width, height, index) for index in range(n)]
        )
        gpt_image = model.startswith(_GPT_IMAGE)
        data: list[dict[str, Any]] = []
        for png in pngs:
            if gpt_image:
                data.append({"b64_json": base64.b64encode(png).decode()})
            elif response_format == "b64_json":
                data.append({"b64_json": base64.b64encode(png).decode(), "revised_prompt": prompt})
            else:
                name = f"img-{uuid.uuid4().hex}.png"
                image_files[name] = png
                while len(image_files) > _KEPT_IMAGE_FILES:
                    image_files.popitem(last=False)
                url = str(request.url_for("image_file", name=name))
                data.append({"url": url, "revised_prompt": prompt})
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gpt_image:
            tokens = len(prompt.split())
            body |= {
                "background": "opaque",
                "output_format": "png",
                "quality": "high",
                "size": f"{width}x{height}",
                "usage": {
                    "input_tokens": tokens,
                    "input_tokens_details": {"image_tokens": 0, "text_tokens": tokens},
                    "output_tokens": 4160 * n,
                    "total_tokens": tokens + 4160 * n,
                },
            }
        return JSONResponse(body)

    async def image_file(request: Request) -> Response:
        png = image_files.get(request.path_params["name"])
        if png is None:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(png, media_type="image/png")

    async def audio_transcriptions(request: Request) -> Response:
        entry = _own_log_entry(state, request)  # first, before anything awaits
        refused = _check_api_key(request, state.api_key)
        if refused is not None:
            return refused
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            return _error(
                400,
                f"Invalid Content-Type header ({content_type or 'none'}), expected "
                "multipart/form-data. (HINT: If you're using curl, you can pass "
                "-H 'Content-Type: multipart/form-data')",
            )
        try:
            form = await request.form()
        except (HTTPException, MultiPartException) as exc:
            return _error(400, f"Could not parse multipart form: {exc}")
        fields = {name: value for name, value in form.multi_items() if isinstance(value, str)}
        uploads = [
            (name, value) for name, value in form.multi_items() if isinstance(value, UploadFile)
        ]
        if entry is not None:
            entry["form"] = fields
            entry["files"] = [
                {
                    "field": name,
                    "filename": upload.filename,
                    "content_type": upload.content_type,
                    "size": upload.size,
                }
                for name, upload in uploads
            ]
        upload = next((value for name, value in uploads if name == "file"), None)
        try:
            if upload is None:
                return _missing("file")
            audio = await upload.read()
        finally:
            await form.close()
        checked = _check_transcription(fields, upload.filename or "", audio, state)
        if isinstance(checked, Response):
            return checked
        extension, seconds, response_format = checked
        await pause(request, state.behaviour.latency)
        failure = state.take_failure()
        if failure is not None:
            return _server_error(failure)

        reply = state.behaviour.reply
        text = reply if reply is not None else f"{len(audio)} bytes of {extension} audio"
        return _transcription(text, seconds, fields.get("language"), response_format)

    async def audio_speech(request: Request) -> Response:
        refused = _check_api_key(request, state.api_key)
        if refused is not None:
            return refused
        payload = await json_object(request)
        if payload is None:
            return _error(400, "We could not parse the JSON body of your request.")
        checked = _check_speech_request(payload, state.behaviour.models)
        if isinstance(checked, Response):
            return checked
        text, response_format, speed = checked
        await pause(request, state.behaviour.latency)
        failure = state.take_failure()
        if failure is not None:
            return _server_error(failure)

        samples = await asyncio.to_thread(_tone, speech_seconds(text, speed))
        if response_format == "wav":
            audio, media_type = _streamed_wav(samples), "audio/wav"
        else:
            audio, media_type = samples, "audio/pcm"
        chunks = [audio[at : at + _SPEECH_CHUNK] for at in range(0, len(audio), _SPEECH_CHUNK)]
        return StreamingResponse(paced(request, state, chunks), media_type=media_type)

    return build_app(
        state,
        [
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/images/generations", images_generations, methods=["POST"]),
            Route("/v1/images/files/{name}", image_file, methods=["GET"], name="image_file"),
            Route("/v1/audio/transcriptions", audio_transcriptions, methods=["POST"]),
            Route("/v1/audio/speech", audio_speech, methods=["POST"]),
        ],
    )


def _own_log_entry(state: StubState, request: Request) -> dict[str, Any] | None:
    """This request's entry in the stub's log, to add what a JSON log cannot show. The
    tracking middleware logs a request just before calling the app, with no suspension point
    in between, so until the handler first awaits, the newest entry is its own."""
    if not state.requests:
        return None
    entry = state.requests[-1]
    same = entry["path"] == request.scope["path"] and entry["method"] == request.method
    return entry if same and entry["outcome"] is None else None


def _unknown_parameter(payload: dict[str, Any], known: frozenset[str]) -> Response | None:
    unknown = sorted(set(payload) - known)
    if unknown:
        return _error(400, f"Unrecognized request argument supplied: {unknown[0]}")
    return None


def _image_sizes(model: str) -> tuple[str, ...] | None:
    """The sizes a model takes, or None for any ``WxH`` (non-OpenAI models)."""
    if model.startswith("dall-e-3"):
        return ("1024x1024", "1792x1024", "1024x1792")
    if model.startswith("dall-e"):
        return ("256x256", "512x512", "1024x1024")
    if model.startswith(_GPT_IMAGE):
        return ("1024x1024", "1536x1024", "1024x1536", "auto")
    return None


def _prompt_limit(model: str) -> int:
    if model.startswith("dall-e-3"):
        return 4000
    if model.startswith("dall-e"):
        return 1000
    return 32_000


def _check_image_request(
    payload: dict[str, Any], models: list[str]
) -> Response | tuple[str, str, int, tuple[int, int], str]:
    """(model, prompt, n, (width, height), response_format), or the error OpenAI answers."""
    unknown = _unknown_parameter(payload, _IMAGE_PARAMETERS)
    if unknown is not None:
        return unknown
    model = payload.get("model")
    if model is None:
        model = _DEFAULT_IMAGE_MODEL
    elif not isinstance(model, str) or model not in models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _error(404, message, code="model_not_found")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        return _missing("prompt")
    if not prompt.strip():
        return _error(400, "Invalid 'prompt': empty string.", param="prompt", code="empty_string")
    limit = _prompt_limit(model)
    if len(prompt) > limit:
        return _too_long("prompt", prompt, limit)
    gpt_image = model.startswith(_GPT_IMAGE)
    for legacy in ("response_format", "style"):
        if gpt_image and legacy in payload:
            return _error(
                400, f"Unknown parameter: '{legacy}'.", param=legacy, code="unknown_parameter"
            )
    n = payload.get("n", 1)
    most = 1 if model.startswith("dall-e-3") else 10
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= most:
        return _error(
            400,
            f"Invalid 'n': integer out of range. Expected a value between 1 and {most}, "
            f"but got {n!r} instead.",
            param="n",
            code="invalid_value",
        )
    response_format = payload.get("response_format", "url")
    if response_format not in ("url", "b64_json"):
        return _invalid_value("response_format", response_format, ("url", "b64_json"))
    size = payload.get("size", "auto" if gpt_image else "1024x1024")
    allowed = _image_sizes(model)
    if allowed is not None:
        if size not in allowed:
            return _invalid_value("size", size, allowed)
        dimensions = (1024, 1024) if size == "auto" else _parse_size(size)
    else:
        dimensions = _parse_size(size)
        low, high = _FREE_IMAGE_SIDES
        if dimensions is None or not all(low <= side <= high for side in dimensions):
            return _error(
                400,
                f"Invalid value: {size!r}. The size must be WIDTHxHEIGHT with sides between "
                f"{low} and {high}.",
                param="size",
                code="invalid_value",
            )
    assert dimensions is not None  # every allowed fixed size parses
    return model, prompt, n, dimensions, response_format


def _parse_size(size: object) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size) if isinstance(size, str) else None
    return (int(match[1]), int(match[2])) if match else None


def _png(prompt: str, width: int, height: int, index: int) -> bytes:
    """A real PNG of the size asked for, its colours drawn from the prompt's hash."""
    digest = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    ImageDraw.Draw(image).rectangle(
        (width // 4, height // 4, width * 3 // 4, height * 3 // 4),
        fill=(digest[3], digest[4], digest[5]),
    )
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def sniff_container(audio: bytes) -> str | None:
    """The container the bytes are in, by their signature (what a decoder would find)."""
    if audio[:4] == b"RIFF" and audio[8:12] == b"WAVE":
        return "wav"
    if audio[:4] == b"OggS":
        return "ogg"
    if audio[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if audio[:4] == b"fLaC":
        return "flac"
    if audio[4:8] == b"ftyp":
        return "mp4"
    if audio[:3] == b"ID3" or (len(audio) > 1 and audio[0] == 0xFF and audio[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def _check_transcription(
    fields: dict[str, str], filename: str, audio: bytes, state: StubState
) -> Response | tuple[str, float, str]:
    """(extension, seconds of audio, response_format), or the error OpenAI answers."""
    model = fields.get("model")
    if not model:
        return _error(400, "you must provide a model parameter")
    if model not in state.behaviour.models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _error(404, message, code="model_not_found")
    response_format = fields.get("response_format", "json")
    if response_format not in _TRANSCRIPTION_FORMATS:
        return _invalid_value("response_format", response_format, _TRANSCRIPTION_FORMATS)
    language = fields.get("language")
    if language is not None and not re.fullmatch(r"[a-z]{2}", language):
        return _error(
            400,
            f"Invalid language '{language}'. Language parameter must be specified in "
            "ISO-639-1 format.",
            param="language",
            code="invalid_language_format",
        )
    if len(audio) > _MAX_AUDIO_BYTES:
        return _error(
            413, f"Maximum content size limit ({_MAX_AUDIO_BYTES}) exceeded ({len(audio)} bytes)."
        )
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension not in _AUDIO_EXTENSIONS:
        return _error(400, f"Invalid file format. Supported formats: {list(_AUDIO_EXTENSIONS)}")
    corrupted = _error(
        400, "Audio file might be corrupted or unsupported", param="file", code="invalid_value"
    )
    if sniff_container(audio) != _CONTAINER_OF[extension]:
        return corrupted
    seconds = len(audio) / 16_000  # about 128 kbit/s, for containers this stub cannot read
    if extension == "wav":
        try:
            with wave.open(io.BytesIO(audio)) as recording:
                seconds = recording.getnframes() / recording.getframerate()
        except (wave.Error, EOFError, ZeroDivisionError):
            return corrupted
    return extension, seconds, response_format


def _transcription(
    text: str, seconds: float, language: str | None, response_format: str
) -> Response:
    """The transcript in the asked-for format (one segment spanning the audio)."""
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    if response_format in ("srt", "vtt"):
        comma = "," if response_format == "srt" else "."
        span = f"{_timestamp(0.0, comma)} --> {_timestamp(seconds, comma)}"
        cue = f"1\n{span}\n{text}\n" if response_format == "srt" else f"WEBVTT\n\n{span}\n{text}\n"
        return PlainTextResponse(cue)
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if response_format == "json":
        return JSONResponse({"text": text, "usage": usage})
    segment = {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": round(seconds, 2),
        "text": text,
        "tokens": list(range(50364, 50364 + len(text.split()))),
        "temperature": 0.0,
        "avg_logprob": -0.25,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.01,
    }
    return JSONResponse(
        {
            "task": "transcribe",
            "language": "english" if language in (None, "en") else language,
            "duration": round(seconds, 2),
            "text": text,
            "segments": [segment],
            "usage": usage,
        }
    )


def _timestamp(seconds: float, comma: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{comma}{millis:03d}"


def _check_speech_request(
    payload: dict[str, Any], models: list[str]
) -> Response | tuple[str, str, float]:
    """(input, response_format, speed), or the error OpenAI answers."""
    unknown = _unknown_parameter(payload, _SPEECH_PARAMETERS)
    if unknown is not None:
        return unknown
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        return _error(400, "you must provide a model parameter")
    if model not in models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _error(404, message, code="model_not_found")
    text = payload.get("input")
    if not isinstance(text, str):
        return _missing("input")
    if not text:
        return _error(400, "Invalid 'input': empty string.", param="input", code="empty_string")
    if len(text) > _MAX_SPEECH_INPUT:
        return _too_long("input", text, _MAX_SPEECH_INPUT)
    voice = payload.get("voice")
    if voice is None:
        return _missing("voice")
    custom = isinstance(voice, dict) and isinstance(voice.get("id"), str)
    if not custom and voice not in VOICES:
        return _invalid_value("voice", voice, VOICES)
    response_format = payload.get("response_format", "mp3")
    if response_format not in _SPEECH_FORMATS:
        return _invalid_value("response_format", response_format, _SPEECH_FORMATS)
    if response_format not in ("wav", "pcm"):
        return _error(
            400,
            f"This stub encodes speech only as wav or pcm, not {response_format}.",
            param="response_format",
            code="unsupported_value",
        )
    speed = payload.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4:
        return _error(
            400,
            f"Invalid 'speed': expected a number between 0.25 and 4.0, got {speed!r}.",
            param="speed",
            code="invalid_value",
        )
    stream_format = payload.get("stream_format", "audio")
    if stream_format != "audio":
        return _error(
            400,
            f"This stub streams speech only as audio, not {stream_format!r}.",
            param="stream_format",
            code="unsupported_value",
        )
    return text, response_format, float(speed)


def speech_seconds(text: str, speed: float = 1.0) -> float:
    """How long the stub's speech of ``text`` lasts: 50 ms a character, 0.25-10 s, / speed."""
    return min(max(0.05 * len(text), 0.25), 10.0) / speed


def _tone(seconds: float) -> bytes:
    """16-bit mono samples of a 200 Hz tone at ``SPEECH_RATE``."""
    samples_per_cycle = SPEECH_RATE // 200
    cycle = array(
        "h",
        (
            round(8000 * math.sin(2 * math.pi * i / samples_per_cycle))
            for i in range(samples_per_cycle)
        ),
    )
    whole, rest = divmod(round(seconds * SPEECH_RATE), samples_per_cycle)
    return (cycle * whole + cycle[:rest]).tobytes()


def _streamed_wav(samples: bytes) -> bytes:
    """A WAV written by :mod:`wave`, then with the size fields OpenAI streams (0xFFFFFFFF:
    the length is not known when the header goes out)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SPEECH_RATE)
        wav.writeframes(samples)
    data = bytearray(out.getvalue())
    unknown = b"\xff\xff\xff\xff"
    data[4:8] = unknown
    at = data.index(b"data", 12)
    data[at + 4 : at + 8] = unknown
    return bytes(data)


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


def _missing(param: str) -> Response:
    return _error(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _invalid_value(param: str, value: object, supported: tuple[str, ...]) -> Response:
    listed = ", ".join(f"'{option}'" for option in supported)
    return _error(
        400,
        f"Invalid value: {value!r}. Supported values are: {listed}.",
        param=param,
        code="invalid_value",
    )


def _too_long(param: str, value: str, limit: int) -> Response:
    return _error(
        400,
        f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
        f"but got a string with length {len(value)} instead.",
        param=param,
        code="string_above_max_length",
    )


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
