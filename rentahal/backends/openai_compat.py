"""Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, LocalAI, OpenAI itself):
`POST /v1/chat/completions` (SSE when streaming) for chat and vision,
`POST /v1/images/generations` for imagine, `POST /v1/audio/transcriptions` (a multipart
upload) for speech to text, `POST /v1/audio/speech` for text to speech, and `GET /v1/models`
for health.

Chat, every query's hot path, is little protocol (a JSON body; a JSON answer or an SSE stream
of deltas) and is spoken over the broker's pooled client: the official SDK cost a third of
the broker's own work per query (request building, response models, an HTTP stack of its
own). The media endpoints, with their multipart uploads and binary answers, go through the
`openai` SDK, one client per API root and key, with its retries off (the scheduler decides
about retries); it is imported on first use, as it takes most of a second to import.

Media results go back as the base64 the scheduler expects: a PNG for imagine, a WAV for tts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import httpx

from rentahal.backends.base import (
    Backend,
    BackendError,
    BackendRequest,
    Endpoint,
    HealthReport,
    error_message,
    generation_options,
    stream_object,
)
from rentahal.backends.transport import Reply, post_json
from rentahal.media import BadMedia, decode_base64
from rentahal.media.images import generated_image

if TYPE_CHECKING:
    import openai
    from openai import Omit
    from openai.types.chat import ChatCompletionMessageParam

RESULT_TYPE = {"imagine": "image", "tts": "audio"}
DEFAULT_STT_MODEL = "whisper-1"
DEFAULT_TTS_MODEL = "tts-1"
DEFAULT_VOICE = "alloy"

# Image sizes, (width, height). OpenAI's image models take only a few sizes each (API
# reference, "Create image": `size`); the one nearest the asked-for shape, then area, is sent.
# Model names are matched by prefix, so dated snapshots (`gpt-image-1.5`, …) find their family.
FIXED_IMAGE_SIZES: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("dall-e-3", ((1024, 1024), (1792, 1024), (1024, 1792))),
    ("dall-e", ((256, 256), (512, 512), (1024, 1024))),  # dall-e-2
    ("gpt-image", ((1024, 1024), (1536, 1024), (1024, 1536))),
    ("chatgpt-image", ((1024, 1024), (1536, 1024), (1024, 1536))),
)
FIXED_DEFAULT_SIDE = 1024
# Any other model (Stable Diffusion behind LocalAI, vLLM-Omni…) gets the asked-for size, each
# side bounded and rounded down to a multiple of 8 as latent-diffusion models need; 512×512
# (SD 1.5's native size, the SD web UI's default) when none is asked for.
FREE_DEFAULT_SIDE = 512
FREE_SIDE_BOUNDS = (64, 2048)
FREE_SIDE_STEP = 8
# GPT image models always answer base64 and refuse `response_format` (HTTP 400).
BASE64_ONLY_IMAGE_MODELS = ("gpt-image", "chatgpt-image")
# One server often serves every kind (api.openai.com lists dozens of models, chat ones
# first), and a worker's models are what the server lists. When the user named no model, a
# media query takes the first listed model whose name says it does that kind of work, rather
# than the first listed at all; with none such, the first listed.
MODEL_HINTS = {
    "imagine": ("gpt-image", "dall-e", "image", "diffusion", "sdxl", "flux"),
    "stt": ("whisper", "transcribe"),
    "tts": ("tts",),
}


def _api_root(endpoint: Endpoint) -> str:
    url = endpoint.url
    return url if url.endswith("/v1") else f"{url}/v1"


def user_message(request: BackendRequest) -> ChatCompletionMessageParam:
    """The prompt, with the image as an image content part (a JPEG data URL) if there is one."""
    if request.image is None:
        return {"role": "user", "content": request.prompt}
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": request.prompt},
            {
                "type": "image_url",
                "image_url": {"url": f"data:image/jpeg;base64,{request.image}"},
            },
        ],
    }


def media_model(endpoint: Endpoint, request: BackendRequest) -> str:
    """The model a media query asks the server for (see `MODEL_HINTS`)."""
    if request.model_name and request.model_name != endpoint.name:
        return request.model  # the user's choice
    hints = MODEL_HINTS.get(request.query_type, ())
    fitting = (m for m in endpoint.models if any(hint in m.lower() for hint in hints))
    return next(fitting, request.model)


def _model_family(model: str) -> str:
    return model.lower().rsplit("/", 1)[-1]  # "openai/dall-e-3" on routers and proxies


def _side(value: object) -> int | None:
    """A width or height from the user's options: a positive whole number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 1 or value != int(value):
        return None
    return int(value)


def image_size(model: str, options: Mapping[str, Any]) -> tuple[int, int]:
    """The size to ask the server for, from `options` width/height, bounded to what the
    model accepts (see `FIXED_IMAGE_SIZES` and the free-size bounds above)."""
    family = _model_family(model)
    fixed = next((sizes for prefix, sizes in FIXED_IMAGE_SIZES if family.startswith(prefix)), ())
    default = FIXED_DEFAULT_SIDE if fixed else FREE_DEFAULT_SIDE
    width = _side(options.get("width")) or default
    height = _side(options.get("height")) or default
    if fixed:
        aspect, area = math.log(width / height), width * height
        return min(
            fixed,
            key=lambda s: (abs(math.log(s[0] / s[1]) - aspect), abs(math.log(s[0] * s[1] / area))),
        )
    low, high = FREE_SIDE_BOUNDS

    def bounded(side: int) -> int:
        return min(max(side, low), high) // FREE_SIDE_STEP * FREE_SIDE_STEP

    return bounded(width), bounded(height)


def audio_container(raw: bytes) -> tuple[str, str]:
    """(file extension, MIME type) of a recording, from its magic bytes. OpenAI's
    transcription API tells formats apart by the uploaded file's name, and browsers record
    webm/opus (Chromium, Firefox), ogg/opus (Firefox) or mp4/AAC (Safari); the page may also
    send WAV. An unknown container goes as `speech.bin`, for the server to judge."""
    if raw[:4] == b"RIFF" and raw[8:12] == b"WAVE":
        return "wav", "audio/wav"
    if raw[:4] == b"OggS":
        return "ogg", "audio/ogg"
    if raw[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska/WebM
        return "webm", "audio/webm"
    if raw[:4] == b"fLaC":
        return "flac", "audio/flac"
    if raw[4:8] == b"ftyp":  # ISO base media: mp4/m4a
        return "mp4", "audio/mp4"
    if raw[:3] == b"ID3" or _mpeg_audio_frame(raw):
        return "mp3", "audio/mpeg"
    return "bin", "application/octet-stream"


def _mpeg_audio_frame(raw: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, a valid version and a non-zero layer (AAC's
    ADTS shares the sync bits but has layer 0)."""
    if len(raw) < 2 or raw[0] != 0xFF or raw[1] & 0xE0 != 0xE0:
        return False
    return (raw[1] >> 3) & 0b11 != 0b01 and (raw[1] >> 1) & 0b11 != 0


def complete_wav(data: bytes) -> bytes:
    """The WAV with its RIFF and `data` sizes set to what it holds. OpenAI streams speech, so
    its WAV header carries 0xFFFFFFFF placeholders for both; strict readers (Python's `wave`,
    SDL) would then see hours of audio or refuse the file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise BackendError("worker answered audio that is not WAV")
    wav = bytearray(data)
    position = 12
    while position + 8 <= len(wav):
        size = int.from_bytes(wav[position + 4 : position + 8], "little")
        if wav[position : position + 4] == b"data":
            held = min(size, len(wav) - position - 8)
            wav[position + 4 : position + 8] = held.to_bytes(4, "little")
            wav[4:8] = (len(wav) - 8).to_bytes(4, "little")
            return bytes(wav)
        position += 8 + size + (size & 1)
    raise BackendError("worker answered a WAV with no audio data")


def _failure(exc: Exception) -> BackendError:
    """The SDK's error as the scheduler understands it: an HTTP status keeps its number (so
    400 means the input was refused), anything else is the worker failing."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return BackendError(
            f"worker answered HTTP {exc.status_code}: {str(exc.message)[:300]}",
            status=exc.status_code,
        )
    if isinstance(exc, openai.APIConnectionError):
        return BackendError(f"worker unreachable: {exc.__cause__ or exc}")
    return BackendError(f"worker error: {exc}")


async def _chat(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    request: BackendRequest,
    headers: dict[str, str],
) -> AsyncIterator[str]:
    """`POST /chat/completions`: the answer whole, or its deltas as the server streams them."""
    if not request.model:
        raise BackendError("no model named and the worker lists none")
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [user_message(request)],
        "stream": request.stream,
        **generation_options(request.options),
    }
    url = f"{_api_root(endpoint)}/chat/completions"
    async with post_json(client, url, body, headers) as response:
        if not request.stream:
            content = await response.aread()
            _raise_for_status(response, content)
            try:
                choices = json.loads(content)["choices"]
            except (ValueError, KeyError, TypeError) as exc:
                raise BackendError("worker answer is not a chat completion") from exc
            if not choices:
                raise BackendError("worker answered with no choices")
            yield _text(choices[0].get("message"))
            return
        if response.status_code != 200:
            _raise_for_status(response, await response.aread())
        async for delta in _deltas(response):
            yield delta


async def _deltas(response: Reply) -> AsyncIterator[str]:
    """The content deltas of an SSE chat stream, read to its end (so the connection goes back
    to the pool). An `error` event fails the request; a stream cut before `[DONE]` is taken
    as it came, as the SDK took it."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank lines between events, comments, `event:` names
        data = line[5:].strip()
        if data == "[DONE]":
            continue
        chunk = stream_object(data, "event")
        if "error" in chunk:
            raise BackendError(f"worker failed mid-answer: {error_message(chunk)}")
        choices = chunk.get("choices")
        if choices and isinstance(choices[0], dict) and (delta := _text(choices[0].get("delta"))):
            yield delta


def _text(message: object) -> str:
    """A chat message's (or delta's) text content; empty when it has none."""
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _raise_for_status(response: Reply, body: bytes) -> None:
    """An HTTP error keeps its status (a 400 means the input was refused), with the server's
    own message when it sends one in OpenAI's shape."""
    if response.status_code == 200:
        return
    try:
        detail = error_message(json.loads(body))
    except ValueError:
        detail = body[:300].decode("utf-8", "replace").strip()
    raise BackendError(
        f"worker answered HTTP {response.status_code}" + (f": {detail}" if detail else ""),
        status=response.status_code,
    )


class OpenAIBackend(Backend):
    kind = "openai"
    query_types = frozenset({"chat", "vision", "imagine", "stt", "tts"})

    def __init__(self) -> None:
        # SDK clients are cheap to keep and not free to build: one per (API root, key).
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}

    def result_type(self, query_type: str) -> str:
        return RESULT_TYPE.get(query_type, "text")

    async def probe(
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> HealthReport:
        return await self.probe_model_list(
            client,
            endpoint,
            f"{_api_root(endpoint)}/models",
            seconds,
            lambda body: (m["id"] for m in body["data"]),
        )

    def _sdk(self, endpoint: Endpoint) -> openai.AsyncOpenAI:
        key = endpoint.key or "none"
        root = _api_root(endpoint)
        sdk = self._clients.get((root, key))
        if sdk is None:
            import openai

            # The SDK brings its own HTTP stack (httpx2), so it keeps its own pool per worker.
            sdk = openai.AsyncOpenAI(api_key=key, base_url=root, max_retries=0)
            self._clients[(root, key)] = sdk
        return sdk

    async def generate(
        self, client: httpx.AsyncClient, endpoint: Endpoint, request: BackendRequest
    ) -> AsyncIterator[str]:
        media = {"imagine": self._imagine, "stt": self._transcribe, "tts": self._speak}
        one_piece = media.get(request.query_type)
        if one_piece is None:
            async for delta in _chat(client, endpoint, request, self.auth_headers(endpoint)):
                yield delta
            return
        import openai

        try:
            result = await one_piece(self._sdk(endpoint), media_model(endpoint, request), request)
        except openai.OpenAIError as exc:
            raise _failure(exc) from exc
        yield result

    async def _imagine(self, sdk: openai.AsyncOpenAI, model: str, request: BackendRequest) -> str:
        """One image, base64 PNG."""
        import openai

        width, height = image_size(model, request.options)
        base64_only = _model_family(model).startswith(BASE64_ONLY_IMAGE_MODELS)
        response_format: Literal["b64_json"] | Omit = openai.omit if base64_only else "b64_json"
        answer = await sdk.images.generate(
            prompt=request.prompt,
            model=model or openai.omit,  # none at all: the server's default
            size=f"{width}x{height}",
            n=1,
            response_format=response_format,
        )
        image = answer.data[0].b64_json if answer.data else None
        if not image:
            raise BackendError("worker answered with no base64 image")
        try:
            return await asyncio.to_thread(generated_image, image)
        except BadMedia as exc:
            raise BackendError(f"worker image: {exc.message}") from None

    async def _transcribe(
        self, sdk: openai.AsyncOpenAI, model: str, request: BackendRequest
    ) -> str:
        """The text of the recording, uploaded as a file named for its container."""
        import openai

        try:
            audio = decode_base64(request.audio or "", what="audio")
        except BadMedia as exc:
            raise BackendError(exc.message, status=400) from None
        extension, mime = audio_container(audio)
        language = request.options.get("language")
        transcript = await sdk.audio.transcriptions.create(
            model=model or DEFAULT_STT_MODEL,
            file=(f"speech.{extension}", audio, mime),
            language=language if isinstance(language, str) and language else openai.omit,
            response_format="json",
        )
        return transcript.text.strip()

    async def _speak(self, sdk: openai.AsyncOpenAI, model: str, request: BackendRequest) -> str:
        """The prompt spoken, base64 WAV."""
        speaker = request.options.get("speaker")
        speech = await sdk.audio.speech.create(
            model=model or DEFAULT_TTS_MODEL,
            voice=speaker if isinstance(speaker, str) and speaker else DEFAULT_VOICE,
            input=request.prompt,
            response_format="wav",
        )
        return base64.b64encode(complete_wav(speech.content)).decode()
