"""The worker node (`rentahal worker`, SPEC §5.1 and §6) with its real offline models.

Speech, chat and vision workers run as real processes on 127.0.0.1, each started once per
module: piper speaks, faster-whisper (tiny.en) listens, llama.cpp runs SmolLM2, RapidOCR
reads. What needs control over the engine itself (a model that is still loading, a load
that fails, the worker key, outbound de-duplication) runs in-process through ASGI.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import pytest
import pytest_asyncio
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rentahal.media.images import decode_image
from rentahal.testing.broker import base_env
from rentahal.testing.voice import STEADY_VOICE
from rentahal.testing.waiting import eventually
from rentahal.testing.worker import WorkerProcess
from rentahal.worker.app import MAX_BODY, create_worker_app
from rentahal.worker.engines import BadInput, Engine, EngineOptions
from rentahal.worker.engines.echo import EchoEngine
from rentahal.worker.engines.espeak import EspeakEngine
from rentahal.worker.outbound import _Runs
from rentahal.worker.protocol import ChatRequest, ChatResponse, TtsRequest, TtsResponse
from rentahal.worker.service import WorkerService
from rentahal.worker.speakers import ESPEAK_PRESETS

pytestmark = pytest.mark.offline_models

SENTENCE = "what is the weather today"
ESPEAK_SENTENCE = "please open the door"
# Something for each preset to say in its own language.
PRESET_TEXT = {
    "en_male_1": "good morning, how are you",
    "en_female_1": "good morning, how are you",
    "german_male": "guten Morgen, wie geht es dir",
    "german_female": "guten Morgen, wie geht es dir",
    "spanish_male": "buenos días, cómo estás",
    "spanish_female": "buenos días, cómo estás",
}
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
WORKER_KEY = "k" * 20


# --- helpers --------------------------------------------------------------------------------


def plain_words(text: str) -> str:
    """Lower-cased, punctuation gone, single spaces: what a transcript is compared by."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wav_seconds(data: bytes, sample_rate: int) -> float:
    """The duration of a 16-bit mono WAV whose header is right about its own sizes."""
    assert data[:4] == b"RIFF", data[:16]
    assert data[8:12] == b"WAVE", data[:16]
    assert int.from_bytes(data[4:8], "little") == len(data) - 8, "RIFF size is wrong"
    offset, data_size = 12, None
    while offset + 8 <= len(data):
        chunk, size = (
            data[offset : offset + 4],
            int.from_bytes(data[offset + 4 : offset + 8], "little"),
        )
        if chunk == b"data":
            assert offset + 8 + size == len(data), "the data chunk's size is not its length"
            data_size = size
            break
        offset += 8 + size + (size & 1)
    assert data_size is not None, "no data chunk"
    with wave.open(io.BytesIO(data)) as audio:
        assert audio.getframerate() == sample_rate
        assert audio.getnchannels() == 1
        assert audio.getsampwidth() == 2
        frames = audio.readframes(audio.getnframes())
        assert len(frames) == audio.getnframes() * 2 == data_size
        return audio.getnframes() / sample_rate


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return b64(buffer.getvalue())


def hello_world(mode: str = "RGB") -> Image.Image:
    """Large black "HELLO WORLD" on white (on transparent, for RGBA)."""
    background: Any = (255, 255, 255, 0) if mode == "RGBA" else "white"
    ink: Any = (0, 0, 0, 255) if mode == "RGBA" else "black"
    image = Image.new(mode, (900, 220), background)
    font = ImageFont.truetype(FONT, 72)
    ImageDraw.Draw(image).text((30, 60), "HELLO WORLD", fill=ink, font=font)
    return image


def assert_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """A clear error: the status, and `{"error": {"code", "message"}}` with that code."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


async def predict(
    client: httpx.AsyncClient, worker: WorkerProcess, body: dict[str, Any], path: str = "/predict"
) -> httpx.Response:
    return await client.post(f"{worker.url}{path}", json=body)


@dataclass
class Streamed:
    """A streamed `/predict` answer: its content type, its lines, and when each arrived."""

    content_type: str
    lines: list[dict[str, Any]]
    arrived: list[float]

    @property
    def text(self) -> str:
        return "".join(line.get("response", "") for line in self.lines)


async def predict_streamed(
    client: httpx.AsyncClient,
    worker: WorkerProcess,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Streamed:
    """POST `body` with `"stream": true` and read the NDJSON answer line by line."""
    async with client.stream(
        "POST", f"{worker.url}/predict", json=body | {"stream": True}, headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        answer = Streamed(response.headers["content-type"], [], [])
        async for line in response.aiter_lines():
            if line.strip():
                answer.lines.append(json.loads(line))
                answer.arrived.append(time.monotonic())
    return answer


def assert_well_formed(answer: Streamed) -> None:
    """NDJSON pieces `{response, done: false}`, then one `{response: "", done: true}`."""
    assert answer.content_type.split(";")[0] == "application/x-ndjson"
    *pieces, last = answer.lines
    assert last == {"response": "", "done": True}
    assert pieces
    for piece in pieces:
        assert set(piece) == {"response", "done"}
        assert piece["done"] is False
        assert isinstance(piece["response"], str) and piece["response"]


async def load(client: httpx.AsyncClient, worker: WorkerProcess) -> dict[str, int]:
    return dict((await client.get(f"{worker.url}/health")).json()["load"])


async def oversized_chunks() -> AsyncIterator[bytes]:
    """A chunked body (no Content-Length) that grows one byte past the worker's limit."""
    left, chunk = MAX_BODY + 1, b"A" * (1024 * 1024)
    while left > 0:
        yield chunk[:left]
        left -= len(chunk)


async def post_with_declared_length(url: str, declared: int) -> tuple[int, dict[str, Any]]:
    """POST a tiny body whose Content-Length claims `declared` bytes, over a raw socket
    (HTTP clients refuse to send a body shorter than its header says)."""
    parsed = httpx.URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    try:
        writer.write(
            (
                f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
                '{"audio": "'
            ).encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            status = int(lines[0].split()[1])
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            length = int({k.lower(): v for k, v in headers.items()}["content-length"])
            body = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    return status, body


# --- fixtures -------------------------------------------------------------------------------


async def _serve(role: str, *args: str) -> AsyncIterator[WorkerProcess]:
    worker = WorkerProcess(role, *args)
    async with worker:
        yield worker
    print(f"--- {role} worker output ---\n{worker.output}")  # shown when a test fails


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tts() -> AsyncIterator[WorkerProcess]:
    async for worker in _serve("tts", "--engine", "piper"):
        yield worker


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stt() -> AsyncIterator[WorkerProcess]:
    async for worker in _serve("stt"):
        yield worker


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def chat() -> AsyncIterator[WorkerProcess]:
    async for worker in _serve("chat", "--engine", "llama.cpp"):
        yield worker


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def echo() -> AsyncIterator[WorkerProcess]:
    async for worker in _serve("chat", "--engine", "echo"):
        yield worker


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def vision() -> AsyncIterator[WorkerProcess]:
    async for worker in _serve("vision", "--engine", "rapidocr"):
        yield worker


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60.0, trust_env=False) as http:
        yield http


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    engine = EspeakEngine(EngineOptions())
    engine.load()
    return engine


@pytest.fixture(scope="module")
def english_clip(espeak: EspeakEngine) -> str:
    """A short English sentence spoken by espeak-ng: good audio for the STT worker."""
    answer = espeak.run(TtsRequest(prompt=ESPEAK_SENTENCE))
    assert isinstance(answer, TtsResponse)
    return answer.audio_base64


# --- 1. speech round trip -------------------------------------------------------------------


async def test_piper_speech_is_transcribed_back_by_the_stt_worker(
    tts: WorkerProcess, stt: WorkerProcess, client: httpx.AsyncClient
) -> None:
    spoken = await predict(client, tts, {"prompt": SENTENCE, **STEADY_VOICE})
    assert spoken.status_code == 200, spoken.text
    speech = spoken.json()
    assert set(speech) == {"audio_base64", "sample_rate"}
    seconds = wav_seconds(base64.b64decode(speech["audio_base64"]), speech["sample_rate"])
    assert 0.6 < seconds < 5.0, seconds

    heard = await predict(client, stt, {"audio": speech["audio_base64"]})
    assert heard.status_code == 200, heard.text
    transcript = heard.json()
    assert set(transcript) == {"text", "segments", "language", "processing_time"}
    assert SENTENCE in plain_words(transcript["text"]), transcript
    assert transcript["language"] == "en"
    assert transcript["processing_time"] > 0
    assert transcript["segments"], transcript
    for index, segment in enumerate(transcript["segments"]):
        assert set(segment) == {"id", "start", "end", "text"}
        assert segment["id"] == index
        assert 0.0 <= segment["start"] <= segment["end"] <= seconds + 1.0, segment
        assert isinstance(segment["text"], str)
    joined = " ".join(segment["text"] for segment in transcript["segments"])
    assert plain_words(joined) == plain_words(transcript["text"])


# --- 2. espeak-ng ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(ESPEAK_PRESETS))
def test_espeak_preset_gives_a_wav_whose_header_fits_its_data(
    espeak: EspeakEngine, preset: str
) -> None:
    answer = espeak.run(TtsRequest(prompt=PRESET_TEXT[preset], speaker=preset))
    assert isinstance(answer, TtsResponse)
    data = base64.b64decode(answer.audio_base64)
    seconds = wav_seconds(data, answer.sample_rate)
    assert 0.5 < seconds < 6.0, seconds
    samples = memoryview(data[44:]).cast("h")
    assert max(abs(s) for s in samples) > 1000, "the speech is silent"


def test_espeak_refuses_a_speaker_it_has_no_voice_for(espeak: EspeakEngine) -> None:
    with pytest.raises(BadInput) as refused:
        espeak.run(TtsRequest(prompt="hello", speaker="klingon_male"))
    assert refused.value.code == "unknown_speaker"
    assert all(name in refused.value.message for name in ESPEAK_PRESETS)


async def test_espeak_english_is_transcribed_by_the_stt_worker(
    espeak: EspeakEngine, stt: WorkerProcess, client: httpx.AsyncClient
) -> None:
    answer = await asyncio.to_thread(espeak.run, TtsRequest(prompt=ESPEAK_SENTENCE))
    assert isinstance(answer, TtsResponse)
    heard = await predict(client, stt, {"audio": answer.audio_base64})
    assert heard.status_code == 200, heard.text
    assert ESPEAK_SENTENCE in plain_words(heard.json()["text"]), heard.json()


# --- 3. bad input ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BadCase:
    name: str
    status: int
    code: str | None
    request: Callable[[str], dict[str, Any]]  # good audio → httpx.post keyword arguments


STT_BAD: list[BadCase] = [
    BadCase(
        "not_audio",
        400,
        "bad_audio",
        lambda _: {"json": {"audio": b64(b"these bytes are plainly not audio " * 40)}},
    ),
    BadCase("invalid_base64", 400, "bad_audio", lambda _: {"json": {"audio": "@@ not base64 @@"}}),
    BadCase("missing_audio", 422, "invalid", lambda _: {"json": {"language": "en"}}),
    BadCase(
        "malformed_json",
        422,
        None,
        lambda _: {
            "content": b'{"audio": "AAAA", ',
            "headers": {"content-type": "application/json"},
        },
    ),
    BadCase("over_the_limit", 413, "too_large", lambda _: {"content": oversized_chunks()}),
    BadCase(
        "german_on_an_english_model",
        400,
        "unsupported_language",
        lambda audio: {"json": {"audio": audio, "language": "de"}},
    ),
]
TTS_BAD: list[BadCase] = [
    BadCase(
        "unknown_speaker",
        400,
        "unknown_speaker",
        lambda _: {"json": {"prompt": "hello", "speaker": "klingon_male"}},
    ),
    BadCase("prompt_too_long", 422, "invalid", lambda _: {"json": {"prompt": "a" * 4001}}),
    BadCase("empty_prompt", 422, "invalid", lambda _: {"json": {"prompt": ""}}),
    BadCase("no_prompt", 422, "invalid", lambda _: {"json": {"speaker": "en_male_1"}}),
    # Text with no sounds in it: piper makes no audio at all, which is the caller's doing.
    BadCase("nothing_to_speak", 400, "nothing_to_say", lambda _: {"json": {"prompt": "..."}}),
]


async def send_bad(
    client: httpx.AsyncClient, worker: WorkerProcess, case: BadCase, audio: str
) -> dict[str, Any]:
    response = await client.post(f"{worker.url}/predict", **case.request(audio))
    return assert_error(response, case.status, case.code)


async def assert_healthy(client: httpx.AsyncClient, worker: WorkerProcess) -> None:
    health = await client.get(f"{worker.url}/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "healthy"


@pytest.mark.parametrize("case", STT_BAD, ids=lambda case: case.name)
async def test_stt_answers_bad_input_with_a_clear_4xx(
    stt: WorkerProcess, client: httpx.AsyncClient, english_clip: str, case: BadCase
) -> None:
    error = await send_bad(client, stt, case, english_clip)
    if case.name == "missing_audio":
        assert any(field["field"] == "audio" for field in error["fields"]), error
    await assert_healthy(client, stt)


async def test_stt_refuses_a_body_whose_declared_length_is_over_the_limit(
    stt: WorkerProcess,
) -> None:
    status, body = await post_with_declared_length(f"{stt.url}/predict", MAX_BODY + 1)
    assert status == 413, body
    assert body["error"]["code"] == "too_large"
    assert str(MAX_BODY) in body["error"]["message"]


async def test_stt_keeps_serving_after_bad_input(
    stt: WorkerProcess, client: httpx.AsyncClient, english_clip: str
) -> None:
    for case in STT_BAD:
        await send_bad(client, stt, case, english_clip)
    await post_with_declared_length(f"{stt.url}/predict", MAX_BODY + 1)
    await assert_healthy(client, stt)
    heard = await predict(client, stt, {"audio": english_clip, "language": "en"})
    assert heard.status_code == 200, heard.text
    assert ESPEAK_SENTENCE in plain_words(heard.json()["text"])


async def test_stt_takes_a_browser_language_tag(
    stt: WorkerProcess, client: httpx.AsyncClient, english_clip: str
) -> None:
    # Browsers report "en-US"; an English model must take it as English.
    response = await predict(client, stt, {"audio": english_clip, "language": "en-US"})
    assert response.status_code == 200, response.text
    assert plain_words(ESPEAK_SENTENCE) in plain_words(response.json()["text"])


async def test_stt_hears_an_expected_word_that_it_would_mishear_alone(
    tts: WorkerProcess, stt: WorkerProcess, client: httpx.AsyncClient
) -> None:
    """Voice mode's "Chat." spoken alone: told the words to expect (`hotwords`) and held to
    one decoding pass (`temperature`), Whisper tiny writes "chat"."""
    spoken = await predict(client, tts, {"prompt": "Chat.", **STEADY_VOICE})
    assert spoken.status_code == 200, spoken.text
    clip = spoken.json()["audio_base64"]
    expecting = {"hotwords": "computer, chat, vision, imagine, shut up", "temperature": 0.0}
    heard = await predict(client, stt, {"audio": clip, **expecting})
    assert heard.status_code == 200, heard.text
    assert plain_words(heard.json()["text"]) == "chat"
    too_hot = await predict(client, stt, {"audio": clip, "temperature": 1.5})
    assert too_hot.status_code == 422


@pytest.mark.parametrize("case", TTS_BAD, ids=lambda case: case.name)
async def test_tts_answers_bad_input_with_a_clear_4xx(
    tts: WorkerProcess, client: httpx.AsyncClient, case: BadCase
) -> None:
    await send_bad(client, tts, case, "")
    await assert_healthy(client, tts)


async def test_tts_unknown_speaker_error_lists_the_available_speakers(
    tts: WorkerProcess, client: httpx.AsyncClient
) -> None:
    speakers = (await client.get(f"{tts.url}/health")).json()["speakers"]
    assert "en_male_1" in speakers
    response = await predict(client, tts, {"prompt": "hello", "speaker": "klingon_male"})
    error = assert_error(response, 400, "unknown_speaker")
    assert "klingon_male" in error["message"]
    for speaker in speakers:
        assert speaker in error["message"], (speaker, error)


async def test_tts_keeps_serving_after_bad_input(
    tts: WorkerProcess, client: httpx.AsyncClient
) -> None:
    for case in TTS_BAD:
        await send_bad(client, tts, case, "")
    await assert_healthy(client, tts)
    spoken = await predict(client, tts, {"prompt": "still here", "speaker": "en_male_1"})
    assert spoken.status_code == 200, spoken.text
    answer = spoken.json()
    assert wav_seconds(base64.b64decode(answer["audio_base64"]), answer["sample_rate"]) > 0.3


async def test_predict_with_a_trailing_slash_works_like_predict_for_tts(
    tts: WorkerProcess, client: httpx.AsyncClient
) -> None:
    answers = []
    for path in ("/predict", "/predict/"):
        response = await predict(client, tts, {"prompt": "hello there"}, path)
        assert response.status_code == 200, (path, response.text)
        answers.append(response.json())
    plain, slashed = answers
    assert set(plain) == set(slashed) == {"audio_base64", "sample_rate"}
    assert plain["sample_rate"] == slashed["sample_rate"]
    assert wav_seconds(base64.b64decode(slashed["audio_base64"]), slashed["sample_rate"]) > 0.3


async def test_predict_with_a_trailing_slash_works_like_predict_for_stt(
    stt: WorkerProcess, client: httpx.AsyncClient, english_clip: str
) -> None:
    answers = []
    for path in ("/predict", "/predict/"):
        response = await predict(client, stt, {"audio": english_clip}, path)
        assert response.status_code == 200, (path, response.text)
        answers.append(response.json())
    plain, slashed = answers
    assert plain["text"] == slashed["text"]
    assert ESPEAK_SENTENCE in plain_words(slashed["text"])


# --- 4. /health while loading ---------------------------------------------------------------


class GatedEngine(Engine):
    """A chat engine whose load waits until the test opens the gate."""

    role: ClassVar[str] = "chat"
    name: ClassVar[str] = "gated"

    def __init__(self, options: EngineOptions) -> None:
        super().__init__(options)
        self.gate = threading.Event()
        self.loading = threading.Event()

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return True

    def load(self) -> None:
        self.loading.set()
        if not self.gate.wait(timeout=60):
            raise RuntimeError("the test never opened the gate")

    @property
    def models(self) -> list[str]:
        return ["gated-model"]

    def run(self, request: BaseModel) -> BaseModel:
        assert isinstance(request, ChatRequest)
        return ChatResponse(response=request.prompt.upper())


class BrokenEngine(GatedEngine):
    name: ClassVar[str] = "broken"

    def load(self) -> None:
        raise RuntimeError("the weights file is truncated")


@pytest.fixture
def gated() -> Iterator[GatedEngine]:
    engine = GatedEngine(EngineOptions(slots=2))
    yield engine
    engine.gate.set()  # never leave a loading thread behind


def asgi_client(service: WorkerService, api_key: str | None = None) -> httpx.AsyncClient:
    app = create_worker_app(service, api_key=api_key)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker")


async def test_health_is_503_loading_until_the_model_has_loaded(gated: GatedEngine) -> None:
    service = WorkerService("chat", gated)
    async with asgi_client(service) as local:
        loading = asyncio.create_task(service.load())
        try:
            await eventually(lambda: asyncio.to_thread(gated.loading.is_set))
            health = await local.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "loading"
            assert health.json()["models"] == []
            assert_error(await local.post("/predict", json={"prompt": "hi"}), 503, "loading")

            gated.gate.set()

            async def ready() -> bool:
                return (await local.get("/health")).status_code == 200

            await eventually(ready)
        finally:
            gated.gate.set()
            await loading
        report = (await local.get("/health")).json()
        assert report["status"] == "healthy"
        assert report["role"] == "chat"
        assert report["engine"] == "gated"
        assert report["models"] == ["gated-model"]
        assert report["load"] == {"in_flight": 0, "slots": 2, "served": 0}
        assert report["hardware"]["device"] in ("cpu", "gpu")
        assert report["hardware"]["cpus"] >= 1
        assert report["hardware"]["memory_mb"] > 0

        answer = await local.post("/predict", json={"prompt": "now"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"response": "NOW"}
        assert (await local.get("/health")).json()["load"]["served"] == 1


async def test_health_is_503_failed_with_the_error_when_the_load_fails() -> None:
    service = WorkerService("chat", BrokenEngine(EngineOptions()))
    async with asgi_client(service) as local:
        await service.load()
        health = await local.get("/health")
        assert health.status_code == 503
        report = health.json()
        assert report["status"] == "failed"
        assert "the weights file is truncated" in report["error"]
        assert report["models"] == []
        assert_error(await local.post("/predict", json={"prompt": "hi"}), 503, "failed")


# --- 5. the worker key ----------------------------------------------------------------------


async def test_worker_key_guards_predict_but_not_health() -> None:
    service = WorkerService("chat", EchoEngine(EngineOptions()))
    await service.load()
    async with asgi_client(service, api_key=WORKER_KEY) as local:
        body = {"prompt": "hello"}
        assert_error(await local.post("/predict", json=body), 401, "unauthorized")
        for wrong in (f"Bearer {'x' * 20}", WORKER_KEY, f"Bearer {WORKER_KEY}x", "Bearer "):
            response = await local.post("/predict", json=body, headers={"Authorization": wrong})
            assert_error(response, 401, "unauthorized")
        right = {"Authorization": f"Bearer {WORKER_KEY}"}
        answer = await local.post("/predict", json=body, headers=right)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"response": "echo: hello"}
        assert (await local.post("/predict/", json=body, headers=right)).status_code == 200
        assert (await local.get("/health")).status_code == 200


class CountingEngine(EchoEngine):
    """Echoes, once the test lets each run finish; counts the runs it started."""

    def __init__(self, options: EngineOptions) -> None:
        super().__init__(options)
        self.release = threading.Event()
        self.runs = 0

    def run(self, request: BaseModel) -> BaseModel:
        self.runs += 1
        if not self.release.wait(timeout=30):
            raise RuntimeError("the test never released the run")
        assert isinstance(request, ChatRequest)
        if request.prompt == "fail":
            raise RuntimeError("this prompt fails")
        return super().run(request)


async def test_a_job_sent_again_with_its_idempotency_key_is_not_run_again() -> None:
    """What a restarted broker relies on: the same job (its key) joins the run in progress or
    gets its answer; another key runs; a failed run is forgotten, so it can be retried."""
    engine = CountingEngine(EngineOptions())
    service = WorkerService("chat", engine)
    await service.load()
    body = {"prompt": "hello"}
    async with asgi_client(service) as local:
        first = asyncio.create_task(
            local.post("/predict", json=body, headers={"Idempotency-Key": "q1.0"})
        )
        await eventually(lambda: asyncio.to_thread(lambda: engine.runs == 1))
        again = asyncio.create_task(
            local.post("/predict", json=body, headers={"Idempotency-Key": "q1.0"})
        )
        engine.release.set()
        answers = [await first, await again]
        assert [a.json() for a in answers] == [{"response": "echo: hello"}] * 2
        later = await local.post("/predict", json=body, headers={"Idempotency-Key": "q1.0"})
        assert later.json() == {"response": "echo: hello"}
        assert engine.runs == 1
        await local.post("/predict", json=body, headers={"Idempotency-Key": "q2.0"})
        await local.post("/predict", json=body)  # no key: always run
        assert engine.runs == 3
        failing = {"prompt": "fail"}
        for _ in range(2):
            failed = await local.post("/predict", json=failing, headers={"Idempotency-Key": "q3"})
            assert_error(failed, 500, "engine_error")
        assert engine.runs == 5
        long_key = {"Idempotency-Key": "k" * 129}
        assert_error(await local.post("/predict", json=body, headers=long_key), 400, "invalid")


# --- 6. chat with llama.cpp -----------------------------------------------------------------


async def test_chat_answers_a_short_question(
    chat: WorkerProcess, client: httpx.AsyncClient
) -> None:
    # Bounded: SmolLM2 may otherwise ramble on for a minute on a busy machine.
    question = {"prompt": "What is the capital of France?", "options": {"max_tokens": 48}}
    response = await predict(client, chat, question)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"response"}
    answer = response.json()["response"]
    assert isinstance(answer, str)
    assert answer.strip()


async def test_chat_max_tokens_gives_a_short_answer(
    chat: WorkerProcess, client: httpx.AsyncClient
) -> None:
    prompt = "Tell me a long story about a dragon."
    short, longer = [
        (
            await predict(
                client,
                chat,
                {"prompt": prompt, "options": {"max_tokens": tokens, "temperature": 0}},
            )
        ).json()["response"]
        for tokens in (4, 48)
    ]
    assert short.strip()
    assert len(short.split()) <= 4, short
    assert len(short) < len(longer), (short, longer)
    assert longer.startswith(short), (short, longer)  # greedy: the same start, cut short


async def test_chat_at_temperature_zero_repeats_its_answer(
    chat: WorkerProcess, client: httpx.AsyncClient
) -> None:
    body = {"prompt": "Name three colours.", "options": {"temperature": 0, "max_tokens": 32}}
    first, second = [(await predict(client, chat, body)).json()["response"] for _ in range(2)]
    assert first.strip()
    assert first == second


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_chat_refuses_an_image(
    chat: WorkerProcess, client: httpx.AsyncClient, stream: bool
) -> None:
    # Refused before the first piece: a plain JSON error, streamed or not.
    image = png_base64(Image.new("RGB", (8, 8), "red"))
    body = {"prompt": "what is this?", "image": image, "stream": stream}
    assert_error(await predict(client, chat, body), 400, "unsupported")


# --- 6b. streamed chat ----------------------------------------------------------------------

ECHOED = "one two three four five six seven eight nine ten"


async def assert_streams_as_written(
    client: httpx.AsyncClient, worker: WorkerProcess, body: dict[str, Any]
) -> None:
    """Streamed, `body` is answered in NDJSON pieces, the first well before the last, that
    join to exactly the answer the unstreamed call gives."""
    whole = await predict(client, worker, body)
    assert whole.status_code == 200, whole.text
    assert whole.headers["content-type"] == "application/json"
    assert set(whole.json()) == {"response"}

    streamed = await predict_streamed(client, worker, body)
    assert_well_formed(streamed)
    assert streamed.text == whole.json()["response"]
    assert len(streamed.lines) > 3
    first, last = streamed.arrived[0], streamed.arrived[-2]
    assert first < last, "the first piece came no earlier than the last one"


async def test_echo_streams_pieces_as_written_that_join_to_the_whole_answer(
    echo: WorkerProcess, client: httpx.AsyncClient
) -> None:
    await assert_streams_as_written(client, echo, {"prompt": ECHOED, "options": {"pace": 0.05}})


async def test_llamacpp_streams_pieces_as_written_that_join_to_the_whole_answer(
    chat: WorkerProcess, client: httpx.AsyncClient
) -> None:
    story = {"prompt": "Tell me a long story about a dragon."}
    await assert_streams_as_written(
        client, chat, story | {"options": {"temperature": 0, "max_tokens": 48}}
    )


async def test_a_repeat_of_a_streamed_job_follows_its_run_instead_of_running_it_again(
    echo: WorkerProcess, client: httpx.AsyncClient
) -> None:
    body = {"prompt": ECHOED, "options": {"pace": 0.2}}  # ~2 s to write
    key = {"Idempotency-Key": f"streamed-{time.monotonic_ns()}"}
    served = (await load(client, echo))["served"]
    three_pieces = asyncio.Event()
    first_lines: list[dict[str, Any]] = []

    async def first_reader() -> None:
        async with client.stream(
            "POST", f"{echo.url}/predict", json=body | {"stream": True}, headers=key
        ) as response:
            async for line in response.aiter_lines():
                first_lines.append(json.loads(line))
                if len(first_lines) == 3:
                    three_pieces.set()

    reading = asyncio.create_task(first_reader())
    async with asyncio.timeout(30):
        await three_pieces.wait()
    again = await predict_streamed(client, echo, body, headers=key)
    await reading

    answer = f"echo: {ECHOED}"
    assert "".join(line["response"] for line in first_lines) == answer
    assert again.text == answer
    assert_well_formed(again)
    # It joined mid-run: what was written so far came as one piece, the rest as written.
    assert again.lines[0]["response"].startswith("echo: one two")
    assert 2 < len(again.lines) < len(first_lines)
    assert (await load(client, echo))["served"] == served + 1  # the engine ran once

    later = await predict_streamed(client, echo, body, headers=key)  # finished: all at once
    assert later.lines == [{"response": answer, "done": False}, {"response": "", "done": True}]
    plain = await client.post(f"{echo.url}/predict", json=body, headers=key)
    assert plain.json() == {"response": answer}
    assert (await load(client, echo))["served"] == served + 1


async def test_a_client_that_hangs_up_mid_stream_stops_the_engine_and_frees_the_slot(
    echo: WorkerProcess, client: httpx.AsyncClient
) -> None:
    body = {"prompt": " ".join(["word"] * 400), "options": {"pace": 0.05}, "stream": True}
    served = (await load(client, echo))["served"]  # the above would take 20 s to write
    async with client.stream("POST", f"{echo.url}/predict", json=body) as response:
        async for line in response.aiter_lines():
            assert json.loads(line) == {"response": "echo:", "done": False}
            break
        assert (await load(client, echo))["in_flight"] == 1
    # Hung up: the engine stops at its next word, well before its 20 s.

    async def freed() -> bool:
        return (await load(client, echo))["in_flight"] == 0

    await eventually(freed, within=5)
    assert (await load(client, echo))["served"] == served + 1
    again = await predict(client, echo, {"prompt": "still there?"})
    assert again.json() == {"response": "echo: still there?"}


class FailingMidAnswer(EchoEngine):
    """Writes the start of an answer, then fails (or fails at once for the prompt "now")."""

    def stream(self, request: BaseModel, write: Callable[[str], bool]) -> None:
        assert isinstance(request, ChatRequest)
        if request.prompt == "now":
            raise RuntimeError("the model is not there")
        write("half ")
        write("an answer")
        raise RuntimeError("the model ran out of memory")


async def test_an_engine_failing_mid_stream_ends_it_with_an_error_line() -> None:
    service = WorkerService("chat", FailingMidAnswer(EngineOptions()))
    await service.load()
    async with asgi_client(service) as local:
        key = {"Idempotency-Key": "fails.0"}
        for _ in range(2):  # a failed run is forgotten: the repeat runs again
            response = await local.post(
                "/predict", json={"prompt": "hi", "stream": True}, headers=key
            )
            assert response.status_code == 200, response.text
            *pieces, last = [json.loads(line) for line in response.text.splitlines()]
            assert "".join(p["response"] for p in pieces) == "half an answer"
            assert all(p["done"] is False for p in pieces)
            assert last["done"] is True
            assert last["error"]["code"] == "engine_error"
            assert "ran out of memory" in last["error"]["message"]
        assert service.served == 2
        # Failing before the first piece is still a JSON error with its status.
        early = await local.post("/predict", json={"prompt": "now", "stream": True})
        assert "not there" in assert_error(early, 500, "engine_error")["message"]
        assert (await local.get("/health")).json()["load"]["in_flight"] == 0


# --- 7. vision with RapidOCR ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
async def test_vision_reads_the_text_in_an_image_and_says_it_only_reads_text(
    vision: WorkerProcess, client: httpx.AsyncClient, mode: str
) -> None:
    image = png_base64(hello_world(mode))
    response = await predict(client, vision, {"prompt": "What does it say?", "image": image})
    assert response.status_code == 200, response.text
    answer = response.json()["response"]
    assert "HELLO" in answer.upper()
    assert "WORLD" in answer.upper()
    assert "only read text" in answer.lower(), answer


async def test_vision_refuses_an_image_over_24_megapixels(
    vision: WorkerProcess, client: httpx.AsyncClient
) -> None:
    image = png_base64(Image.new("1", (6000, 5000), 1))
    assert len(image) < 100_000  # a tiny file: the pixel count is what is refused
    response = await predict(client, vision, {"prompt": "read this", "image": image})
    error = assert_error(response, 400, "image_too_large")
    assert "6000" in error["message"]


def test_a_decompression_bomb_is_refused_as_too_large_not_as_broken() -> None:
    # Pillow refuses images over ~179 megapixels itself, before our own limit is checked.
    with pytest.raises(BadInput) as refused:
        decode_image(png_base64(Image.new("1", (20_000, 10_000), 1)))
    assert refused.value.code == "image_too_large"


async def test_vision_refuses_bytes_that_are_not_an_image(
    vision: WorkerProcess, client: httpx.AsyncClient
) -> None:
    image = b64(b"GIF89a but not really a picture at all" * 10)
    response = await predict(client, vision, {"prompt": "read this", "image": image})
    assert_error(response, 400, "bad_image")


async def test_vision_refuses_a_request_without_an_image(
    vision: WorkerProcess, client: httpx.AsyncClient
) -> None:
    response = await predict(client, vision, {"prompt": "read this"})
    assert_error(response, 400, "missing_image")


# --- 8. CLI refusals ------------------------------------------------------------------------


def run_worker_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rentahal", "worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base_env(), "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )


def test_cli_refuses_an_unknown_engine_naming_the_known_ones() -> None:
    done = run_worker_cli("--role", "stt", "--engine", "nope", "--port", "9")
    assert done.returncode != 0
    assert "nope" in done.stderr, done.stderr
    assert "faster-whisper" in done.stderr, done.stderr


def test_cli_refuses_outbound_without_a_broker() -> None:
    done = run_worker_cli("--role", "stt", "--outbound")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--broker" in done.stderr


def test_cli_reports_a_busy_port_plainly() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = run_worker_cli("--role", "chat", "--engine", "echo", "--port", str(port))
    assert done.returncode == 4, (done.stdout, done.stderr)
    output = done.stdout + done.stderr
    assert "worker.cannot_listen" in output and "Traceback" not in output


def test_cli_refuses_a_broker_without_a_token() -> None:
    done = run_worker_cli("--role", "stt", "--broker", "http://127.0.0.1:9")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "token" in done.stderr


# --- 9. outbound de-duplication -------------------------------------------------------------


def counting_app() -> tuple[Starlette, list[bytes]]:
    """An app whose POST /predict records each body it runs and answers with the count."""
    seen: list[bytes] = []

    async def run(request: Request) -> JSONResponse:
        seen.append(await request.body())
        return JSONResponse({"runs": len(seen)})

    return Starlette(routes=[Route("/predict", run, methods=["POST"])]), seen


def request_message(request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "request",
        "id": request_id,
        "method": "POST",
        "path": "/predict",
        "headers": {"content-type": "application/json"},
        "body": b64(json.dumps(body).encode()),
    }


async def test_outbound_runs_a_request_id_once_and_a_new_id_again() -> None:
    app, seen = counting_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as local:
        runs = _Runs(local)
        first = runs.get(request_message("job-1", {"prompt": "one"}))
        resent = runs.get(request_message("job-1", {"prompt": "one"}))
        assert resent is first  # a re-send while it runs joins the same run
        answer = await first
        assert runs.get(request_message("job-1", {"prompt": "one"})) is first  # and after
        assert len(seen) == 1
        assert json.loads(seen[0]) == {"prompt": "one"}

        assert set(answer) == {"type", "id", "status", "headers", "body"}
        assert answer["type"] == "response"
        assert answer["id"] == "job-1"
        assert answer["status"] == 200
        assert json.loads(base64.b64decode(answer["body"])) == {"runs": 1}

        other = await runs.get(request_message("job-2", {"prompt": "two"}))
        assert len(seen) == 2
        assert other["id"] == "job-2"
        assert json.loads(base64.b64decode(other["body"])) == {"runs": 2}


async def test_outbound_answers_a_request_it_cannot_run() -> None:
    # The broker waits for an answer to every request: a failure must still produce one.
    app, seen = counting_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as local:
        runs = _Runs(local)
        broken = request_message("job-x", {}) | {"body": "@@ not base64 @@"}
        answer = await runs.get(broken)
    assert answer["type"] == "response" and answer["id"] == "job-x"
    assert answer["status"] == 502
    assert json.loads(base64.b64decode(answer["body"]))["error"]["code"] == "worker_error"
    assert seen == []
