"""The worker protocol's messages, one schema per role (SPEC §5.1, the seed's workers).

Every field is bounded: a worker is reachable by whoever holds its address, and a request
it cannot serve must get a clear 4xx, not an out-of-memory.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PROMPT_CHARS = 32_000
MAX_AUDIO_B64 = 34 * 1024 * 1024  # ~25 MB of audio, the common speech-API limit
MAX_IMAGE_B64 = 27 * 1024 * 1024  # ~20 MB of image

Role = Literal["stt", "tts", "chat", "vision", "imagine", "proxy"]
ROLES: tuple[str, ...] = ("stt", "tts", "chat", "vision", "imagine", "proxy")


class _Request(BaseModel):
    # Brokers send the generic fields (type, model_type, model_name) to every worker;
    # a role ignores what it does not use, as the seed's workers did.
    model_config = ConfigDict(extra="ignore")


class ChatRequest(_Request):
    """Chat and vision: `{prompt, type, model_type, model_name, image?}` → `{response}`;
    with `"stream": true`, NDJSON lines `{response, done}` instead (see `worker/app.py`)."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    type: str = "chat"
    model_type: str = "worker_node"
    model_name: str = Field(default="", max_length=200)
    image: str | None = Field(default=None, max_length=MAX_IMAGE_B64)
    options: dict[str, Any] = Field(default_factory=dict, max_length=20)
    stream: bool = False


class ChatResponse(BaseModel):
    response: str


class SttRequest(_Request):
    """The seed's Whisper worker request; per-request settings override the worker's."""

    audio: str = Field(min_length=1, max_length=MAX_AUDIO_B64)
    language: str | None = Field(default=None, min_length=2, max_length=8)
    task: Literal["transcribe", "translate"] = "transcribe"
    beam_size: int | None = Field(default=None, ge=1, le=10)
    vad_filter: bool | None = None
    word_timestamps: bool = False
    # Words the audio is likely to hold ("Computer, chat, …" in voice mode): a small model
    # hears an isolated "chat" as "jet" unless it is told to expect it.
    hotwords: str | None = Field(default=None, max_length=1000)
    # One decoding temperature, without the retries at higher ones that a hard clip gets
    # otherwise (seconds each): voice commands want a quick answer more than a perfect one.
    temperature: float | None = Field(default=None, ge=0, le=1)


class SttSegment(BaseModel):
    id: int
    start: float
    end: float
    text: str


class SttResponse(BaseModel):
    text: str
    segments: list[SttSegment]
    language: str
    processing_time: float


class TtsRequest(_Request):
    """The seed's Bark worker request; temperatures only matter to engines that sample."""

    prompt: str = Field(min_length=1, max_length=4_000)
    speaker: str | None = Field(default=None, max_length=100)
    text_temp: float = Field(default=0.7, ge=0.0, le=1.5)
    waveform_temp: float = Field(default=0.7, ge=0.0, le=1.5)


class TtsResponse(BaseModel):
    audio_base64: str  # a WAV file
    sample_rate: int


class ImagineRequest(_Request):
    """Text to image, with the SD web UI's defaults and bounds."""

    prompt: str = Field(min_length=1, max_length=4_000)
    negative_prompt: str = Field(default="", max_length=4_000)
    steps: int = Field(default=50, ge=1, le=150)
    cfg_scale: float = Field(default=7.0, ge=0.0, le=30.0)
    width: int = Field(default=512, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=512, ge=64, le=2048, multiple_of=8)
    seed: int = Field(default=-1, ge=-1, le=2**32 - 1)


class ImagineResponse(BaseModel):
    image_base64: str  # a PNG file
    width: int
    height: int
    seed: int


REQUEST_SCHEMAS: dict[str, type[_Request]] = {
    "stt": SttRequest,
    "tts": TtsRequest,
    "chat": ChatRequest,
    "vision": ChatRequest,
    "imagine": ImagineRequest,
}
