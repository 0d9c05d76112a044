"""The OpenAI-compatible API under `/v1` (SPEC §13): the official `openai` package, pointed at
a real broker, runs chat (streaming and not, text and images), models, images, transcription
and speech against stub workers, and gets OpenAI's errors."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam
from PIL import Image

from rentahal.testing.process import StubServer
from tests.conftest import Realm
from tests.media import make_wav

MEDIA_MODELS = ["dall-e-3", "sd-turbo", "whisper-1", "tts-1"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def media_stub() -> AsyncIterator[StubServer]:
    async with StubServer("openai", models=MEDIA_MODELS) as stub:
        yield stub


def client(realm: Realm, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{realm.broker.url}/v1", api_key=key or realm.sysop_key, max_retries=0
    )


async def posts(stub: StubServer, path: str) -> list[dict[str, Any]]:
    return [r for r in await stub.requests() if r["method"] == "POST" and r["path"] == path]


def photo_url(width: int = 1600, height: int = 1200) -> str:
    gradient = Image.linear_gradient("L").resize((width, height))
    out = io.BytesIO()
    Image.merge("RGB", (gradient, gradient, gradient)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def test_chat_answers_whole_and_streamed(realm: Realm, ollama_stub: StubServer) -> None:
    await ollama_stub.reset()
    await realm.add_worker("talker", ollama_stub, models=["llama3"])
    async with client(realm) as sdk:
        answer = await sdk.chat.completions.create(
            model="llama3",
            messages=[{"role": "user", "content": "hello there"}],
            temperature=0.25,
            max_tokens=64,
            seed=7,
        )
        (choice,) = answer.choices
        assert choice.message.role == "assistant" and choice.finish_reason == "stop"
        assert choice.message.content == "echo: hello there"
        assert answer.object == "chat.completion" and answer.model == "llama3"
        assert answer.id.startswith("chatcmpl-") and len(answer.id) == len("chatcmpl-") + 32
        assert answer.usage is not None
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 3)

        # A conversation becomes one prompt, turn by turn; "auto" is any worker.
        stream = await sdk.chat.completions.create(
            model="auto",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "tell me about foxes"}]},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    rendered = "System: Be brief.\nUser: hi\nAssistant: hello\nUser: tell me about foxes"
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    text = [d for d in deltas if d]
    assert "".join(text) == f"echo: {rendered}" and len(text) > 5  # word by word
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].model == "auto"
    assert not chunks[-1].choices and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(f"echo: {rendered}".split())

    whole, streamed = [r["json"] for r in await posts(ollama_stub, "/api/chat")]
    assert whole["messages"][-1]["content"] == "hello there" and whole["stream"] is False
    assert whole["options"] == {"temperature": 0.25, "num_predict": 64, "seed": 7}
    assert streamed["messages"][-1]["content"] == rendered and streamed["stream"] is True

    # The same queries as the browser's: in the owner's history, done and accounted.
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        history = await http.get(
            "/api/v1/queries", headers={"Authorization": f"Bearer {realm.sysop_key}"}
        )
    by_id = {q["query_id"]: q for q in history.json()}
    mine = by_id[answer.id.removeprefix("chatcmpl-")]
    assert (mine["state"], mine["worker"], mine["query_type"]) == ("done", "talker", "chat")
    assert by_id[chunks[0].id.removeprefix("chatcmpl-")]["prompt"] == rendered


async def test_models_images_in_chat_and_errors(realm: Realm, ollama_stub: StubServer) -> None:
    await ollama_stub.reset()
    await realm.add_worker("talker", ollama_stub, models=["llama3"])
    await realm.add_worker("eyes", ollama_stub, type="vision", models=["llama3"])
    async with client(realm) as sdk:
        ids = [m.id for m in (await sdk.models.list()).data]
        assert len(ids) == len(set(ids))
        assert {"talker", "eyes", "$CHAT", "$VISION"} <= set(ids)
        # The models the worker lists (its health check reports Ollama's full names).
        assert {"llama3", "llama3:latest"} & set(ids)
        assert (await sdk.models.retrieve("$CHAT")).owned_by == "realm"
        assert (await sdk.models.retrieve("talker")).owned_by == "ollama"
        with pytest.raises(openai.NotFoundError) as unknown:
            await sdk.models.retrieve("org/no-such-model")
        assert unknown.value.code == "model_not_found"

        # An image part makes a vision query; the worker gets it as a ≤512 px JPEG.
        seen = await sdk.chat.completions.create(
            model="",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": photo_url()}},
                    ],
                }
            ],
        )
        assert seen.choices[0].message.content == "echo: what is this?"
        (sent,) = [r["json"] for r in await posts(ollama_stub, "/api/chat")]
        assert sent["messages"][-1]["content"] == "what is this?"
        with Image.open(io.BytesIO(base64.b64decode(sent["messages"][-1]["images"][0]))) as got:
            assert (got.format, got.size) == ("JPEG", (512, 384))

        hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.chat.completions.create(model="no-such-model", messages=hi)
        assert missing.value.code == "model_not_found" and missing.value.param == "model"
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"n": 2}, "n"),
            ({"stop": ["\n"]}, "stop"),
            ({"temperature": 9}, "temperature"),
            ({"messages": []}, "messages"),
            ({"messages": [*hi, {"role": "assistant", "content": "ok"}]}, "messages"),
            ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
            (
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image_url", "image_url": {"url": "http://a.b/c.png"}}
                            ],
                        }
                    ]
                },
                "messages.0.content.0.image_url.url",
            ),
        ]
        for fields, param in refusals:
            with pytest.raises(openai.BadRequestError) as bad:
                await sdk.chat.completions.create(**({"model": "llama3", "messages": hi} | fields))
            assert bad.value.param == param, (fields, bad.value.body)
            assert bad.value.type == "invalid_request_error"

        # A worker's failure is a 502, whole or streamed.
        await ollama_stub.configure(fail_status=500, fail_count=2)
        with pytest.raises(openai.InternalServerError) as broken:
            await sdk.chat.completions.create(model="talker", messages=hi)
        assert broken.value.status_code == 502 and broken.value.code == "worker_error"
        stream = await sdk.chat.completions.create(model="talker", messages=hi, stream=True)
        with pytest.raises(openai.APIError, match="worker talker"):
            async for _ in stream:
                pass

    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        sysop = {"Authorization": f"Bearer {realm.sysop_key}"}
        made = await http.post("/api/v1/keys", json={"scopes": ["vision"]}, headers=sysop)
        vision_key = made.json()["key"]
        # A browser's cookie opens nothing here: only API keys do.
        cookie = {"Cookie": f"rentahal_session={await realm.broker.guest_cookie()}"}
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
            body = {"model": "llama3", "messages": hi} if method == "POST" else None
            response = await http.request(
                method, path, json=body, headers=cookie | {"Origin": realm.broker.url}
            )
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == "invalid_api_key"
        lost = await http.get("/v1/no/such/route", headers=sysop)
        assert lost.status_code == 404 and lost.json()["error"]["code"] == "unknown_url"

    async with client(realm, "sk-not-a-key") as stranger:
        with pytest.raises(openai.AuthenticationError) as refused:
            await stranger.models.list()
        assert refused.value.code == "invalid_api_key"
    async with client(realm, vision_key) as narrow:
        with pytest.raises(openai.PermissionDeniedError):
            await narrow.chat.completions.create(model="llama3", messages=hi)


async def test_images_transcription_and_speech(realm: Realm, media_stub: StubServer) -> None:
    await media_stub.reset()
    await media_stub.configure(reply="what is the weather today")
    for name, kind in (("painter", "imagine"), ("ears", "stt"), ("voice", "tts")):
        await realm.add_worker(name, media_stub, type=kind, models=MEDIA_MODELS)
    sysop = {"Authorization": f"Bearer {realm.sysop_key}"}
    async with client(realm) as sdk, httpx.AsyncClient(headers=sysop) as http:
        painted = await sdk.images.generate(
            model="sd-turbo", prompt="a red barn", size="600x400", response_format="b64_json"
        )
        assert painted.data and painted.data[0].b64_json
        with Image.open(io.BytesIO(base64.b64decode(painted.data[0].b64_json))) as picture:
            assert (picture.format, picture.size) == ("PNG", (600, 400))
        linked = await sdk.images.generate(prompt="a boat", response_format="url")
        assert linked.data and linked.data[0].url
        assert linked.data[0].url.startswith(f"{realm.broker.url}/api/v1/queries/")
        fetched = await http.get(linked.data[0].url)
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        with pytest.raises(openai.BadRequestError) as tiny:
            await sdk.images.generate(prompt="a boat", size="10x10")
        assert tiny.value.param == "size"

        wav = make_wav(0.5)
        upload = ("speech.wav", wav, "audio/wav")
        heard = await sdk.audio.transcriptions.create(model="whisper-1", file=upload)
        assert heard.text == "what is the weather today"
        plain = await sdk.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=upload, response_format="text"
        )
        assert plain == "what is the weather today\n"
        verbose = await sdk.audio.transcriptions.create(
            model="whisper-1", file=upload, response_format="verbose_json", language="en"
        )
        assert (verbose.text, verbose.language, verbose.duration) == (
            "what is the weather today",
            "en",
            0.5,
        )
        with pytest.raises(openai.BadRequestError) as junk:
            await sdk.audio.transcriptions.create(
                model="whisper-1", file=("speech.wav", b"hello" * 50, "audio/wav")
            )
        assert junk.value.code == "invalid"

        spoken = await sdk.audio.speech.create(
            model="tts-1", voice="nova", input="Hello there", response_format="wav"
        )
        with wave.open(io.BytesIO(spoken.content)) as played:
            assert played.getnframes() > 0 and played.getnchannels() == 1
        assert spoken.response.headers["content-type"] == "audio/wav"
        with pytest.raises(openai.BadRequestError) as mp3:
            await sdk.audio.speech.create(
                model="tts-1", voice="nova", input="Hi", response_format="mp3"
            )
        assert mp3.value.param == "response_format"

    (generated, defaulted) = [r["json"] for r in await posts(media_stub, "/v1/images/generations")]
    assert (generated["model"], generated["size"]) == ("sd-turbo", "600x400")
    assert defaulted["model"] == "dall-e-3"  # no model named: the worker's own choice
    uploads = await posts(media_stub, "/v1/audio/transcriptions")
    assert len(uploads) == 3
    assert [u["form"]["model"] for u in uploads] == ["whisper-1", "whisper-1", "whisper-1"]
    assert uploads[2]["form"]["language"] == "en"
    (said,) = [r["json"] for r in await posts(media_stub, "/v1/audio/speech")]
    assert (said["voice"], said["input"]) == ("nova", "Hello there")
