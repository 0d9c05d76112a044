"""The attack suite's data and path cases: SQL and HTML/script strings in every free text
field (prompts, model names, broadcasts) are stored and returned verbatim, as data; names of a
fixed shape (workers, pools, nicknames) refuse them; ids and file names in every route that
takes one cannot reach outside what they name."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from rentahal.bus import messages as m
from rentahal.testing.process import StubServer
from tests.conftest import Realm

HOSTILE = [
    "'; DROP TABLE queries; --",
    "Robert'); DELETE FROM users WHERE ('1'='1",
    '" OR 1=1 --',
    "<img src=x onerror=alert(1)>",
    "<script>alert('hal')</script>",
    "{{7*7}} ${7*7} %s %n \\x00",
    "\u202egnp.exe 🙂 ÅÄÖ",
]


async def test_hostile_text_in_every_free_text_field_comes_back_verbatim(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await ollama_stub.reset()
    await realm.add_worker("llm", ollama_stub)
    async with realm.broker.bus(api_key=realm.sysop_key) as sysop:
        for text in HOSTILE:
            hf = await sysop.request(
                {"type": "add_huggingface_model", "model": {"name": text, "type": "chat"}}
            )
            assert hf["type"] == "ok", hf
        hf_models = await sysop.expect(
            "huggingface_update",
            lambda m: {x["name"] for x in m["models"]} >= set(HOSTILE),
            within=10,
        )
        assert hf_models["type"] == "huggingface_update"

        broadcast = HOSTILE[3] + HOSTILE[0]
        assert (await sysop.request({"type": "sysop_message", "message": broadcast}))[
            "type"
        ] == "ok"
        heard = await sysop.expect("sysop_message", lambda m: m["message"] == broadcast)
        assert heard["message"] == broadcast

        ids = []
        for text in HOSTILE:
            accepted = await sysop.request({"type": "submit_query", "query": {"prompt": text}})
            assert accepted["type"] == "query_accepted", accepted
            result = await sysop.expect(
                "query_result", lambda m, q=accepted["query_id"]: m["query_id"] == q
            )
            assert result["result"] == f"echo: {text}"
            ids.append(accepted["query_id"])
        history = await sysop.request({"type": "get_previous_queries", "limit": 100})
        by_id = {q["query_id"]: q for q in history["data"]}
        assert [by_id[i]["prompt"] for i in ids] == HOSTILE

    headers = {"Authorization": f"Bearer {realm.sysop_key}"}
    async with httpx.AsyncClient(base_url=realm.broker.url, headers=headers) as http:
        for query_id, text in zip(ids, HOSTILE, strict=True):
            stored = (await http.get(f"/api/v1/queries/{query_id}")).json()
            assert (stored["prompt"], stored["result"]) == (text, f"echo: {text}")
        # The tables are all still there and whole.
        assert (await http.get("/api/v1/stats")).json()["total_queries"] >= len(HOSTILE)


# The tests below share a broker (`shared_realm`): everything they try is refused or reads,
# so none of them stores a worker (the worker address test counts on that).
@pytest.mark.shared_realm
@pytest.mark.parametrize("name", ["<script>", "x' OR '1'='1", "../../etc", "a b", "\x00", ""])
async def test_names_with_a_fixed_shape_refuse_hostile_text(realm: Realm, name: str) -> None:
    async with realm.broker.bus(api_key=realm.sysop_key) as sysop:
        worker = await sysop.request(
            {"type": "add_worker", "worker": {"name": name, "address": "127.0.0.1:9"}}
        )
        pool = await sysop.request({"type": "add_pool", "pool": {"name": f"${name}"}})
        nickname = await sysop.request({"type": "set_nickname", "nickname": name})
    for reply in (worker, pool, nickname):
        assert (reply["type"], reply["code"]) == ("error", "invalid"), reply


@pytest.mark.shared_realm
async def test_a_worker_address_no_request_could_use_is_refused(realm: Realm) -> None:
    async with realm.broker.bus(api_key=realm.sysop_key) as sysop:
        for address in ("127.0.0.1:99999", "127.0.0.1:1\x00", "a b:1", "ftp://x:21", "x:y:z"):
            reply = await sysop.request(
                {"type": "add_worker", "worker": {"name": "w1", "address": address}}
            )
            assert (reply["type"], reply["code"]) == ("error", "invalid"), (address, reply)
        listed = await sysop.request({"type": "get_stats"})
        assert listed["type"] == "system_stats"
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        workers = await http.get(
            "/api/v1/workers", headers={"Authorization": f"Bearer {realm.sysop_key}"}
        )
    assert workers.json() == []  # none of them was stored


TRAVERSALS = [
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%5C..%5Cwindows%5Cwin.ini",
    "%252e%252e%252fetc%252fpasswd",
    "....//....//etc/passwd",
    "%00",
]
ID_ROUTES = [
    ("GET", "/api/v1/queries/{}"),
    ("GET", "/api/v1/queries/{}/output"),
    ("GET", "/api/v1/queries/{}/events"),
    ("DELETE", "/api/v1/queries/{}"),
    ("DELETE", "/api/v1/workers/{}"),
    ("PUT", "/api/v1/pools/{}"),
    ("DELETE", "/api/v1/pools/{}"),
    ("PATCH", "/api/v1/realms/{}"),
    ("DELETE", "/api/v1/realms/{}"),
    ("DELETE", "/api/v1/keys/{}"),
    ("POST", "/api/v1/workers/{}/heartbeat"),
    ("DELETE", "/api/v1/workers/{}/registration"),
    ("GET", "/static/{}"),
    ("GET", "/v1/models/{}"),
]


@pytest.mark.shared_realm
async def test_ids_and_file_names_cannot_reach_outside_what_they_name(realm: Realm) -> None:
    headers = {"Authorization": f"Bearer {realm.sysop_key}"}
    async with httpx.AsyncClient(base_url=realm.broker.url, headers=headers) as http:
        for method, route in ID_ROUTES:
            for attack in TRAVERSALS:
                # Sent as raw bytes, so no client normalises the dots away.
                url = httpx.URL(realm.broker.url, raw_path=route.format(attack).encode())
                body: dict[str, Any] | None = {} if method in ("PUT", "PATCH") else None
                response = await http.request(method, url, json=body)
                assert response.status_code in (400, 401, 403, 404, 405, 422), (
                    method,
                    route,
                    attack,
                    response.status_code,
                )
                assert "root:" not in response.text and "[fonts]" not in response.text
        # A real file is still served, and a well-formed id of nothing is a plain 404.
        assert (await http.get("/static/index.html")).status_code == 200
        missing = await http.get(f"/api/v1/queries/{secrets.token_hex(16)}")
        assert missing.status_code == 404


def sysop_routes() -> list[tuple[str, str]]:
    """(method, path) of every route that needs a sysop, found by walking each route's
    dependencies, so a route added later is covered without editing this test."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    from rentahal.api.app import create_app
    from rentahal.api.deps import require_sysop
    from rentahal.config import load_settings

    def needs_sysop(dependant: Dependant) -> bool:
        return any(d.call is require_sysop or needs_sysop(d) for d in dependant.dependencies)

    app = create_app(load_settings(data_dir=Path(tempfile.mkdtemp())))
    # Included routers are kept whole (FastAPI resolves them lazily): look inside each.
    routes = [
        route
        for item in app.routes
        for route in (item.original_router.routes if hasattr(item, "original_router") else [item])
    ]
    return [
        (method, route.path)
        for route in routes
        if isinstance(route, APIRoute) and needs_sysop(route.dependant)
        for method in sorted(route.methods)
    ]


@pytest.mark.shared_realm
async def test_every_sysop_route_and_message_refuses_everyone_else(realm: Realm) -> None:
    routes = sysop_routes()
    assert ("GET", "/metrics") in routes and ("GET", "/api/v1/export/ledger") in routes
    broker = realm.broker
    sysop = {"Authorization": f"Bearer {realm.sysop_key}"}
    async with httpx.AsyncClient(base_url=broker.url) as http:
        made = await http.post("/api/v1/keys", json={"scopes": ["chat"]}, headers=sysop)
        narrow_sysop_key = made.json()["key"]  # a sysop's key without the admin scope
        revoked = (await http.post("/api/v1/keys", json={}, headers=sysop)).json()
        assert (
            await http.delete(f"/api/v1/keys/{revoked['id']}", headers=sysop)
        ).status_code == 204
        cookie = await broker.guest_cookie()
        guest = {"Cookie": f"rentahal_session={cookie}", "Origin": broker.url}
        guest_key = (await http.post("/api/v1/keys", json={}, headers=guest)).json()["key"]
        callers = {
            "nobody": ({}, 401),
            "a forged key": ({"Authorization": "Bearer rah_" + secrets.token_urlsafe(32)}, 401),
            "a revoked key": ({"Authorization": f"Bearer {revoked['key']}"}, 401),
            "a guest's session": (guest, 403),
            "a guest's key": ({"Authorization": f"Bearer {guest_key}"}, 403),
            "a sysop's chat-only key": ({"Authorization": f"Bearer {narrow_sysop_key}"}, 403),
        }
        for method, path in routes:
            url = path.replace("{", "").replace("}", "")  # a name for every path parameter
            body = {} if method in ("POST", "PUT", "PATCH") else None
            for who, (headers, expected) in callers.items():
                response = await http.request(method, url, json=body, headers=headers)
                assert response.status_code == expected, (who, method, path, response.status_code)

    sysop_types = sorted(
        get_args(cls.model_fields["type"].annotation)[0] for cls in m.SysopInbound.__subclasses__()
    )
    assert {"ban_user", "set_role", "add_worker", "get_stats"} <= set(sysop_types)
    for key in (guest_key, narrow_sysop_key):
        async with broker.bus(api_key=key) as bus:
            for kind in sysop_types:
                reply = await bus.request({"type": kind})
                assert (reply["type"], reply["code"]) == ("error", "forbidden"), (kind, reply)
            assert (await bus.request({"type": "ping"}))["type"] == "pong"
