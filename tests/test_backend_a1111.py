"""The `a1111` backend (Stable Diffusion web UI API) end to end: imagine queries through a real
broker to the web UI stub, the exact txt2img bodies, the image served back, errors, health,
models and keys; plus the adapter's probe fallback and image checks against canned answers."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from rentahal.backends.a1111 import A1111Backend
from rentahal.backends.base import BackendError, BackendRequest, Endpoint
from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm, create_sysop

CHECKPOINT = "v1-5-pruned.ckpt"
SEED_DEFAULTS = {
    "steps": 50,
    "sampler_name": "Euler a",
    "cfg_scale": 7,
    "width": 512,
    "height": 512,
    "seed": -1,
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sd_stub() -> AsyncIterator[StubServer]:
    async with StubServer("a1111", models=[CHECKPOINT]) as stub:
        yield stub


@pytest_asyncio.fixture(loop_scope="session")
async def sd(sd_stub: StubServer) -> StubServer:
    await sd_stub.reset()
    return sd_stub


async def imagine(bus: BusClient, prompt: str, **query: Any) -> dict[str, Any]:
    """Submit an imagine query; its `query_result` or `error`."""
    accepted = await bus.request(
        {"type": "submit_query", "query": {"prompt": prompt, "query_type": "imagine", **query}}
    )
    assert accepted["type"] == "query_accepted", accepted
    return await bus.expect(
        where=lambda m: (
            m.get("query_id") == accepted["query_id"] and m["type"] in ("query_result", "error")
        ),
        within=20,
    )


def png(result: dict[str, Any]) -> Image.Image:
    assert result["type"] == "query_result", result
    assert result["result_type"] == "image"
    image = Image.open(io.BytesIO(base64.b64decode(result["result"], validate=True)))
    assert image.format == "PNG"
    return image


async def txt2img_bodies(stub: StubServer) -> list[dict[str, Any]]:
    return [r["json"] for r in await stub.requests() if r["path"] == "/sdapi/v1/txt2img"]


async def workers(broker: BrokerProcess, key: str) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        listed = await http.get("/api/v1/workers", headers={"Authorization": f"Bearer {key}"})
    listed.raise_for_status()
    return {w["name"]: w for w in listed.json()}


async def test_an_imagine_query_sends_the_seed_defaults_and_serves_the_png(
    realm: Realm, sd: StubServer
) -> None:
    await realm.add_worker("sd", sd, type="imagine", models=[CHECKPOINT])
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        result = await imagine(bus, "a lighthouse at dusk")

    assert png(result).size == (512, 512)
    assert result["worker"] == "sd"
    assert await txt2img_bodies(sd) == [{"prompt": "a lighthouse at dusk", **SEED_DEFAULTS}]

    url = f"/api/v1/queries/{result['query_id']}/output"
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        owner = await http.get(url, headers={"Authorization": f"Bearer {realm.sysop_key}"})
        assert owner.status_code == 200
        assert owner.headers["content-type"] == "image/png"
        assert owner.content == base64.b64decode(result["result"])
        cookie = await realm.broker.guest_cookie()
        stranger = await http.get(url, headers={"Cookie": f"rentahal_session={cookie}"})
        assert stranger.status_code == 404


async def test_options_override_the_defaults_within_bounds(realm: Realm, sd: StubServer) -> None:
    await realm.add_worker("sd", sd, type="imagine", models=[CHECKPOINT])
    chosen = {
        "steps": 20,
        "width": 768,
        "height": 640,
        "seed": 1234,
        "cfg_scale": 4.5,
        "sampler_name": "DPM++ 2M Karras",
        "negative_prompt": "blurry, text",
    }
    wild = {
        "steps": 999,  # → 150
        "width": 5000,  # → 2048
        "height": 100,  # → 96, a multiple of 8
        "seed": 2**40,  # → 2**32 - 1
        "cfg_scale": "very high",  # not a number: dropped
        "sampler_name": "Warp Drive",  # not a web UI sampler: dropped
        "negative_prompt": "x" * 2500,  # → its first 2000 characters
        "temperature": 0.3,  # not an image option: dropped
        "enable_hr": True,  # not passed through
    }
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        first = await imagine(bus, "a red fox", options=chosen)
        again = await imagine(bus, "a red fox", options=chosen)
        clamped = await imagine(bus, "a red fox", options=wild)
        tiny = await imagine(bus, "a red fox", options={"width": 3, "height": 70, "seed": -9})

    assert png(first).size == (768, 640)
    assert again["result"] == first["result"]  # the same seed, the same picture
    assert png(clamped).size == (2048, 96)
    assert png(tiny).size == (64, 64)
    chosen_body = {"prompt": "a red fox", **chosen}
    assert await txt2img_bodies(sd) == [
        chosen_body,
        chosen_body,
        {
            "prompt": "a red fox",
            **SEED_DEFAULTS,
            "steps": 150,
            "width": 2048,
            "height": 96,
            "seed": 2**32 - 1,
            "negative_prompt": "x" * 2000,
        },
        {"prompt": "a red fox", **SEED_DEFAULTS, "width": 64, "height": 64, "seed": -1},
    ]


async def test_health_and_models_come_from_the_web_ui_api(realm: Realm, sd: StubServer) -> None:
    await sd.configure(health_status=503, models=["sdxl/base.safetensors", CHECKPOINT])
    await realm.add_worker("sd", sd, type="imagine", models=[CHECKPOINT])

    async def sinking() -> bool:
        return (await workers(realm.broker, realm.sysop_key))["sd"]["health_score"] <= 80

    await eventually(sinking, within=10)
    await sd.configure(health_status=200)

    async def healthy() -> bool:
        worker = (await workers(realm.broker, realm.sysop_key))["sd"]
        return worker["health_score"] == 100 and worker["models"] == ["sdxl_base", "v1-5-pruned"]

    await eventually(healthy, within=10)
    probed = {(r["method"], r["path"]) for r in await sd.requests()}
    assert {("GET", "/sdapi/v1/options"), ("GET", "/sdapi/v1/sd-models")} <= probed

    # The model a user names goes to the web UI as the checkpoint to load, and stays loaded.
    async with httpx.AsyncClient(base_url=sd.url) as http:
        before = (await http.get("/sdapi/v1/options")).json()["sd_model_checkpoint"]
    assert before.startswith("sdxl/base.safetensors [")
    await sd.clear()
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        result = await imagine(bus, "a castle", model_name="v1-5-pruned")
    png(result)
    assert await txt2img_bodies(sd) == [
        {
            "prompt": "a castle",
            **SEED_DEFAULTS,
            "override_settings": {"sd_model_checkpoint": "v1-5-pruned"},
            "override_settings_restore_afterwards": False,
        }
    ]
    async with httpx.AsyncClient(base_url=sd.url) as http:
        options = (await http.get("/sdapi/v1/options")).json()
    assert options["sd_model_checkpoint"].startswith(f"{CHECKPOINT} [")


async def test_a_failing_web_ui_is_retried_then_fails_with_worker_error(
    realm: Realm, sd: StubServer
) -> None:
    await realm.add_worker("sd1", sd, type="imagine", models=[CHECKPOINT])
    await realm.add_worker("sd2", sd, type="imagine", models=[CHECKPOINT])
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        await sd.configure(fail_status=500, fail_count=1)
        recovered = await imagine(bus, "once broken")
        assert png(recovered).size == (512, 512)
        assert len(await txt2img_bodies(sd)) == 2

        await sd.clear()
        await sd.configure(fail_status=500)
        failed = await imagine(bus, "always broken")
    assert failed["type"] == "error" and failed["code"] == "worker_error", failed
    assert "500" in failed["message"]
    assert len(await txt2img_bodies(sd)) == 2  # once on each worker, never twice on one


async def test_a_refused_body_is_invalid_input_and_spares_the_worker(
    realm: Realm, sd: StubServer
) -> None:
    await realm.add_worker("sd", sd, type="imagine", models=[CHECKPOINT])
    await sd.configure(fail_status=422)
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        refused = await imagine(bus, "refuse me")
    assert refused["type"] == "error" and refused["code"] == "invalid", refused
    assert len(await txt2img_bodies(sd)) == 1  # not retried
    worker = (await workers(realm.broker, realm.sysop_key))["sd"]
    assert worker["health_score"] == 100 and worker["circuit"] == "closed"


async def test_the_key_from_api_key_env_goes_as_basic_auth(tmp_path: Path) -> None:
    """`--api-auth user:password` is HTTP Basic: a `user:password` key is sent that way, and a
    wrong one keeps the worker from being healthy."""
    key = await create_sysop(tmp_path)
    env = FAST_ENV | {"SD_AUTH": "painter:s3cret", "SD_WRONG": "painter:nope"}
    async with (
        StubServer("a1111", models=[CHECKPOINT], api_key="painter:s3cret") as stub,
        BrokerProcess(tmp_path, env=env) as broker,
    ):
        realm = Realm(broker, key)
        await realm.add_worker("good", stub, type="imagine", api_key_env="SD_AUTH")
        await realm.add_worker("bad", stub, type="imagine", api_key_env="SD_WRONG")

        async def bad_is_sinking() -> bool:
            listed = await workers(broker, key)
            return listed["bad"]["health_score"] < 100 and listed["good"]["health_score"] == 100

        await eventually(bad_is_sinking, within=10)
        async with broker.bus(api_key=key) as bus:
            result = await imagine(bus, "a locked door", model_name="good")
        png(result)

        sent = [r for r in await stub.requests() if r["path"] == "/sdapi/v1/txt2img"]
        basic = "Basic " + base64.b64encode(b"painter:s3cret").decode()
        assert [r["headers"]["authorization"] for r in sent] == [basic]
        wrong = "Basic " + base64.b64encode(b"painter:nope").decode()
        probes = [r for r in await stub.requests() if r["path"] == "/sdapi/v1/options"]
        assert wrong in {r["headers"].get("authorization") for r in probes}


# --- the adapter alone, against canned answers ----------------------------------------------


def _endpoint(**fields: Any) -> Endpoint:
    base: dict[str, Any] = {
        "name": "sd",
        "kind": "a1111",
        "url": "http://sd.test:7860",
        "models": ("v1-5-pruned",),
    }
    return Endpoint(**(base | fields))


def _client(routes: dict[str, httpx.Response]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return routes.get(request.url.path, httpx.Response(404, json={"detail": "Not Found"}))

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


MODELS = [{"title": "a.safetensors [0123456789]", "model_name": "a", "hash": "0123456789"}]


@pytest.mark.parametrize(
    ("routes", "status", "models"),
    [
        # no /sdapi (the API is off or proxied away) but the web UI answers its ping
        ({"/internal/ping": httpx.Response(200, json={})}, 200, None),
        (
            {
                "/sdapi/v1/options": httpx.Response(200, json={"sd_model_checkpoint": "a"}),
                "/sdapi/v1/sd-models": httpx.Response(200, json=MODELS),
            },
            200,
            ("a",),
        ),
        # a wrong key is not papered over by the unauthenticated ping
        (
            {
                "/sdapi/v1/options": httpx.Response(401, json={"detail": "Not authenticated"}),
                "/internal/ping": httpx.Response(200, json={}),
            },
            401,
            None,
        ),
        ({"/sdapi/v1/options": httpx.Response(200, text="<html>")}, 502, None),
        ({"/sdapi/v1/options": httpx.Response(503)}, 503, None),
    ],
    ids=["ping-only", "api", "wrong-key", "not-the-api", "down"],
)
async def test_probe(
    routes: dict[str, httpx.Response], status: int, models: tuple[str, ...] | None
) -> None:
    async with _client(routes) as client:
        report = await A1111Backend().probe(client, _endpoint(), 5)
    assert (report.status, report.models) == (status, models)


def _b64_image(fmt: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", (16, 8), "teal").save(out, fmt)
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(
    ("images", "info", "error"),
    [
        ([base64.b64encode(b"not an image at all").decode()], "{}", "not an image"),
        (["%%% not base64 %%%"], "{}", "not valid base64"),
        ([], "{}", "no images"),
        ([_b64_image("PNG")], "{}", None),
        ([_b64_image("JPEG")], "{}", None),
        ([_b64_image("WEBP")], "{}", None),  # re-encoded as PNG
        # a grid first, then the picture, as the web UI answers a batch
        (["grid-is-not-read", _b64_image("PNG")], '{"index_of_first_image": 1}', None),
    ],
    ids=["garbage", "bad-base64", "empty", "png", "jpeg", "webp", "grid-first"],
)
async def test_the_image_a_worker_answers_is_checked(
    images: list[str], info: str, error: str | None
) -> None:
    answer = {"images": images, "parameters": {}, "info": info}
    request = BackendRequest(prompt="p", query_type="imagine", model="v1-5-pruned")
    async with _client({"/sdapi/v1/txt2img": httpx.Response(200, json=answer)}) as client:
        produced = A1111Backend().generate(client, _endpoint(), request)
        if error is not None:
            with pytest.raises(BackendError, match=error):
                [part async for part in produced]
            return
        parts = [part async for part in produced]
    assert len(parts) == 1
    image = Image.open(io.BytesIO(base64.b64decode(parts[0])))
    assert image.size == (16, 8) and image.format in ("PNG", "JPEG")
