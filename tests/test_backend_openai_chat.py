"""The `openai` backend's chat, spoken over the broker's pooled client (not the SDK), against
the OpenAI stub (a real process): whole and streamed answers, OpenAI's error envelope kept with
its status, and connections that go back to the pool. (Through a broker: test_chat_e2e and
test_openai_api; the media endpoints, still on the SDK: test_backend_openai_media.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from rentahal import request_ids
from rentahal.backends.base import BackendError, BackendRequest, Endpoint
from rentahal.backends.openai_compat import OpenAIBackend
from rentahal.backends.transport import WorkerClient, post_json
from rentahal.net import free_port
from rentahal.testing.process import StubServer

# A plain httpx client (as a backend may be given one), and the broker's, whose generation
# calls skip httpx for aiohttp: both must give the same answers and errors.
CLIENTS: dict[str, Callable[[], httpx.AsyncClient]] = {
    "httpx": lambda: httpx.AsyncClient(trust_env=False),
    "broker": WorkerClient,
}

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


@pytest.mark.parametrize("client", list(CLIENTS))
async def test_whole_and_streamed_answers_say_the_same(stub: StubServer, client: str) -> None:
    async with CLIENTS[client]() as http:
        whole = await answer(http, stub, stream=False)
        pieces = await answer(http, stub, stream=True)
    assert len(whole) == 1 and PROMPT in whole[0]
    assert len(pieces) > 1 and "".join(pieces) == whole[0]
    sent = [r for r in await stub.requests() if r["path"] == "/v1/chat/completions"]
    assert [r["json"]["stream"] for r in sent] == [False, True]
    assert all(r["json"]["max_tokens"] == 50 for r in sent)
    assert all(r["headers"]["authorization"] == "Bearer sk-test" for r in sent)


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("stream", [False, True])
async def test_a_refusal_keeps_its_status_and_the_servers_message(
    stub: StubServer, stream: bool, client: str
) -> None:
    async with CLIENTS[client]() as http:
        with pytest.raises(BackendError) as refused:
            await answer(http, stub, stream=stream, key="sk-wrong")
    assert refused.value.status == 401
    assert str(refused.value).startswith("worker answered HTTP 401: ")
    assert "{" not in str(refused.value)  # the message, not the JSON envelope


async def test_the_broker_client_keeps_one_connection_and_names_the_request(
    stub: StubServer,
) -> None:
    """Answers read to the end give their connection back to the pool: six calls, whole and
    streamed, one after the other, are one connection; each carries the request's id."""
    async with WorkerClient() as http:
        with request_ids.bound("req-42"):
            for stream in (False, True, False, True, False, True):
                assert await answer(http, stub, stream=stream)
    sent = [r for r in await stub.requests() if r["path"] == "/v1/chat/completions"]
    assert len(sent) == 6 and len({r["peer"] for r in sent}) == 1
    assert {r["headers"]["x-request-id"] for r in sent} == {"req-42"}


@pytest.mark.parametrize("client", list(CLIENTS))
async def test_a_worker_that_is_not_there_is_a_transport_error(
    stub: StubServer, client: str
) -> None:
    """The scheduler counts httpx's transport errors against the worker, whichever lane."""
    gone = Endpoint(
        name="w1", kind="openai", url=f"http://127.0.0.1:{free_port()}", models=(MODEL,)
    )
    async with CLIENTS[client]() as http:
        with pytest.raises(httpx.TransportError):
            [piece async for piece in OpenAIBackend().generate(http, gone, ask(stream=False))]


async def test_the_broker_client_reads_lines_of_any_length() -> None:
    """A worker's line may carry a whole answer: longer than aiohttp's own line reader takes
    (its buffer's limit), cut across chunks, with `\\r\\n` or `\\n` endings."""
    long_line = "x" * 3_000_000

    async def lines(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for piece in (long_line[:1_000_000], long_line[1_000_000:] + "\r\n", "short\n", "last"):
            await response.write(piece.encode())
        return response

    app = web.Application()
    app.router.add_post("/lines", lines)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with (
            WorkerClient() as http,
            post_json(http, f"http://127.0.0.1:{port}/lines", {}, {}) as reply,
        ):
            assert [line async for line in reply.aiter_lines()] == [long_line, "short", "last"]
    finally:
        await runner.cleanup()
