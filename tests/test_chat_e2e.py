"""A chat query end to end: browser bus → broker → each backend protocol → back, streamed."""

from __future__ import annotations

import pytest

from rentahal.testing.process import StubServer
from tests.conftest import Realm


@pytest.fixture(params=["ollama", "openai", "rentahal"])
def stub(request: pytest.FixtureRequest) -> StubServer:
    return request.getfixturevalue(f"{request.param}_stub")


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_chat_through_each_backend(realm: Realm, stub: StubServer, stream: bool) -> None:
    protocol = stub.protocol
    await stub.reset()
    await realm.add_worker("w1", stub)
    cookie = await realm.broker.guest_cookie()
    async with realm.broker.bus(cookie=cookie) as bus:
        await bus.expect("user_info")
        reply = await bus.request(
            {
                "type": "submit_query",
                "query": {
                    "prompt": "what is the weather today",
                    "query_type": "chat",
                    "model_type": "worker_node",
                    "model_name": "",
                    "options": {"stream": stream},
                },
            }
        )
        assert reply["type"] == "query_accepted", reply
        query_id = reply["query_id"]
        result = await bus.expect("query_result", lambda m: m["query_id"] == query_id)
        chunks = [m["delta"] for m in bus.seen if m["type"] == "query_chunk"]

    assert result["result"] == "echo: what is the weather today"
    assert result["result_type"] == "text"
    assert result["cost"] == pytest.approx(0.01 + 0.001 * result["processing_time"], abs=1e-6)
    if stream:
        assert len(chunks) > 1 and "".join(chunks) == result["result"]
    elif not stream:
        assert chunks == []

    sent = [r for r in await stub.requests() if r["method"] == "POST"]
    assert len(sent) == 1
    body = sent[0]["json"]
    if protocol == "rentahal":
        assert body["prompt"] == "what is the weather today" and body["type"] == "chat"
        assert body["stream"] is True  # asked to stream even for a whole answer: it may be spoken
    else:
        assert body["messages"] == [{"role": "user", "content": "what is the weather today"}]
        assert body["stream"] is stream
        assert body["model"] == ("llama3:latest" if protocol == "ollama" else "gpt-4o-mini")


async def test_a_worker_failing_mid_answer_fails_the_query_with_its_message(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await rentahal_stub.configure(error_after_chunks=2)
    await realm.add_worker("w1", rentahal_stub)
    cookie = await realm.broker.guest_cookie()
    async with realm.broker.bus(cookie=cookie) as bus:
        await bus.expect("user_info")
        reply = await bus.request(
            {"type": "submit_query", "query": {"prompt": "tell me", "query_type": "chat"}}
        )
        assert reply["type"] == "query_accepted", reply
        query_id = reply["query_id"]
        failed = await bus.expect("error", lambda m: m.get("query_id") == query_id, within=30)
    assert "stub engine failed mid-answer" in failed["message"], failed
