"""REST clients stream a query's answer as server-sent events (SPEC §4, the issue's
"streaming … to REST clients")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from rentahal.testing.process import StubServer
from tests.conftest import Realm


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow_ollama() -> AsyncIterator[StubServer]:
    # Answers after a second, a word every 20 ms: time for the client to start listening.
    async with StubServer("ollama", models=["llama3"], latency=1.0, chunk_delay=0.02) as stub:
        yield stub


async def read_events(response: httpx.Response) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    name = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
            assert data["type"] == name
            events.append(data)
    return events


async def test_a_rest_client_streams_the_answer(realm: Realm, slow_ollama: StubServer) -> None:
    await realm.add_worker("talker", slow_ollama, models=["llama3"])
    owner = {"Authorization": f"Bearer {realm.sysop_key}"}
    prompt = "tell me a story about a red fox"
    async with httpx.AsyncClient(base_url=realm.broker.url, timeout=30) as http:
        accepted = await http.post("/api/v1/queries", json={"prompt": prompt}, headers=owner)
        query_id = accepted.json()["query_id"]
        async with http.stream(
            "GET", f"/api/v1/queries/{query_id}/events", headers=owner
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = await read_events(response)
        chunks = [e["delta"] for e in events if e["type"] == "query_chunk"]
        final = events[-1]
        assert final["type"] == "query_result" and final["query_id"] == query_id
        assert len(chunks) > 3 and "".join(chunks) == final["result"] == f"echo: {prompt}"
        states = [e["state"] for e in events if e["type"] == "query_status"]
        assert states[-1] == "done" and "running" in states
        # Once finished, the stream is just the final event.
        async with http.stream("GET", f"/api/v1/queries/{query_id}/events", headers=owner) as again:
            assert [e["type"] for e in await read_events(again)] == ["query_result"]
        stranger = {"Cookie": f"rentahal_session={await realm.broker.guest_cookie()}"}
        hidden = await http.get(f"/api/v1/queries/{query_id}/events", headers=stranger)
        assert hidden.status_code == 404


async def test_an_answer_asked_for_whole_goes_from_dispatched_to_done(
    realm: Realm, slow_ollama: StubServer
) -> None:
    """No pieces and no `running` state (nor its write) for a query that wants its answer
    whole: it is running only while its answer streams."""
    await realm.add_worker("talker", slow_ollama, models=["llama3"])
    owner = {"Authorization": f"Bearer {realm.sysop_key}"}
    body = {"prompt": "all at once", "options": {"stream": False}}
    async with httpx.AsyncClient(base_url=realm.broker.url, timeout=30) as http:
        accepted = await http.post("/api/v1/queries", json=body, headers=owner)
        query_id = accepted.json()["query_id"]
        async with http.stream(
            "GET", f"/api/v1/queries/{query_id}/events", headers=owner
        ) as response:
            events = await read_events(response)
    assert [e["type"] for e in events if e["type"] == "query_chunk"] == []
    states = [e["state"] for e in events if e["type"] == "query_status"]
    assert states[-1] == "done" and "running" not in states
    assert events[-1]["result"] == "echo: all at once"
