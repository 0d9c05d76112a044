"""The `rentahal` backend adapter against the worker stub (a real process): chat and vision
ask the worker to stream and yield its pieces as they come; a worker that answers whole (the
seed's, an older node) is still read; an error line fails the request with the worker's
message. (Through a broker: test_chat_e2e; with the real worker node: test_speech_e2e.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from rentahal.backends.base import BackendError, BackendRequest, Endpoint
from rentahal.backends.rentahal_worker import RentahalBackend, predict_body
from rentahal.testing.process import StubServer

PROMPT = "what is the weather today"
ANSWER = f"echo: {PROMPT}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def worker_stub() -> AsyncIterator[StubServer]:
    async with StubServer("rentahal") as stub:
        yield stub


@pytest_asyncio.fixture(loop_scope="session")
async def stub(worker_stub: StubServer) -> StubServer:
    await worker_stub.reset()
    return worker_stub


def ask(query_type: str = "chat") -> BackendRequest:
    image = "aGVsbG8=" if query_type == "vision" else None
    return BackendRequest(
        prompt=PROMPT, query_type=query_type, model="", image=image, job_id="q1.0"
    )


async def generated(stub: StubServer, request: BackendRequest) -> list[tuple[float, str]]:
    """Each piece the adapter yields, with when it came."""
    endpoint = Endpoint(name="w1", kind="rentahal", url=stub.url)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        return [
            (time.monotonic(), piece)
            async for piece in RentahalBackend().generate(http, endpoint, request)
        ]


@pytest.mark.parametrize("query_type", ["chat", "vision"])
async def test_the_answer_streams_in_the_pieces_the_worker_writes(
    stub: StubServer, query_type: str
) -> None:
    await stub.configure(chunk_delay=0.05)
    pieces = await generated(stub, ask(query_type))
    assert [piece for _, piece in pieces] == ["echo:", " what", " is", " the", " weather", " today"]
    assert pieces[0][0] < pieces[-1][0]  # yielded as they came, not gathered
    (sent,) = [r for r in await stub.requests() if r["path"] == "/predict"]
    assert sent["json"]["stream"] is True
    assert sent["headers"]["idempotency-key"] == "q1.0"


async def test_a_worker_that_answers_whole_is_read_whole(stub: StubServer) -> None:
    await stub.configure(streams=False)  # ignores "stream", as the seed's worker does
    pieces = await generated(stub, ask())
    assert [piece for _, piece in pieces] == [ANSWER]


def test_only_chat_and_vision_are_asked_to_stream() -> None:
    for query_type in ("stt", "tts", "imagine"):
        body = predict_body(BackendRequest(prompt="hi", query_type=query_type, model=""))
        assert "stream" not in body, query_type
    assert predict_body(ask())["stream"] is True


async def test_an_error_line_fails_the_request_with_the_workers_message(
    stub: StubServer,
) -> None:
    await stub.configure(error_after_chunks=2)
    with pytest.raises(BackendError, match="failed mid-answer: stub engine failed mid-answer"):
        await generated(stub, ask())


async def test_an_error_status_before_the_stream_is_an_error_with_its_status(
    stub: StubServer,
) -> None:
    await stub.configure(fail_status=500)
    with pytest.raises(BackendError, match="HTTP 500") as raised:
        await generated(stub, ask())
    assert raised.value.status == 500
