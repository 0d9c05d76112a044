"""Media on the `openai` backend: imagine (`/v1/images/generations`), speech to text
(`/v1/audio/transcriptions`, a multipart upload) and text to speech (`/v1/audio/speech`),
through a real broker and the OpenAI stub; the stub's own contract through the official SDK;
and the adapter's pure helpers (sizes, containers, WAV headers)."""

from __future__ import annotations

import base64
import io
import os
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import openai
import pytest
import pytest_asyncio
from PIL import Image

from rentahal.backends.base import BackendError
from rentahal.backends.openai_compat import audio_container, complete_wav, image_size
from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.stubs.openai import SPEECH_RATE, speech_seconds
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm, create_sysop
from tests.media import make_wav

# Chat models first, as real servers list them: media workers must still pick media models.
MODELS = ["gpt-4o-mini", "dall-e-3", "gpt-image-1", "sd-turbo", "whisper-1", "tts-1"]
WEBM_MAGIC = b"\x1a\x45\xdf\xa3"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub() -> AsyncIterator[StubServer]:
    async with StubServer("openai", models=MODELS) as server:
        yield server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def posts(stub: StubServer, path: str) -> list[dict[str, Any]]:
    return [r for r in await stub.requests() if r["method"] == "POST" and r["path"] == path]


async def finished(bus: BusClient, query_id: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    return await bus.expect(
        where=lambda m: m.get("query_id") == query_id and m["type"] in (*kinds, "error"),
        within=20,
    )


async def submit(bus: BusClient, message: dict[str, Any]) -> str:
    accepted = await bus.request(message)
    assert accepted["type"] == "query_accepted", accepted
    query_id: str = accepted["query_id"]
    return query_id


async def imagine(bus: BusClient, prompt: str, model: str, **options: Any) -> dict[str, Any]:
    query = {"prompt": prompt, "query_type": "imagine", "model_name": model, "options": options}
    query_id = await submit(bus, {"type": "submit_query", "query": query})
    return await finished(bus, query_id, ("query_result",))


async def worker_health(realm: Realm, name: str) -> float:
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        listed = await http.get(
            "/api/v1/workers", headers={"Authorization": f"Bearer {realm.sysop_key}"}
        )
    score: float = {w["name"]: w for w in listed.json()}[name]["health_score"]
    return score


async def test_imagine_makes_a_png_of_the_size_asked_for(realm: Realm, stub: StubServer) -> None:
    await stub.reset()
    await realm.add_worker("painter", stub, type="imagine", models=MODELS)
    async with (
        realm.broker.bus(api_key=realm.sysop_key) as bus,
        httpx.AsyncClient(
            base_url=realm.broker.url, headers={"Authorization": f"Bearer {realm.sysop_key}"}
        ) as http,
    ):
        # dall-e-3 takes three sizes: a wide 1600×900 becomes its wide 1792×1024.
        wide = await imagine(bus, "a red barn", "dall-e-3", width=1600, height=900)
        assert wide["type"] == "query_result", wide
        assert wide["result_type"] == "image" and wide["worker"] == "painter"
        png = base64.b64decode(wide["result"])
        with Image.open(io.BytesIO(png)) as picture:
            assert (picture.format, picture.size) == ("PNG", (1792, 1024))
        served = await http.get(f"/api/v1/queries/{wide['query_id']}/output")
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png" and served.content == png

        # GPT image models refuse response_format; any other model gets the size asked for.
        tall = await imagine(bus, "a lighthouse", "gpt-image-1", width=600, height=900)
        free = await imagine(bus, "a teapot", "sd-turbo", width=600, height=404)
        for done, size in ((tall, (1024, 1536)), (free, (600, 400))):
            assert done["type"] == "query_result", done
            with Image.open(io.BytesIO(base64.b64decode(done["result"]))) as picture:
                assert (picture.format, picture.size) == ("PNG", size)

        # No model named: the first listed image model, at its default size.
        plain = await imagine(bus, "a boat", "")
        assert plain["type"] == "query_result", plain

    sent = [r["json"] for r in await posts(stub, "/v1/images/generations")]
    assert sent == [
        {
            "prompt": "a red barn",
            "model": "dall-e-3",
            "size": "1792x1024",
            "n": 1,
            "response_format": "b64_json",
        },
        {"prompt": "a lighthouse", "model": "gpt-image-1", "size": "1024x1536", "n": 1},
        {
            "prompt": "a teapot",
            "model": "sd-turbo",
            "size": "600x400",
            "n": 1,
            "response_format": "b64_json",
        },
        {
            "prompt": "a boat",
            "model": "dall-e-3",
            "size": "1024x1024",
            "n": 1,
            "response_format": "b64_json",
        },
    ]


async def test_a_400_from_the_server_fails_the_query_as_invalid_input(
    realm: Realm, stub: StubServer
) -> None:
    await stub.reset()
    await realm.add_worker("painter", stub, type="imagine", models=MODELS)
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        await stub.configure(fail_status=400, fail_count=1)
        refused = await imagine(bus, "anything at all", "dall-e-3")
        assert refused["type"] == "error" and refused["code"] == "invalid", refused
        # The server's own validation: a prompt over dall-e-3's 4000 characters.
        too_long = await imagine(bus, "x" * 4001, "dall-e-3")
        assert too_long["type"] == "error" and too_long["code"] == "invalid", too_long
        assert "string too long" in too_long["message"]
    # Refused input is not the worker's fault: one try each, and its health is untouched.
    assert len(await posts(stub, "/v1/images/generations")) == 2
    assert await worker_health(realm, "painter") == 100


def browser_recording(container: str) -> bytes:
    """Half a second of tone as a browser records it: Opus in WebM (Chrome) or Ogg (Firefox)."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as recording:
        stream = recording.add_stream("libopus", rate=48_000)
        tone = (np.sin(np.arange(24_000) * 2 * np.pi * 440 / 48_000) * 0.3).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 48_000
        for packet in stream.encode(frame):
            recording.mux(packet)
        for packet in stream.encode(None):
            recording.mux(packet)
    return out.getvalue()


async def test_speech_to_text_uploads_every_recording_as_a_16khz_wav(
    realm: Realm, stub: StubServer
) -> None:
    await stub.reset()
    await stub.configure(reply="what is the weather today")
    await realm.add_worker("ears", stub, type="stt", models=MODELS)
    recordings = [make_wav(rate=44_100), browser_recording("webm"), browser_recording("ogg")]
    assert recordings[1].startswith(WEBM_MAGIC) and recordings[2].startswith(b"OggS")
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        for recording in recordings:
            message = {"type": "speech_to_text", "audio": b64(recording), "language": "en"}
            query_id = await submit(bus, message)
            heard = await finished(bus, query_id, ("transcription_result",))
            assert heard["type"] == "transcription_result", heard
            assert heard["text"] == "what is the weather today" and heard["final"] is True
        # Not audio, or not base64: refused at submit, before any worker is asked.
        for junk in (b64(b"hello" * 40), "not base64 !!"):
            refused = await bus.request({"type": "speech_to_text", "audio": junk})
            assert refused["type"] == "error" and refused["code"] == "invalid", refused
            assert "bad_audio" in refused["message"]

    uploads = await posts(stub, "/v1/audio/transcriptions")
    assert len(uploads) == 3
    for upload in uploads:
        assert upload["form"] == {"model": "whisper-1", "language": "en", "response_format": "json"}
        (file,) = upload["files"]
        assert (file["filename"], file["content_type"]) == ("speech.wav", "audio/wav")
    # 0.5 s of 16 kHz, 16-bit mono, whatever the container and rate it came in.
    assert uploads[0]["files"][0]["size"] == 44 + 16_000


async def test_text_to_speech_answers_a_playable_wav(realm: Realm, stub: StubServer) -> None:
    await stub.reset()
    await realm.add_worker("voice", stub, type="tts", models=MODELS)
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        spoken = []
        for extra in ({"speaker": "nova"}, {}):
            query_id = await submit(bus, {"type": "text_to_speech", "text": "Hello there", **extra})
            spoken.append(await finished(bus, query_id, ("speech_result",)))
        # A Bark preset is no OpenAI voice: the server refuses it as invalid input.
        query_id = await submit(
            bus, {"type": "text_to_speech", "text": "Hi", "speaker": "v2/en_speaker_6"}
        )
        refused = await finished(bus, query_id, ("speech_result",))
        assert refused["type"] == "error" and refused["code"] == "invalid", refused

    for result in spoken:
        assert result["type"] == "speech_result", result
        audio = base64.b64decode(result["audio"])
        # OpenAI streams WAVs with 0xFFFFFFFF sizes; the adapter writes the real ones back.
        assert int.from_bytes(audio[4:8], "little") == len(audio) - 8
        with wave.open(io.BytesIO(audio)) as played:
            assert (played.getnchannels(), played.getsampwidth()) == (1, 2)
            assert played.getframerate() == SPEECH_RATE
            assert played.getnframes() == round(speech_seconds("Hello there") * SPEECH_RATE)
            assert len(played.readframes(played.getnframes())) == 2 * played.getnframes()
    sent = [r["json"] for r in await posts(stub, "/v1/audio/speech")]
    assert sent == [
        {"model": "tts-1", "voice": "nova", "input": "Hello there", "response_format": "wav"},
        {"model": "tts-1", "voice": "alloy", "input": "Hello there", "response_format": "wav"},
        {"model": "tts-1", "voice": "v2/en_speaker_6", "input": "Hi", "response_format": "wav"},
    ]


async def test_the_key_comes_from_the_env_var_the_sysop_named(tmp_path: Path) -> None:
    key = "sk-media-" + os.urandom(8).hex()
    sysop_key = await create_sysop(tmp_path)
    env = FAST_ENV | {"MEDIA_OPENAI_KEY": key}
    async with (
        StubServer("openai", models=["tts-1"], api_key=key) as keyed,
        BrokerProcess(tmp_path, env=env) as broker,
    ):
        realm = Realm(broker, sysop_key)
        await realm.add_worker("voice", keyed, type="tts", api_key_env="MEDIA_OPENAI_KEY")

        async def healthy() -> bool:
            return await worker_health(realm, "voice") == 100

        await eventually(healthy)
        async with broker.bus(api_key=sysop_key) as bus:
            query_id = await submit(bus, {"type": "text_to_speech", "text": "Keyed"})
            spoken = await finished(bus, query_id, ("speech_result",))
        assert spoken["type"] == "speech_result", spoken
        (sent,) = await posts(keyed, "/v1/audio/speech")
        assert sent["headers"]["authorization"] == f"Bearer {key}"


async def test_the_sdk_reads_every_answer_of_the_stub(stub: StubServer) -> None:
    await stub.reset()
    sdk = openai.AsyncOpenAI(api_key="sk-any", base_url=f"{stub.url}/v1", max_retries=0)
    async with sdk:
        by_url = await sdk.images.generate(model="dall-e-3", prompt="a cat")
        assert by_url.data and by_url.data[0].url and by_url.data[0].revised_prompt == "a cat"
        async with httpx.AsyncClient() as http:
            fetched = await http.get(by_url.data[0].url)
        with Image.open(io.BytesIO(fetched.content)) as picture:
            assert picture.size == (1024, 1024)
        gpt = await sdk.images.generate(model="gpt-image-1", prompt="a cat", size="1536x1024")
        assert gpt.size == "1536x1024" and gpt.usage and gpt.data and gpt.data[0].b64_json
        with pytest.raises(openai.BadRequestError) as bad_size:
            await sdk.images.generate(model="dall-e-3", prompt="a cat", size="512x512")
        assert (bad_size.value.code, bad_size.value.param) == ("invalid_value", "size")

        wav = make_wav(1.0)
        upload = ("speech.wav", wav, "audio/wav")
        verbose = await sdk.audio.transcriptions.create(
            model="whisper-1", file=upload, response_format="verbose_json"
        )
        assert verbose.duration == 1.0 and verbose.text == f"{len(wav)} bytes of wav audio"
        text = await sdk.audio.transcriptions.create(
            model="whisper-1", file=upload, response_format="text"
        )
        assert text == f"{len(wav)} bytes of wav audio\n"
        with pytest.raises(openai.BadRequestError) as mislabelled:
            await sdk.audio.transcriptions.create(
                model="whisper-1", file=("speech.webm", wav, "audio/webm")
            )
        assert mislabelled.value.param == "file"

        pcm = await sdk.audio.speech.create(
            model="tts-1", voice="echo", input="Hi there", response_format="pcm", speed=2.0
        )
        assert len(pcm.content) == 2 * round(speech_seconds("Hi there", 2.0) * SPEECH_RATE)
        with pytest.raises(openai.BadRequestError) as mp3:
            await sdk.audio.speech.create(model="tts-1", voice="echo", input="Hi")
        assert mp3.value.param == "response_format"

    async with StubServer("openai", models=["tts-1"], api_key="sk-right") as keyed:
        wrong = openai.AsyncOpenAI(api_key="sk-wrong", base_url=f"{keyed.url}/v1", max_retries=0)
        async with wrong:
            with pytest.raises(openai.AuthenticationError) as refused:
                await wrong.audio.transcriptions.create(model="tts-1", file=upload)
        assert refused.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("model", "options", "size"),
    [
        ("dall-e-3", {}, (1024, 1024)),
        ("dall-e-3", {"width": 512, "height": 1024}, (1024, 1792)),
        ("dall-e-2", {"width": 300, "height": 300}, (256, 256)),
        ("dall-e-2", {"width": 4000, "height": 4000}, (1024, 1024)),
        ("gpt-image-1.5", {"width": 1920, "height": 1080}, (1536, 1024)),
        ("openai/gpt-image-1", {"width": 10, "height": 10}, (1024, 1024)),
        ("sd-turbo", {}, (512, 512)),
        ("sd-turbo", {"width": 10_000, "height": 13}, (2048, 64)),
        ("sd-turbo", {"width": 771.0, "height": True}, (768, 512)),
        ("", {"width": "big", "height": -5}, (512, 512)),
    ],
)
def test_image_sizes_are_bounded_to_what_the_model_takes(
    model: str, options: dict[str, Any], size: tuple[int, int]
) -> None:
    assert image_size(model, options) == size


@pytest.mark.parametrize(
    ("head", "container"),
    [
        (make_wav()[:16], ("wav", "audio/wav")),
        (b"OggS\x00\x02", ("ogg", "audio/ogg")),
        (WEBM_MAGIC + b"\x9f", ("webm", "audio/webm")),
        (b"ID3\x04\x00", ("mp3", "audio/mpeg")),
        (b"\xff\xfb\x90\x64", ("mp3", "audio/mpeg")),
        (b"\xff\xf1\x50\x80", ("bin", "application/octet-stream")),  # AAC ADTS, not MP3
        (b"fLaC\x00", ("flac", "audio/flac")),
        (b"\x00\x00\x00\x1cftypM4A ", ("mp4", "audio/mp4")),
        (b"hello", ("bin", "application/octet-stream")),
    ],
)
def test_recordings_are_named_by_their_magic_bytes(head: bytes, container: tuple[str, str]) -> None:
    assert audio_container(head) == container


def test_wav_headers_are_completed_and_other_audio_refused() -> None:
    wav = make_wav(0.25)
    assert complete_wav(wav) == wav  # a finished WAV is left as it is
    streamed = bytearray(wav)
    streamed[4:8] = streamed[40:44] = b"\xff\xff\xff\xff"
    assert complete_wav(bytes(streamed)) == wav
    with pytest.raises(BackendError):
        complete_wav(b"ID3\x04" + bytes(64))
    with pytest.raises(BackendError):
        complete_wav(wav[:36])  # a header with no data chunk
