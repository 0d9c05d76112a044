"""The `openai` backend's chat, spoken over the broker's pooled client (not the SDK), against
the OpenAI stub (a real process): whole and streamed answers, OpenAI's error envelope kept with
its status, and connections that go back to the pool. (Through a broker: test_chat_e2e and
test_openai_api; the media endpoints, still on the SDK: test_backend_openai_media.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from rentahal.backends.base import BackendError, BackendRequest, Endpoint
from rentahal.backends.openai_compat import OpenAIBackend
from rentahal.testing.process import StubServer

PROMPT = "what is the weather today"
MODEL = "gpt-4o-mini"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def openai_server() -> AsyncIterator[StubServer]:
    async with StubServer("openai", models=[MODEL], api_key="sk-test") as stub:
        yield stub


@pytest_asyncio.fixture(loop_scope="session")
async def stub(openai_server: StubServer) -> StubServer:
    await openai_server.reset()
    return openai_server


def endpoint(stub: StubServer, key: str = "sk-test") -> Endpoint:
    return Endpoint(name="w1", kind="openai", url=stub.url, key=key, models=(MODEL,))


def ask(*, stream: bool) -> BackendRequest:
    return BackendRequest(
        prompt=PROMPT, query_type="chat", model=MODEL, stream=stream, options={"max_tokens": 50}
    )


async def answer(
    http: httpx.AsyncClient, stub: StubServer, *, stream: bool, key: str = "sk-test"
) -> list[str]:
    backend = OpenAIBackend()
    return [
        piece async for piece in backend.generate(http, endpoint(stub, key), ask(stream=stream))
    ]


async def test_whole_and_streamed_answers_say_the_same(stub: StubServer) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        whole = await answer(http, stub, stream=False)
        pieces = await answer(http, stub, stream=True)
    assert len(whole) == 1 and PROMPT in whole[0]
    assert len(pieces) > 1 and "".join(pieces) == whole[0]
    sent = [r for r in await stub.requests() if r["path"] == "/v1/chat/completions"]
    assert [r["json"]["stream"] for r in sent] == [False, True]
    assert all(r["json"]["max_tokens"] == 50 for r in sent)
    assert all(r["headers"]["authorization"] == "Bearer sk-test" for r in sent)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refusal_keeps_its_status_and_the_servers_message(
    stub: StubServer, stream: bool
) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        with pytest.raises(BackendError) as refused:
            await answer(http, stub, stream=stream, key="sk-wrong")
    assert refused.value.status == 401
    assert str(refused.value).startswith("worker answered HTTP 401: ")
    assert "{" not in str(refused.value)  # the message, not the JSON envelope
