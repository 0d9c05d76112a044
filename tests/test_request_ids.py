"""A request id names one piece of work at every hop: taken from `X-Request-ID` or made,
answered to the client, and sent on to the worker that runs the query (issue 15, item 8)."""

from __future__ import annotations

import os
import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from rentahal import request_ids
from rentahal.request_ids import RequestIdMiddleware, accepted_or_new
from rentahal.testing.process import StubServer
from rentahal.worker.app import create_worker_app
from rentahal.worker.engines import EngineOptions
from rentahal.worker.engines.echo import EchoEngine
from rentahal.worker.service import WorkerService
from tests.conftest import Realm

pytestmark = pytest.mark.shared_realm


@pytest.mark.parametrize(
    "sent", [None, "", "two words", "x" * 129, "a\u00e9b", "line\nbreak", 'quo"te']
)
def test_an_unusable_id_is_replaced_by_a_new_one(sent: str | None) -> None:
    made = accepted_or_new(sent)
    assert made != sent and re.fullmatch(r"[0-9a-f]{32}", made)
    assert accepted_or_new(sent) != made  # each one new


def test_a_client_token_is_kept() -> None:
    for sent in ("abc-123", "req_9.1:2/3+4=", "x" * 128):
        assert accepted_or_new(sent) == sent


async def test_what_is_logged_while_serving_carries_the_id() -> None:
    """The id is bound for the whole request: whatever the handler logs carries it."""

    async def who(_request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request_ids.current()))

    app = RequestIdMiddleware(Starlette(routes=[Route("/", who)]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        answer = await http.get("/", headers={"X-Request-ID": "bound-1"})
        assert answer.text == answer.headers["x-request-id"] == "bound-1"
        fresh = await http.get("/")
        assert fresh.text == fresh.headers["x-request-id"] != "bound-1"
    assert request_ids.current() is None  # nothing leaks out of the request


async def test_a_worker_node_takes_the_brokers_id() -> None:
    service = WorkerService("chat", EchoEngine(EngineOptions()))
    await service.load()
    transport = httpx.ASGITransport(app=create_worker_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as worker:
        answer = await worker.post(
            "/predict", json={"prompt": "hi"}, headers={"X-Request-ID": "from-broker"}
        )
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "from-broker"


async def worker_saw(stub: StubServer, prompt: str) -> str | None:
    for request in await stub.requests():
        if prompt in str(request.get("json")):
            return request["headers"].get("x-request-id")
    return None


async def test_rest_answers_the_id_and_the_worker_hears_it(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await realm.add_worker("traced", ollama_stub)
    owner = {"Authorization": f"Bearer {realm.sysop_key}"}
    async with httpx.AsyncClient(base_url=realm.broker.url, timeout=30) as http:
        made = await http.get("/api/v1/me", headers=owner)
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
        bad = await http.get("/api/v1/me", headers=owner | {"X-Request-ID": "no spaces allowed"})
        assert bad.headers["x-request-id"] != "no spaces allowed"

        prompt = "which request am I part of, rest?"
        answered = await http.post(
            "/api/v1/queries?wait=30",
            json={"prompt": prompt},
            headers=owner | {"X-Request-ID": "trace-rest-1"},
        )
        assert answered.headers["x-request-id"] == "trace-rest-1"
        assert answered.json()["query"]["state"] == "done", answered.json()
    assert await worker_saw(ollama_stub, prompt) == "trace-rest-1"


async def test_a_bus_query_carries_the_id_of_its_socket(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await realm.add_worker("traced-bus", ollama_stub)
    prompt = "which request am I part of, bus?"
    client = realm.broker.bus(api_key=realm.sysop_key)
    client.headers["X-Request-ID"] = "trace-bus-1"
    async with client as bus:
        accepted = await bus.request({"type": "chat", "prompt": prompt})
        await bus.expect(
            "query_result", lambda m: m.get("query_id") == accepted["query_id"], within=30
        )
    assert await worker_saw(ollama_stub, prompt) == "trace-bus-1"


def test_a_forked_process_makes_ids_of_its_own() -> None:
    """New ids are a per-process half and a count: a child forked after import (a pre-forking
    server, the tests' fork server) must not repeat its parent's."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first id and leave at once
        os.write(write, accepted_or_new(None).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    parent = accepted_or_new(None)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child[:16] != parent[:16]
