"""The `claude` backend (Anthropic's Messages API through the official SDK), end to end:
a real broker process drives a worker of kind "claude" against the Anthropic stub."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import pytest_asyncio
from PIL import Image

from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm, create_sysop

KEY = "sk-ant-test"
STUB_MODELS = ["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"]
MODEL = "claude-sonnet-4-5"  # the alias the sysop configures; the API lists dated ids
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# The SDK warns that claude-sonnet-4-5 (the broker's default Claude model) is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def claude_stub() -> AsyncIterator[StubServer]:
    async with StubServer("anthropic", models=STUB_MODELS, api_key=KEY) as stub:
        yield stub


@pytest_asyncio.fixture(loop_scope="session")
async def claude(tmp_path: Path, claude_stub: StubServer) -> AsyncIterator[Realm]:
    """A broker whose environment holds the key (and a wrong one) the workers name."""
    await claude_stub.reset()
    key = await create_sysop(tmp_path)
    env = {"ANTHROPIC_TEST_KEY": KEY, "ANTHROPIC_WRONG_KEY": "sk-ant-wrong", **FAST_ENV}
    async with BrokerProcess(tmp_path, env=env) as broker:
        yield Realm(broker, key)
    print(f"--- broker output ---\n{broker.output}")


async def add_claude(
    realm: Realm, stub: StubServer, name: str = "claude", **fields: object
) -> None:
    spec: dict[str, object] = {
        "kind": "claude",  # the stub's protocol is called "anthropic"
        "type": "chat",
        "models": [MODEL],
        "api_key_env": "ANTHROPIC_TEST_KEY",
    }
    await realm.add_worker(name, stub, **(spec | fields))


async def submit(bus: BusClient, prompt: str, **query: Any) -> str:
    reply = await bus.request(
        {"type": "submit_query", "query": {"prompt": prompt, "query_type": "chat"} | query}
    )
    assert reply["type"] == "query_accepted", reply
    query_id: str = reply["query_id"]
    return query_id


async def outcome(bus: BusClient, query_id: str) -> dict[str, Any]:
    """The `query_result` or `error` that ends the query."""
    message: dict[str, Any] = await bus.expect(
        where=lambda m: m.get("query_id") == query_id and m["type"] in ("query_result", "error")
    )
    return message


def chunks(bus: BusClient, query_id: str) -> list[str]:
    return [
        m["delta"] for m in bus.seen if m["type"] == "query_chunk" and m["query_id"] == query_id
    ]


async def posts(stub: StubServer) -> list[dict[str, Any]]:
    return [r for r in await stub.requests() if r["method"] == "POST"]


async def workers(realm: Realm) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=realm.broker.url) as client:
        response = await client.get(
            "/api/v1/workers", headers={"Authorization": f"Bearer {realm.sysop_key}"}
        )
    response.raise_for_status()
    return {w["name"]: w for w in response.json()}


def jpeg(width: int, height: int) -> str:
    picture = Image.new("RGB", (width, height))
    for x in range(0, width, 16):
        picture.paste((x % 256, 90, 200), (x, 0, x + 8, height))
    out = io.BytesIO()
    picture.save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()


# --- through the broker -------------------------------------------------------------------


async def test_streamed_chat(claude: Realm, claude_stub: StubServer) -> None:
    await add_claude(claude, claude_stub)
    async with claude.broker.bus(cookie=await claude.broker.guest_cookie()) as bus:
        query_id = await submit(bus, "what is the weather today")
        result = await outcome(bus, query_id)
        deltas = chunks(bus, query_id)

    assert result["type"] == "query_result", result
    assert result["result"] == "echo: what is the weather today"
    assert result["result_type"] == "text"
    assert len(deltas) > 1 and "".join(deltas) == result["result"]

    [sent] = await posts(claude_stub)
    assert sent["path"] == "/v1/messages"
    assert sent["json"] == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "what is the weather today"}],
        "stream": True,
    }
    # The key from the env var the worker names, as x-api-key and nothing else.
    assert sent["headers"]["x-api-key"] == KEY
    assert "authorization" not in sent["headers"]
    assert DATE.match(sent["headers"]["anthropic-version"])
    assert sent["headers"]["accept"] == "application/json"


async def test_the_seed_model_type_claude_picks_claude_over_a_local_chat_worker(
    claude: Realm, claude_stub: StubServer, ollama_stub: StubServer
) -> None:
    """The seed's client asks for Claude by `model_type` alone (no `model_name`), though a
    local worker serves chat too."""
    await ollama_stub.reset()
    await claude.add_worker("local", ollama_stub)
    await add_claude(claude, claude_stub)
    async with claude.broker.bus(cookie=await claude.broker.guest_cookie()) as bus:
        for n in range(3):
            chosen = await outcome(bus, await submit(bus, f"who are you {n}", model_type="claude"))
            assert chosen["worker"] == "claude", chosen
    asked = [p["json"]["messages"][0]["content"] for p in await posts(claude_stub)]
    assert asked == ["who are you 0", "who are you 1", "who are you 2"]
    assert not [r for r in await ollama_stub.requests() if r["path"] == "/api/chat"]


async def test_whole_answer_and_options(claude: Realm, claude_stub: StubServer) -> None:
    await add_claude(claude, claude_stub)
    async with claude.broker.bus(cookie=await claude.broker.guest_cookie()) as bus:
        query_id = await submit(
            bus,
            "tell me one two three four",
            options={"stream": False, "max_tokens": 3, "temperature": 0.4, "seed": 7},
        )
        result = await outcome(bus, query_id)
        assert chunks(bus, query_id) == []

    # Cut at max_tokens (the stub counts a word as a token); temperature and seed are not
    # sent: API version 2026-10-21 refuses sampling parameters and has no seed.
    assert result["type"] == "query_result", result
    assert result["result"] == "echo: tell me"
    [sent] = await posts(claude_stub)
    assert sent["json"] == {
        "model": MODEL,
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "tell me one two three four"}],
        "stream": False,
    }


async def test_vision_sends_the_image_as_a_block(claude: Realm, claude_stub: StubServer) -> None:
    await add_claude(claude, claude_stub, "claude-eye", type="vision")
    async with claude.broker.bus(cookie=await claude.broker.guest_cookie()) as bus:
        query_id = await submit(
            bus, "what is in this picture", query_type="vision", image=jpeg(1200, 800)
        )
        result = await outcome(bus, query_id)

    assert result["type"] == "query_result", result
    assert result["result"] == "echo: what is in this picture"
    [sent] = await posts(claude_stub)
    [message] = sent["json"]["messages"]
    image, text = message["content"]
    assert text == {"type": "text", "text": "what is in this picture"}
    assert image["type"] == "image"
    assert image["source"]["type"] == "base64"
    assert image["source"]["media_type"] == "image/jpeg"
    received = Image.open(io.BytesIO(base64.b64decode(image["source"]["data"])))
    assert received.format == "JPEG"
    assert received.size == (512, 341)  # fitted into 512×512 by the broker


async def test_wrong_key_fails_the_job_and_the_health(
    claude: Realm, claude_stub: StubServer
) -> None:
    await add_claude(claude, claude_stub, "claude-badkey", api_key_env="ANTHROPIC_WRONG_KEY")
    async with claude.broker.bus(cookie=await claude.broker.guest_cookie()) as bus:
        query_id = await submit(bus, "hello", model_name="claude-badkey")
        error = await outcome(bus, query_id)

    assert error["type"] == "error", error
    assert error["code"] == "worker_error"
    assert "401" in error["message"] and "authentication_error" in error["message"]
    [sent] = await posts(claude_stub)
    assert sent["headers"]["x-api-key"] == "sk-ant-wrong"

    # Its health checks are refused too (401 on /v1/models): the score only goes down.
    async def sinking() -> bool:
        return (await workers(claude))["claude-badkey"]["health_score"] <= 70

    await eventually(sinking)
    probes = [r for r in await claude_stub.requests() if r["path"] == "/v1/models"]
    assert probes and all(r["headers"]["x-api-key"] == "sk-ant-wrong" for r in probes)


async def test_refusals_and_failures(claude: Realm, claude_stub: StubServer) -> None:
    await add_claude(claude, claude_stub)
    async with claude.broker.bus(cookie=await claude.broker.guest_cookie()) as bus:
        # 400 invalid_request_error: the input is bad, not the worker.
        await claude_stub.configure(fail_status=400, fail_count=1)
        refused = await outcome(bus, await submit(bus, "refuse this"))
        assert refused["type"] == "error" and refused["code"] == "invalid", refused
        assert "invalid_request_error" in refused["message"]
        assert (await workers(claude))["claude"]["health_score"] == 100

        # 529 overloaded_error: the worker failed (no other worker to retry on).
        await claude_stub.configure(fail_status=529, fail_count=1)
        failed = await outcome(bus, await submit(bus, "overload this"))
        assert failed["type"] == "error" and failed["code"] == "worker_error", failed
        assert "overloaded_error" in failed["message"]

        # An `error` event after the stream began (200, then overloaded_error).
        async with httpx.AsyncClient() as client:
            knob = await client.post(
                f"{claude_stub.url}/_stub/anthropic/stream_error",
                json={"error_type": "overloaded_error", "after_chunks": 1},
            )
            knob.raise_for_status()
        query_id = await submit(bus, "break off midway please")
        broken = await outcome(bus, query_id)
        assert broken["type"] == "error" and broken["code"] == "worker_error", broken
        assert "overloaded_error mid-stream" in broken["message"]
        assert chunks(bus, query_id) == ["echo:"]


async def test_health_and_models_from_the_models_api(
    claude: Realm, claude_stub: StubServer
) -> None:
    await add_claude(claude, claude_stub, models=[MODEL, "claude-haiku-4-5"])
    # The listed ids and their aliases; the configured models stay first, in their order
    # (the first is the worker's default model).
    expected = [MODEL, "claude-haiku-4-5", *STUB_MODELS]

    async def listed() -> bool:
        return bool((await workers(claude))["claude"]["models"] == expected)

    await eventually(listed)
    probe = next(r for r in await claude_stub.requests() if r["path"] == "/v1/models")
    assert probe["method"] == "GET"
    assert probe["headers"]["x-api-key"] == KEY
    assert probe["headers"]["anthropic-version"] == "2023-06-01"

    async with claude.broker.bus(cookie=await claude.broker.guest_cookie()) as bus:
        result = await outcome(bus, await submit(bus, "hi haiku", model_name="claude-haiku-4-5"))
    assert result["type"] == "query_result", result
    [sent] = await posts(claude_stub)
    assert sent["json"]["model"] == "claude-haiku-4-5"

    await claude_stub.configure(health_status=529)

    async def sick() -> bool:
        return (await workers(claude))["claude"]["health_score"] <= 80

    await eventually(sick)
    await claude_stub.configure(health_status=200)

    async def well() -> bool:
        return (await workers(claude))["claude"]["health_score"] == 100

    await eventually(well)


# --- the stub against the SDK itself --------------------------------------------------------


def sdk(stub: StubServer, key: str = KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=key, base_url=stub.url, max_retries=0)


async def test_sdk_parses_the_stub_stream_and_message(claude_stub: StubServer) -> None:
    await claude_stub.reset()
    client = sdk(claude_stub)
    messages: Any = [{"role": "user", "content": "count these words"}]
    async with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=messages
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == "echo: count these words" and len(pieces) == 4
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    assert final.usage.input_tokens == 3 and final.id.startswith("msg_")

    whole = await client.messages.create(model=STUB_MODELS[0], max_tokens=2, messages=messages)
    assert [block.type for block in whole.content] == ["text"]
    assert whole.content[0].type == "text" and whole.content[0].text == "echo: count"
    assert whole.stop_reason == "max_tokens" and whole.model == STUB_MODELS[0]

    page = await client.models.list()
    assert [m.id for m in page.data] == STUB_MODELS
    assert page.data[0].display_name == "Claude Sonnet 4.5"
    assert page.data[0].created_at.year == 2025 and page.has_more is False
    first = await client.models.list(limit=1)
    assert [m.id for m in first.data] == STUB_MODELS[:1] and first.has_more is True
    await client.close()


async def test_stub_errors_use_the_api_envelope(claude_stub: StubServer) -> None:
    await claude_stub.reset()
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        await sdk(claude_stub, "sk-ant-nope").models.list()
    assert wrong.value.status_code == 401
    assert wrong.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": wrong.value.body["request_id"],  # type: ignore[index]
    }
    with pytest.raises(anthropic.NotFoundError):
        await sdk(claude_stub).messages.create(
            model="claude-nonesuch", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )

    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=claude_stub.url, headers=headers) as raw:
        hello = {"role": "user", "content": "hi"}
        cases: list[tuple[dict[str, Any], dict[str, str], int, str]] = [
            ({"model": MODEL, "messages": [hello]}, {}, 400, "max_tokens: Field required"),
            ({"model": MODEL, "max_tokens": 5, "messages": []}, {}, 400, "at least one message"),
            ({"model": "gpt-4", "max_tokens": 5, "messages": [hello]}, {}, 404, "model: gpt-4"),
            (
                {"model": MODEL, "max_tokens": 5, "messages": [hello], "temperature": 0.5},
                {"anthropic-version": "2026-10-21"},
                400,
                "temperature: Extra inputs are not permitted",
            ),
            ({"model": MODEL, "max_tokens": 5, "messages": [hello]}, {"x-api-key": ""}, 401, ""),
        ]
        for body, extra, status, message in cases:
            response = await raw.post("/v1/messages", json=body, headers=extra)
            assert response.status_code == status, (body, response.text)
            error = response.json()
            assert error["type"] == "error" and message in error["error"]["message"]
            assert response.headers["request-id"] == error["request_id"]
        # API version 2023-06-01 still takes temperature.
        old = await raw.post(
            "/v1/messages",
            json={"model": MODEL, "max_tokens": 5, "messages": [hello], "temperature": 0.5},
        )
        assert old.status_code == 200 and old.json()["content"][0]["text"] == "echo: hi"
        unversioned = await raw.get("/v1/models", headers={"anthropic-version": ""})
        assert unversioned.status_code == 400
