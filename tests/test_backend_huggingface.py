"""The `huggingface` backend (huggingface_hub's AsyncInferenceClient on a TGI server or an
Inference Endpoint) end to end: a real broker process drives workers on the Hugging Face
stub, and the tests check what the stub received, byte for byte, and what users got back.

The broker runs with `HF_HUB_OFFLINE=1` and a dead `HF_ENDPOINT`: anything that tried to
reach the Hub through huggingface_hub would fail, so every answer below also proves that
all the traffic went to the worker. It also runs with a Hugging Face login of its own
(`HF_TOKEN`), which must never reach a worker that has no key.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from rentahal.backends.base import Endpoint
from rentahal.backends.huggingface import HuggingFaceBackend, image_parameters, png_base64
from rentahal.media.images import normalize_for_vision
from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm, create_sysop

TOKEN = "hf_worker_token_0123456789"
HOST_LOGIN = "hf_host_login_never_sent_to_workers"
MODEL = "HuggingFaceH4/zephyr-7b-beta"
OPEN_MODEL = "tiiuae/falcon-7b-instruct"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hf_stub() -> AsyncIterator[StubServer]:
    """An endpoint that wants `Authorization: Bearer TOKEN`."""
    async with StubServer("huggingface", models=[MODEL], api_key=TOKEN) as stub:
        yield stub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def open_stub() -> AsyncIterator[StubServer]:
    """An endpoint with no token (a TGI server on the LAN)."""
    async with StubServer("huggingface", models=[OPEN_MODEL]) as stub:
        yield stub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hf_realm(
    tmp_path_factory: pytest.TempPathFactory, hf_stub: StubServer
) -> AsyncIterator[Realm]:
    data_dir: Path = tmp_path_factory.mktemp("hf-broker")
    key = await create_sysop(data_dir)
    env = FAST_ENV | {
        "HF_WORKER_TOKEN": TOKEN,
        "HF_WRONG_TOKEN": "hf_not_the_right_one",
        "HF_TOKEN": HOST_LOGIN,
        "HF_HUB_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    async with BrokerProcess(data_dir, env=env) as broker:
        realm = Realm(broker, key)
        for name, kind in (("hf-chat", "chat"), ("hf-eyes", "vision"), ("hf-paint", "imagine")):
            await realm.add_worker(
                name, hf_stub, type=kind, models=[MODEL], api_key_env="HF_WORKER_TOKEN"
            )
        yield realm
    print(f"--- broker output ---\n{broker.output}")  # shown by pytest when a test fails


@pytest_asyncio.fixture(loop_scope="session")
async def stub(hf_stub: StubServer) -> StubServer:
    await hf_stub.reset()
    return hf_stub


async def ask(
    bus: BusClient, query_type: str, prompt: str, worker: str, **query: Any
) -> dict[str, Any]:
    """Submit a query to one named worker; its `query_result` or `error`."""
    accepted = await bus.request(
        {
            "type": "submit_query",
            "query": {"prompt": prompt, "query_type": query_type, "model_name": worker, **query},
        }
    )
    assert accepted["type"] == "query_accepted", accepted
    return await bus.expect(
        where=lambda m: (
            m.get("query_id") == accepted["query_id"] and m["type"] in ("query_result", "error")
        ),
        within=20,
    )


async def posts(stub: StubServer, path: str) -> list[dict[str, Any]]:
    return [r for r in await stub.requests() if r["method"] == "POST" and r["path"] == path]


def encoded(image: Image.Image, fmt: str, **save: Any) -> str:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return base64.b64encode(out.getvalue()).decode()


def photo(width: int, height: int) -> Image.Image:
    gradient = Image.linear_gradient("L").resize((width, height))
    return Image.merge("RGB", (gradient, gradient.rotate(90).resize((width, height)), gradient))


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_chat_goes_to_the_messages_api_with_the_workers_token(
    hf_realm: Realm, stub: StubServer, stream: bool
) -> None:
    options = {"stream": stream, "temperature": 0.3, "max_tokens": 50, "seed": 7, "tools": "x"}
    async with hf_realm.broker.bus(api_key=hf_realm.sysop_key) as bus:
        result = await ask(bus, "chat", "what is deep learning", "hf-chat", options=options)
        chunks = [m["delta"] for m in bus.seen if m["type"] == "query_chunk"]
    assert result["type"] == "query_result", result
    assert result["result"] == "echo: what is deep learning"
    assert result["result_type"] == "text" and result["worker"] == "hf-chat"
    if stream:
        assert chunks == ["echo:", " what", " is", " deep", " learning"]
    else:
        assert chunks == []

    (sent,) = await posts(stub, "/v1/chat/completions")
    assert sent["json"] == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "what is deep learning"}],
        "max_tokens": 50,
        "seed": 7,
        "temperature": 0.3,
        "stream": stream,
    }
    assert sent["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert sent["headers"]["content-type"] == "application/json"
    assert "hf_hub/" in sent["headers"]["user-agent"]
    assert sent["outcome"] == "completed"


async def test_vision_posts_the_normalised_jpeg_to_the_endpoint(
    hf_realm: Realm, stub: StubServer
) -> None:
    upload = encoded(photo(1600, 1200), "JPEG", quality=95)
    expected = base64.b64decode(normalize_for_vision(upload))  # what the broker sends on
    async with hf_realm.broker.bus(api_key=hf_realm.sysop_key) as bus:
        result = await ask(bus, "vision", "what is this?", "hf-eyes", image=upload)
    assert result["type"] == "query_result", result
    # The stub's caption describes the bytes it received: the broker's 512×384 JPEG.
    assert result["result"] == (
        f"a 512x384 JPEG image, {len(expected)} bytes, "
        f"sha256 {hashlib.sha256(expected).hexdigest()}"
    )
    (sent,) = await posts(stub, "/")
    assert sent["json"] is None  # raw bytes, not JSON: the image-to-text task's own form
    assert sent["headers"]["content-type"] == "image/jpeg"
    assert sent["headers"]["content-length"] == str(len(expected))
    assert sent["headers"]["authorization"] == f"Bearer {TOKEN}"


async def test_imagine_returns_a_png_of_the_requested_size(
    hf_realm: Realm, stub: StubServer
) -> None:
    options = {
        "width": 320,
        "height": 200,
        "steps": 30,
        "cfg_scale": 6.5,
        "seed": 42,
        "negative_prompt": "blurry",
    }
    async with hf_realm.broker.bus(api_key=hf_realm.sysop_key) as bus:
        result = await ask(bus, "imagine", "a red fox in the snow", "hf-paint", options=options)
        # An image arrives whole, in the result: never as text pieces.
        assert not [m for m in bus.seen if m["type"] == "query_chunk"]
        running = [m for m in bus.seen if m["type"] == "query_status" and m["state"] == "running"]
        assert not running
    assert result["type"] == "query_result", result
    assert result["result_type"] == "image"
    png = base64.b64decode(result["result"])
    picture = Image.open(io.BytesIO(png))
    picture.load()
    assert picture.format == "PNG" and picture.size == (320, 200)

    owner = {"Authorization": f"Bearer {hf_realm.sysop_key}"}
    async with httpx.AsyncClient(base_url=hf_realm.broker.url) as http:
        file = await http.get(f"/api/v1/queries/{result['query_id']}/output", headers=owner)
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    assert file.content == png

    (sent,) = await posts(stub, "/")
    assert sent["json"] == {
        "inputs": "a red fox in the snow",
        "parameters": {
            "negative_prompt": "blurry",
            "height": 200,
            "width": 320,
            "num_inference_steps": 30,
            "guidance_scale": 6.5,
            "seed": 42,
        },
    }
    assert sent["headers"]["accept"] == "image/png"
    assert sent["headers"]["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("worker", "query_type", "status", "code", "message"),
    [
        ("hf-chat", "chat", 503, "worker_error", "HTTP 503: Model " + MODEL + " is currently"),
        ("hf-paint", "imagine", 429, "worker_error", "HTTP 429: Model is overloaded"),
        ("hf-chat", "chat", 500, "worker_error", "HTTP 500: Internal Server Error"),
        ("hf-paint", "imagine", 400, "invalid", "HTTP 400: Bad request"),
        ("hf-chat", "chat", 422, "invalid", "HTTP 422: Input validation error"),
    ],
)
async def test_http_errors_fail_the_worker_or_refuse_the_input(
    hf_realm: Realm,
    stub: StubServer,
    worker: str,
    query_type: str,
    status: int,
    code: str,
    message: str,
) -> None:
    await stub.configure(fail_status=status, fail_count=1)
    async with hf_realm.broker.bus(api_key=hf_realm.sysop_key) as bus:
        failed = await ask(bus, query_type, "a lighthouse", worker)
    assert failed["type"] == "error", failed
    assert failed["code"] == code and message in failed["message"], failed
    assert len([r for r in await stub.requests() if r["method"] == "POST"]) == 1  # no retry


async def test_an_answer_that_is_not_an_image_fails_the_worker(
    hf_realm: Realm, stub: StubServer
) -> None:
    await stub.configure(reply="<html>definitely not a PNG</html>")
    async with hf_realm.broker.bus(api_key=hf_realm.sysop_key) as bus:
        failed = await ask(bus, "imagine", "a lighthouse", "hf-paint")
    assert failed["type"] == "error" and failed["code"] == "worker_error", failed
    assert "not an image" in failed["message"]


async def test_a_wrong_token_is_the_workers_failure(hf_realm: Realm, stub: StubServer) -> None:
    await hf_realm.add_worker(
        "hf-wrong-key", stub, type="chat", models=[MODEL], api_key_env="HF_WRONG_TOKEN"
    )
    async with hf_realm.broker.bus(api_key=hf_realm.sysop_key) as bus:
        failed = await ask(bus, "chat", "hello", "hf-wrong-key")
    assert failed["type"] == "error" and failed["code"] == "worker_error", failed
    assert "HTTP 401: Invalid credentials in Authorization header" in failed["message"]
    (sent,) = await posts(stub, "/v1/chat/completions")
    assert sent["headers"]["authorization"] == "Bearer hf_not_the_right_one"


async def test_a_cancelled_query_hangs_up_on_the_endpoint(
    hf_realm: Realm, stub: StubServer
) -> None:
    await stub.configure(reply=" ".join(["word"] * 50), chunk_delay=0.1)
    async with hf_realm.broker.bus(api_key=hf_realm.sysop_key) as bus:
        accepted = await bus.request(
            {
                "type": "submit_query",
                "query": {"prompt": "talk", "query_type": "chat", "model_name": "hf-chat"},
            }
        )
        query_id = accepted["query_id"]
        await bus.expect("query_chunk", lambda m: m["query_id"] == query_id, within=10)
        await bus.send({"type": "cancel_query", "query_id": query_id})

        async def hung_up() -> bool:
            return (await stub.stats())["disconnected"] == 1

        await eventually(hung_up, within=5)
    (sent,) = await posts(stub, "/v1/chat/completions")
    assert sent["outcome"] == "disconnected"


async def test_health_and_models_come_from_info_and_no_token_leaks(
    hf_realm: Realm, open_stub: StubServer
) -> None:
    await open_stub.reset()
    await hf_realm.add_worker("hf-open", open_stub, type="chat", models=["configured-name"])
    sysop = {"Authorization": f"Bearer {hf_realm.sysop_key}"}

    async def worker() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=hf_realm.broker.url) as http:
            listed = (await http.get("/api/v1/workers", headers=sysop)).json()
        view: dict[str, Any] = next(w for w in listed if w["name"] == "hf-open")
        return view

    async def models_from_info() -> bool:
        return (await worker())["models"] == [OPEN_MODEL]

    await eventually(models_from_info, within=10)
    async with hf_realm.broker.bus(api_key=hf_realm.sysop_key) as bus:
        result = await ask(bus, "chat", "hi there", "hf-open")
    assert result["type"] == "query_result" and result["result"] == "echo: hi there", result

    requests = await open_stub.requests()
    probes = [r for r in requests if r["method"] == "GET"]
    assert probes and all(r["path"] == "/info" for r in probes)
    (sent,) = [r for r in requests if r["method"] == "POST"]
    assert sent["json"]["model"] == OPEN_MODEL
    # No key for this worker: no Authorization at all, and never the broker's own HF login.
    assert all("authorization" not in r["headers"] for r in requests)

    await open_stub.configure(health_status=503)

    async def unhealthy() -> bool:
        return (await worker())["health_score"] <= 80

    await eventually(unhealthy, within=10)
    await open_stub.configure(health_status=200)


async def test_probe_falls_back_to_health_without_info() -> None:
    """An Inference Endpoint without TGI has no /info: its /health decides, and the worker
    keeps its configured models."""
    seen: list[str] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(404 if request.url.path == "/info" else 200)

    worker = Endpoint(name="hf", kind="huggingface", url="http://127.0.0.1:1", models=("sdxl",))
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        report = await HuggingFaceBackend().probe(client, worker, 5)
    assert seen == ["/info", "/health"]
    assert report.status == 200 and report.models is None


def test_image_options_are_held_to_the_sd_web_ui_bounds() -> None:
    wild = {
        "width": 3000,
        "height": 333,
        "steps": 999,
        "guidance_scale": -2,
        "seed": -1,
        "negative_prompt": "   ",
        "sampler": "Euler a",
    }
    assert image_parameters(wild) == {
        "width": 2048,
        "height": 328,
        "num_inference_steps": 150,
        "guidance_scale": 0.0,
    }
    assert image_parameters({"width": 8, "num_inference_steps": 0, "seed": 2**40}) == {
        "width": 64,
        "num_inference_steps": 1,
        "seed": 2**32 - 1,
    }
    assert image_parameters({"steps": True, "width": "512"}) == {}


def test_a_jpeg_answer_is_re_encoded_as_png() -> None:
    jpeg = Image.open(io.BytesIO(base64.b64decode(encoded(photo(96, 64), "JPEG"))))
    png = Image.open(io.BytesIO(base64.b64decode(png_base64(jpeg))))
    assert png.format == "PNG" and png.size == (96, 64) and png.mode == "RGB"
