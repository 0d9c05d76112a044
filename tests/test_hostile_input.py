"""Faults and hostile input: REST, the OpenAI API (`/v1`) and the bus hold what a user sends
to the same rules, each refusing it with its own clear 4xx before anything is stored.

- Text: no lone UTF-16 surrogate (JSON may escape one; no UTF-8 can carry it) and no NUL
  (PostgreSQL's text and jsonb cannot hold it), in any field, key or path parameter, on
  SQLite and PostgreSQL alike (`messages.text_fault`).
- Query options: one model with bounds (`messages.QueryOptions`), so `max_tokens: -1` or a
  NaN temperature is refused where the query comes in, not failed later by a worker.
- `/v1` answers every error in OpenAI's shape, FastAPI's shapes stay elsewhere, and a 422
  that echoes unsendable input (a surrogate, a NaN) is still sent.

Every refused request leaves no query behind: the history holds only what was accepted.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from tests.conftest import FAST_ENV, Realm, create_sysop
from tests.media import make_wav

CHAT = [{"role": "user", "content": "hi"}]


def http_client(broker: BrokerProcess, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=broker.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


async def post_raw(http: httpx.AsyncClient, url: str, body: str) -> httpx.Response:
    """POST JSON text as it is: what `json=` would not send (NaN, escaped surrogates)."""
    return await http.post(url, content=body, headers={"Content-Type": "application/json"})


async def history(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/queries", params={"limit": 100})
    assert response.status_code == 200, response.text
    queries: list[dict[str, Any]] = response.json()
    return queries


def rest_refusal(response: httpx.Response) -> str:
    """The message of a REST 422 (FastAPI's shape for a body: one item per problem)."""
    assert response.status_code == 422, response.text
    (problem, *_) = response.json()["detail"]
    return str(problem["msg"])


def openai_refusal(response: httpx.Response, param: str | None = None) -> str:
    """The message of an OpenAI-shaped 400 (`{"error": {message, type, param, code}}`)."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return str(error["message"])


async def bus_refusal(bus: BusClient, message: dict[str, Any], code: str = "invalid") -> str:
    reply = await bus.request(message)
    assert (reply["type"], reply.get("code")) == ("error", code), reply
    return str(reply["message"])


# --- lone surrogates -------------------------------------------------------------------------


async def test_lone_surrogates_are_refused_everywhere(realm: Realm) -> None:
    """Before: a 500 (UnicodeEncodeError) on REST, for any text field."""
    async with http_client(realm.broker, realm.sysop_key) as http:
        for body in (
            '{"prompt": "\\ud800"}',
            '{"prompt": "hi", "model_name": "\\udfff"}',
            '{"prompt": "hi", "options": {"speaker": "a\\ud800"}}',
            '{"prompt": "hi", "options": {"\\ud800": 1}}',
        ):
            message = rest_refusal(await post_raw(http, "/api/v1/queries", body))
            assert "lone UTF-16 surrogate" in message, (body, message)
        for url, body in (
            ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "\\ud800"}]}'),
            ("/v1/chat/completions", '{"model": "\\ud800x", "messages": ' + json.dumps(CHAT) + "}"),
            ("/v1/images/generations", '{"prompt": "a \\udc00 fox"}'),
            ("/v1/audio/speech", '{"input": "hi", "voice": "\\ud83d"}'),
        ):
            message = openai_refusal(await post_raw(http, url, body))
            assert "lone UTF-16 surrogate" in message, (body, message)
        async with realm.broker.bus(api_key=realm.sysop_key) as bus:
            # Refused before the frame's id is read: a reply echoing it could not be sent.
            await bus.send('{"type": "chat", "id": 1, "prompt": "\\ud800"}')
            error = await bus.expect("error")
            assert (error["code"], error.get("response_to")) == ("malformed", None), error
            assert (await bus.request({"type": "ping"}))["type"] == "pong"
        assert await history(http) == []


# --- NUL ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (the broker's SQLite) or a fresh PostgreSQL database: PostgreSQL is where a NUL
    failed (a 500), SQLite stored it; both refuse it now."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def db_realm(tmp_path: Path, database_url: str | None) -> AsyncIterator[Realm]:
    env = FAST_ENV | ({"RENTAHAL_DATABASE_URL": database_url} if database_url else {})
    key = await create_sysop(tmp_path, database_url=database_url)
    async with BrokerProcess(tmp_path, env=env) as broker:
        yield Realm(broker, key)
    print(f"--- broker output ---\n{broker.output}")


async def test_nul_is_refused_on_every_route_that_keeps_text(
    db_realm: Realm, openai_stub: StubServer
) -> None:
    realm = db_realm
    await openai_stub.reset()
    await realm.add_worker("w", openai_stub, models=["gpt-4o-mini"])
    async with http_client(realm.broker, realm.sysop_key) as http:
        keys_before = [key["id"] for key in (await http.get("/api/v1/keys")).json()]
        for body in (
            {"prompt": "a\x00b"},
            {"prompt": "hi", "model_name": "gpt\x00"},
            {"prompt": "hi", "options": {"negative_prompt": "\x00"}},
            {"prompt": "hi", "options": {"a\x00": 1}},
            {"prompt": "hi", "image": "AAAA\x00"},
        ):
            message = rest_refusal(await http.post("/api/v1/queries", json=body))
            assert "NUL character" in message, (body, message)
        for url, body in (
            ("/api/v1/keys", {"name": "a\x00b"}),
            ("/api/v1/workers", {"name": "w2", "address": "127.0.0.1:9", "models": ["a\x00"]}),
            ("/api/v1/pools", {"name": "$P", "members": ["w\x00"]}),
        ):
            assert "NUL character" in rest_refusal(await http.post(url, json=body)), url
        for method, url in (
            ("GET", "/api/v1/queries/a%00b"),
            ("DELETE", "/api/v1/queries/a%00b"),
            ("GET", "/api/v1/queries/a%00b/output"),
            ("DELETE", "/api/v1/workers/w%00"),
            ("DELETE", "/api/v1/pools/%24P%00"),
            ("DELETE", "/api/v1/keys/k%00"),
            ("GET", "/api/v1/users/u%00/keys"),
            ("GET", "/api/v1/users/u%00/credits"),
            ("PUT", "/api/v1/users/u%00/role"),
        ):
            body = {"role": "user"} if method == "PUT" else None
            response = await http.request(method, url, json=body)
            assert "NUL character" in rest_refusal(response), url
            assert response.json()["detail"][0]["loc"][0] == "path", response.text
        # A multipart upload refuses in the broker's own REST shape.
        upload = await http.post(
            "/api/v1/queries/upload",
            files={"file": ("a.wav", make_wav(0.2), "audio/wav")},
            data={"query_type": "stt", "prompt": "a\x00b"},
        )
        assert upload.status_code == 422, upload.text
        detail = upload.json()["detail"]
        assert detail["code"] == "invalid" and "NUL character" in detail["message"], detail

        for url, body in (
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a\x00b"}]}),
            ("/v1/chat/completions", {"model": "gpt\x00", "messages": CHAT}),
            ("/v1/images/generations", {"prompt": "a\x00b"}),
            ("/v1/audio/speech", {"input": "a\x00b"}),
            ("/v1/audio/speech", {"input": "hi", "voice": "a\x00"}),
        ):
            message = openai_refusal(await http.post(url, json=body))
            assert "NUL character" in message, (url, body, message)
        transcription = await http.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", make_wav(0.2), "audio/wav")},
            data={"model": "whisper\x00"},
        )
        assert "NUL character" in openai_refusal(transcription)

        async with realm.broker.bus(api_key=realm.sysop_key) as bus:
            for message in (
                {"type": "chat", "prompt": "a\x00b"},
                {"type": "submit_query", "query": {"prompt": "hi", "model_name": "\x00"}},
                {"type": "chat", "prompt": "hi", "options": {"speaker": "\x00"}},
                {"type": "text_to_speech", "text": "a\x00b"},
                {"type": "set_nickname", "nickname": "a\x00b"},
                {"type": "sysop_message", "message": "a\x00b"},
            ):
                assert "NUL character" in await bus_refusal(bus, message), message

        # Nothing refused was kept; the store still answers, and keeps what is fine.
        assert await history(http) == []
        assert [key["id"] for key in (await http.get("/api/v1/keys")).json()] == keys_before
        assert "w2" not in [w["name"] for w in (await http.get("/api/v1/workers")).json()]
        accepted = await http.post("/api/v1/queries?wait=30", json={"prompt": "a b"})
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["query"]["state"] == "done", accepted.text
        assert [q["prompt"] for q in await history(http)] == ["a b"]


# --- query options -------------------------------------------------------------------------

# (options, the field named in the refusal, whether /v1 has that field at the top level)
REFUSED_OPTIONS: list[tuple[dict[str, Any], str, bool]] = [
    ({"max_tokens": -1}, "max_tokens", True),
    ({"max_tokens": 0}, "max_tokens", True),
    ({"max_tokens": 32_769}, "max_tokens", True),
    ({"max_tokens": 10**30}, "max_tokens", True),
    ({"max_tokens": "lots"}, "max_tokens", True),
    ({"temperature": math.nan}, "temperature", True),
    ({"temperature": math.inf}, "temperature", True),
    ({"temperature": -0.1}, "temperature", True),
    ({"temperature": 2.5}, "temperature", True),
    ({"top_p": 1.5}, "top_p", True),
    ({"seed": 2**64}, "seed", True),
    ({"stream": "maybe"}, "stream", False),
    ({"language": "english"}, "language", False),
]
ACCEPTED_OPTIONS: list[dict[str, Any]] = [
    {"max_tokens": 1, "temperature": 0, "top_p": 1, "seed": 7},
    {"max_tokens": 32_768, "temperature": 2, "top_p": 0, "seed": -1},
]


async def test_a_worker_answer_the_store_cannot_hold_is_kept_with_replacements(
    db_realm: Realm, openai_stub: StubServer
) -> None:
    """A NUL in what a worker answers becomes U+FFFD (as would a lone surrogate, which JSON
    can spell): before, on PostgreSQL, the whole answer was lost to a failed write."""
    realm = db_realm
    await openai_stub.reset()
    await openai_stub.configure(reply="a\u0000b")
    await realm.add_worker("w", openai_stub, models=["gpt-4o-mini"])
    async with http_client(realm.broker, realm.sysop_key) as http:
        accepted = await http.post(
            "/api/v1/queries", params={"wait": 20}, json={"query_type": "chat", "prompt": "hi"}
        )
    assert accepted.status_code == 202, accepted.text
    query = accepted.json()["query"]
    assert (query["state"], query["result"]) == ("done", "a\ufffdb")


def chat_body(options: dict[str, Any]) -> str:
    """A chat completion request with the options as OpenAI's own fields (NaN as JSON's
    `NaN`, which Python's JSON reads)."""
    return json.dumps({"model": "auto", "messages": CHAT, **options})


async def test_query_options_are_bounded_alike_on_rest_v1_and_the_bus(
    realm: Realm, openai_stub: StubServer
) -> None:
    """Before: REST took `{"max_tokens": -1, "temperature": NaN}` with 202 and the query
    failed later ("the broker failed to run the query"); /v1 sent `max_tokens` 10^30 on."""
    await openai_stub.reset()
    await realm.add_worker("w", openai_stub, models=["gpt-4o-mini"])
    async with (
        http_client(realm.broker, realm.sysop_key) as http,
        realm.broker.bus(api_key=realm.sysop_key) as bus,
    ):
        for options, field, on_v1 in REFUSED_OPTIONS:
            body = json.dumps({"prompt": "hi", "options": options})
            response = await post_raw(http, "/api/v1/queries", body)
            assert field in rest_refusal(response), (options, response.text)
            assert response.json()["detail"][0]["loc"] == ["body", "options"], response.text
            for message in (
                {"type": "submit_query", "query": {"prompt": "hi", "options": options}},
                {"type": "chat", "prompt": "hi", "options": options},
            ):
                assert field in await bus_refusal(bus, message), (options, message)
            if on_v1:
                response = await post_raw(http, "/v1/chat/completions", chat_body(options))
                assert field in openai_refusal(response, param=field), (options, response.text)
        assert await history(http) == []

        for options in ACCEPTED_OPTIONS:
            body = json.dumps({"prompt": "hi", "options": options})
            response = await post_raw(http, "/api/v1/queries?wait=30", body)
            assert response.status_code == 202, response.text
            assert response.json()["query"]["state"] == "done", response.text
            accepted = await bus.request(
                {"type": "submit_query", "query": {"prompt": "hi", "options": options}}
            )
            assert accepted["type"] == "query_accepted", accepted
            result = await bus.expect(
                "query_result", lambda m, q=accepted["query_id"]: m["query_id"] == q, within=30
            )
            assert result["result"].startswith("echo:")  # as many tokens as max_tokens
            response = await post_raw(http, "/v1/chat/completions", chat_body(options))
            assert response.status_code == 200, response.text
        assert [q["state"] for q in await history(http)] == ["done"] * 3 * len(ACCEPTED_OPTIONS)
    # The worker got what was accepted, bounded: the largest `max_tokens` is the bound itself.
    sent = [r["json"] for r in await openai_stub.requests() if r["method"] == "POST"]
    assert max(body.get("max_tokens", 0) for body in sent) == 32_768


async def test_option_values_are_normalised_before_they_are_kept(
    realm: Realm, openai_stub: StubServer
) -> None:
    """Known options are kept in their types: `"stream": "false"` is False (as text it was a
    true value to `bool()`, so the answer streamed), `"max_tokens": "64"` is 64."""
    await openai_stub.reset()
    await realm.add_worker("w", openai_stub, models=["gpt-4o-mini"])
    async with http_client(realm.broker, realm.sysop_key) as http:
        options = {"stream": "false", "max_tokens": "64", "hotwords": "hal"}
        body = {"prompt": "hi", "options": options}
        response = await http.post("/api/v1/queries?wait=30", json=body)
        assert response.json()["query"]["state"] == "done", response.text
    (sent,) = [r["json"] for r in await openai_stub.requests() if r["method"] == "POST"]
    assert (sent["stream"], sent["max_tokens"]) == (False, 64)


# --- error shapes --------------------------------------------------------------------------


async def test_every_v1_error_is_openai_shaped_and_rest_keeps_fastapi_shapes(
    realm: Realm,
) -> None:
    async with http_client(realm.broker, realm.sysop_key) as http:
        bad_json = await post_raw(http, "/v1/chat/completions", '{"messages": [')
        assert openai_refusal(bad_json) and bad_json.json()["error"]["code"] == "invalid_json"
        wrong_type = await http.post("/v1/chat/completions", json={"messages": "hi"})
        assert "list" in openai_refusal(wrong_type, param="messages")
        wrong_option = await http.post(
            "/v1/chat/completions", json={"messages": CHAT, "temperature": "hot"}
        )
        assert openai_refusal(wrong_option, param="temperature")
        # Refused by routing, before any /v1 route runs.
        no_method = await http.options("/v1/chat/completions")
        assert no_method.status_code == 405, no_method.text
        assert no_method.json()["error"]["message"] == "Method Not Allowed"

        # Elsewhere: FastAPI's shapes, and a 422 that echoes a NaN is still sent.
        bad_json = await post_raw(http, "/api/v1/queries", '{"prompt": ')
        assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["type"] == (
            "json_invalid"
        )
        nan = await post_raw(http, "/api/v1/queries", '{"prompt": NaN}')
        assert rest_refusal(nan) == "Input should be a valid string"
        no_method = await http.put("/api/v1/me")
        assert (no_method.status_code, no_method.json()) == (405, {"detail": "Method Not Allowed"})
        assert await history(http) == []
