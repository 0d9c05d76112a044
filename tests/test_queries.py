"""One query path for every transport (`rentahal.queries`): the event that ends a query says
so on the wire (`is_final`), and REST's wait and stream read the service's outcome and typed
events, whichever transport queued the query."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from rentahal.testing.process import StubServer
from tests.conftest import Realm

pytestmark = pytest.mark.shared_realm


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow_ollama() -> AsyncIterator[StubServer]:
    # Answers after a second, a word every 20 ms: time to watch, or to cancel.
    async with StubServer("ollama", models=["llama3"], latency=1.0, chunk_delay=0.02) as stub:
        yield stub


async def server_sent(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        async for line in response.aiter_lines()
        if line.startswith("data: ")
    ]


async def test_the_event_that_ends_a_query_says_so(realm: Realm, slow_ollama: StubServer) -> None:
    await realm.add_worker("final-teller", slow_ollama, models=["llama3"])
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        accepted = await bus.request({"type": "chat", "prompt": "a fox", "model_name": "llama3"})
        query_id = accepted["query_id"]
        result = await bus.expect("query_result", lambda m: m["query_id"] == query_id, within=30)
        assert result["is_final"] is True
        before = [m for m in bus.seen if m.get("query_id") == query_id and m is not result]
        assert {m["type"] for m in before} >= {"query_status", "query_chunk"}
        assert not any(m.get("is_final") for m in before)

        # A refusal names no query and ends none.
        refused = await bus.request({"type": "cancel_query", "query_id": "no-such-query"})
        assert refused["type"] == "error" and refused["is_final"] is False

        # A query that ends without a result ends with its error.
        accepted = await bus.request({"type": "chat", "prompt": "a hare", "model_name": "llama3"})
        cancelled_id = accepted["query_id"]
        assert (await bus.request({"type": "cancel_query", "query_id": cancelled_id}))[
            "type"
        ] == "ok"
        error = await bus.expect("error", lambda m: m.get("query_id") == cancelled_id, within=10)
        assert error["code"] == "cancelled" and error["is_final"] is True


async def test_rest_waits_for_and_streams_any_query(realm: Realm, slow_ollama: StubServer) -> None:
    await realm.add_worker("rest-teller", slow_ollama, models=["llama3"])
    owner = {"Authorization": f"Bearer {realm.sysop_key}"}
    async with (
        realm.broker.bus(api_key=realm.sysop_key) as bus,
        httpx.AsyncClient(base_url=realm.broker.url, timeout=30, headers=owner) as http,
    ):
        # Queued on the bus, awaited over REST.
        accepted = await bus.request({"type": "chat", "prompt": "a crow", "model_name": "llama3"})
        waited = await http.get(f"/api/v1/queries/{accepted['query_id']}", params={"wait": 30})
        assert waited.json()["state"] == "done" and waited.json()["result"] == "echo: a crow"

        # Queued and awaited over REST.
        answered = await http.post(
            "/api/v1/queries", params={"wait": 30}, json={"prompt": "a owl", "model_name": "llama3"}
        )
        assert answered.json()["query"]["state"] == "done"

        # Streamed while it is cancelled: the stream ends with the error that ended it.
        queued = await http.post("/api/v1/queries", json={"prompt": "a wren"})
        query_id = queued.json()["query_id"]
        async with http.stream("GET", f"/api/v1/queries/{query_id}/events") as response:
            assert (await http.delete(f"/api/v1/queries/{query_id}")).status_code == 204
            events = await server_sent(response)
        assert events[-1]["type"] == "error" and events[-1]["code"] == "cancelled"
        assert events[-1]["is_final"] is True and events[-1]["query_id"] == query_id
        assert not any(e.get("is_final") for e in events[:-1])
