"""The stub AI servers, run as real processes and driven over HTTP exactly as the broker will.

One process per protocol is shared by the module and reset before each test, which keeps
the file fast while every test still starts from the launch behaviour.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from rentahal.testing.process import ServerProcess, ServerStartError, StubServer

API_KEY = "sk-stub-0123456789"
USER_HI = [{"role": "user", "content": "hi there"}]


@pytest_asyncio.fixture(scope="module")
async def worker_server() -> AsyncIterator[StubServer]:
    async with StubServer("rentahal") as stub:
        yield stub


@pytest_asyncio.fixture(scope="module")
async def ollama_server() -> AsyncIterator[StubServer]:
    async with StubServer("ollama", models=["llama3", "llava:7b"]) as stub:
        yield stub


@pytest_asyncio.fixture(scope="module")
async def openai_server() -> AsyncIterator[StubServer]:
    async with StubServer("openai", models=["gpt-4o-mini"], api_key=API_KEY) as stub:
        yield stub


@pytest.fixture
async def worker(worker_server: StubServer) -> StubServer:
    await worker_server.reset()
    return worker_server


@pytest.fixture
async def ollama(ollama_server: StubServer) -> StubServer:
    await ollama_server.reset()
    return ollama_server


@pytest.fixture
async def openai(openai_server: StubServer) -> StubServer:
    await openai_server.reset()
    return openai_server


def client(stub: StubServer, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stub.url, trust_env=False, **kwargs)


def openai_client(stub: StubServer, **kwargs: Any) -> httpx.AsyncClient:
    return client(stub, headers={"Authorization": f"Bearer {API_KEY}"}, **kwargs)


async def wait_for_stats(
    stub: StubServer, predicate: Callable[[dict[str, int]], bool]
) -> dict[str, int]:
    """Poll the stub's counters until they match (within 5 s), instead of guessing a sleep."""
    async with asyncio.timeout(5):
        while True:
            stats = await stub.stats()
            if predicate(stats):
                return stats
            await asyncio.sleep(0.02)


# --- RENT A HAL worker protocol ------------------------------------------------------


async def test_worker_predict_and_health(worker: StubServer) -> None:
    assert worker.address == f"127.0.0.1:{worker.port}"
    assert worker.url == f"http://{worker.address}"
    payload = {"prompt": "hello", "type": "chat", "model_type": "worker", "model_name": "llama3"}
    async with client(worker) as http:
        health = await http.get("/health")
        answer = await http.post("/predict", json=payload)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (answer.status_code, answer.json()) == (200, {"response": "echo: hello"})


async def test_worker_health_status_is_configurable(worker: StubServer) -> None:
    await worker.configure(health_status=503)
    async with client(worker) as http:
        assert (await http.get("/health")).status_code == 503


async def test_fail_status_recovers_after_fail_count(worker: StubServer) -> None:
    await worker.configure(fail_status=500, fail_count=2)
    async with client(worker) as http:
        statuses = [(await http.post("/predict", json={"prompt": "x"})).status_code for _ in "abc"]
    assert statuses == [500, 500, 200]


async def test_latency_is_honoured(worker: StubServer) -> None:
    await worker.configure(latency=0.3)
    async with client(worker) as http:
        started = time.monotonic()
        response = await http.post("/predict", json={"prompt": "slow"})
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.3


async def test_requests_are_recorded_and_cleared(worker: StubServer) -> None:
    payload = {"prompt": "p", "type": "chat", "model_type": "worker", "model_name": "m"}
    async with client(worker) as http:
        await http.post("/predict", json=payload, headers={"X-Trace": "abc"})
    [recorded] = await worker.requests()  # the /_stub calls themselves are not logged
    assert (recorded["method"], recorded["path"], recorded["json"]) == ("POST", "/predict", payload)
    assert recorded["headers"]["x-trace"] == "abc"
    assert recorded["time"] == pytest.approx(time.time(), abs=5)
    await worker.clear()
    assert await worker.requests() == []


@pytest.mark.parametrize("patch", [{"latencyy": 1}, {"latency": "1"}, {"models": "llama3"}])
async def test_bad_behaviour_is_rejected(worker: StubServer, patch: dict[str, Any]) -> None:
    with pytest.raises(httpx.HTTPStatusError) as error:
        await worker.configure(**patch)
    assert error.value.response.status_code == 400


# --- Ollama -----------------------------------------------------------------------------


async def test_ollama_probes_and_tags(ollama: StubServer) -> None:
    async with client(ollama) as http:
        root = await http.get("/")
        version = (await http.get("/api/version")).json()
        tags = (await http.get("/api/tags")).json()
    assert root.text == "Ollama is running"
    assert version.keys() == {"version"}
    names = [model["name"] for model in tags["models"]]
    assert names == ["llama3:latest", "llava:7b"]
    entry = tags["models"][0]
    assert {"model", "modified_at", "size", "digest", "details"} <= entry.keys()


async def test_ollama_chat_streams_ndjson(ollama: StubServer) -> None:
    body = {"model": "llama3", "messages": USER_HI}  # Ollama streams by default
    async with client(ollama) as http:
        response = await http.post("/api/chat", json=body)
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    deltas, final = lines[:-1], lines[-1]
    assert len(deltas) > 1
    assert all(not line["done"] and line["message"]["role"] == "assistant" for line in deltas)
    assert "".join(line["message"]["content"] for line in deltas) == "echo: hi there"
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == len(deltas) and final["total_duration"] > 0


async def test_ollama_chat_without_streaming(ollama: StubServer) -> None:
    body = {"model": "llava:7b", "messages": USER_HI, "stream": False}
    async with client(ollama) as http:
        answer = (await http.post("/api/chat", json=body)).json()
    assert answer["message"] == {"role": "assistant", "content": "echo: hi there"}
    assert answer["done"] is True and answer["model"] == "llava:7b"


async def test_ollama_unknown_model_is_404(ollama: StubServer) -> None:
    async with client(ollama) as http:
        response = await http.post("/api/chat", json={"model": "x", "messages": USER_HI})
    assert response.status_code == 404
    assert response.json() == {"error": 'model "x" not found, try pulling it first'}


async def test_stream_crash_drops_the_connection(ollama: StubServer) -> None:
    await ollama.configure(crash_after_chunks=1)
    async with client(ollama) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/api/chat", json={"model": "llama3", "messages": USER_HI})


async def test_abandoned_stream_counts_as_disconnected(ollama: StubServer) -> None:
    await ollama.configure(chunk_delay=1.0)
    body = {"model": "llama3", "messages": USER_HI}
    async with client(ollama) as http, http.stream("POST", "/api/chat", json=body) as response:
        first = await anext(response.aiter_lines())
    assert json.loads(first)["done"] is False
    stats = await wait_for_stats(ollama, lambda s: s["disconnected"] == 1)
    assert stats == {"in_flight": 0, "completed": 0, "disconnected": 1}


# --- OpenAI-compatible --------------------------------------------------------------------


async def test_openai_models(openai: StubServer) -> None:
    async with openai_client(openai) as http:
        listing = (await http.get("/v1/models")).json()
    assert listing["object"] == "list"
    assert [(m["id"], m["object"]) for m in listing["data"]] == [("gpt-4o-mini", "model")]


async def test_openai_rejects_missing_or_wrong_key(openai: StubServer) -> None:
    async with client(openai) as http:
        missing = await http.get("/v1/models")
        wrong = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": USER_HI},
            headers={"Authorization": "Bearer sk-wrong-key-0000"},
        )
    assert missing.status_code == wrong.status_code == 401
    error = wrong.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["param"] is None and "Incorrect API key" in error["message"]


async def test_openai_chat_completion(openai: StubServer) -> None:
    body = {"model": "gpt-4o-mini", "messages": USER_HI, "max_tokens": 100}
    async with openai_client(openai) as http:
        completion = (await http.post("/v1/chat/completions", json=body)).json()
    assert completion["object"] == "chat.completion" and completion["id"].startswith("chatcmpl-")
    [choice] = completion["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "echo: hi there"
    assert choice["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] == 3


async def test_openai_chat_streams_sse(openai: StubServer) -> None:
    body = {"model": "gpt-4o-mini", "messages": USER_HI, "stream": True}
    async with openai_client(openai) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[-1] == {} and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(delta["content"] for delta in deltas[1:-1]) == "echo: hi there"


async def test_openai_unknown_model_is_404(openai: StubServer) -> None:
    async with openai_client(openai) as http:
        response = await http.post("/v1/chat/completions", json={"model": "x", "messages": USER_HI})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_client_timeout_during_latency_counts_as_disconnected(openai: StubServer) -> None:
    await openai.configure(latency=60)
    body = {"model": "gpt-4o-mini", "messages": USER_HI}
    async with openai_client(openai, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json=body)
    # The stub drops the work at once, long before its 60 s latency would have elapsed.
    stats = await wait_for_stats(openai, lambda s: s["in_flight"] == 0)
    assert stats == {"in_flight": 0, "completed": 0, "disconnected": 1}


# --- process management ------------------------------------------------------------------


async def test_kill_ends_the_process_abruptly() -> None:
    stub = StubServer("rentahal")
    async with stub:
        await stub.kill()
        assert not stub.running
        assert stub.returncode == -signal.SIGKILL
        with pytest.raises(httpx.ConnectError):
            await stub.stats()


async def test_start_failure_reports_the_output() -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit('boom: cannot start')"]
    server = ServerProcess(argv, "http://127.0.0.1:9/never", startup_timeout=5)
    with pytest.raises(ServerStartError, match="boom: cannot start"):
        await server.start()
    assert server.returncode == 1
