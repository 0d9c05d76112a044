"""The attack suite for auth as it exists now (SPEC §9): sysop-only messages and routes,
credentials that must be refused, cookies, origins and CSRF, bans, and what a browser may see.

Everything runs against a real broker process over real HTTP and WebSocket connections.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeSerializer
from websockets.exceptions import InvalidStatus

from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm

SESSION = "rentahal_session"
SESSION_SALT = "rentahal.session"
SYSOP_ONLY_EVENTS = {"system_stats", "user_stats", "worker_health", "active_users"}
EVIL = "http://evil.example"


def as_cookie(cookie: str) -> dict[str, str]:
    """Request headers that present `cookie` as the session (as a browser would)."""
    return {"Cookie": f"{SESSION}={cookie}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def assert_alive(bus: BusClient) -> None:
    reply = await bus.request({"type": "ping"})
    assert reply["type"] == "pong", reply


async def submit(bus: BusClient, prompt: str) -> str:
    reply = await bus.request({"type": "chat", "prompt": prompt})
    assert reply["type"] == "query_accepted", reply
    return str(reply["query_id"])


async def greeted(bus: BusClient) -> dict[str, Any]:
    """Wait for the greeting; returns the user's view from `user_info`."""
    info = await bus.expect("user_info")
    data: dict[str, Any] = info["data"]
    return data


async def ws_refused(broker: BrokerProcess, headers: dict[str, str]) -> None:
    """`/ws` with these headers is refused: the handshake is rejected, or the socket is
    closed before the broker says who the caller is."""
    client = BusClient(broker.ws_url, headers)
    try:
        async with client:
            await asyncio.wait_for(client.closed.wait(), 5)
    except InvalidStatus as exc:
        assert exc.response.status_code in (401, 403), exc.response.status_code
        return
    assert not any(m["type"] == "user_info" for m in client.seen), client.seen


async def workers_seen_by_sysop(broker: BrokerProcess, key: str) -> list[str]:
    async with httpx.AsyncClient(base_url=broker.url, headers=bearer(key)) as http:
        response = await http.get("/api/v1/workers")
    assert response.status_code == 200, response.text
    return [w["name"] for w in response.json()]


async def me(broker: BrokerProcess, cookie: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        return await http.get("/api/v1/me", headers=as_cookie(cookie))


def sysop_messages(victim_guid: str, victim_query: str, banned_guid: str) -> list[dict[str, Any]]:
    """One valid message of every sysop type, each aimed to do harm if it got through."""
    return [
        {"type": "get_stats"},
        {"type": "add_worker", "worker": {"name": "evil", "address": "127.0.0.1:9"}},
        {"type": "remove_worker", "worker_name": "w1"},
        {"type": "remove_worker", "name": "w1"},
        {"type": "add_huggingface_model", "model": {"name": "evil/model"}},
        {"type": "remove_huggingface_model", "model_name": "org/kept"},
        {"type": "ban_user", "user_guid": victim_guid},
        {"type": "ban_user", "guid": victim_guid},
        {"type": "unban_user", "user_guid": banned_guid},
        {"type": "terminate_query", "user_guid": victim_guid},
        {"type": "terminate_query", "query_id": victim_query},
        {"type": "sysop_message", "message": "pwned"},
    ]


# --- sysop messages on the bus -------------------------------------------------------------


async def test_guest_cannot_send_sysop_messages(realm: Realm, rentahal_stub: StubServer) -> None:
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=1.5)
    await realm.add_worker("w1", rentahal_stub)
    broker = realm.broker
    banned_cookie = await broker.guest_cookie()
    banned_guid = (await me(broker, banned_cookie)).json()["guid"]
    async with (
        broker.bus(cookie=await broker.guest_cookie()) as attacker,
        broker.bus(cookie=await broker.guest_cookie()) as victim,
        broker.bus(api_key=realm.sysop_key) as sysop,
    ):
        await greeted(attacker)
        victim_guid = (await greeted(victim))["guid"]
        await greeted(sysop)
        reply = await sysop.request(
            {"type": "add_huggingface_model", "model": {"name": "org/kept"}}
        )
        assert reply["type"] == "ok", reply
        reply = await sysop.request({"type": "ban_user", "user_guid": banned_guid})
        assert reply["type"] == "ok", reply
        victim_query = await submit(victim, "still mine")

        for message in sysop_messages(victim_guid, victim_query, banned_guid):
            reply = await attacker.request(message)
            assert reply["type"] == "error" and reply["code"] == "forbidden", (message, reply)
        await assert_alive(attacker)

        # No effect: the victim's query runs to its end, nobody was banned or unbanned...
        result = await victim.expect("query_result", lambda m: m["query_id"] == victim_query)
        assert result["result"] == "echo: still mine"
        assert not any(m["type"] in ("query_terminated", "user_banned") for m in victim.seen)
        assert (await me(broker, banned_cookie)).status_code == 403
        # ...the worker list is unchanged...
        assert await workers_seen_by_sysop(broker, realm.sysop_key) == ["w1"]
        # ...and no broadcast went out: a later sysop broadcast arrives, the guest's never.
        await sysop.send({"type": "sysop_message", "message": "barrier"})
        for client in (victim, attacker, sysop):
            await client.expect("sysop_message", lambda m: m["message"] == "barrier")
            texts = [m.get("message") for m in client.seen if m["type"] == "sysop_message"]
            assert "pwned" not in texts
            hf = [m for m in client.seen if m["type"] == "huggingface_update"]
            assert all("evil/model" not in json.dumps(m) for m in hf)
        assert SYSOP_ONLY_EVENTS.isdisjoint(m["type"] for m in attacker.seen)

    async with broker.bus(api_key=realm.sysop_key) as fresh:
        models = (await fresh.expect("huggingface_update"))["models"]
        assert [m["name"] for m in models if m["name"] in ("org/kept", "evil/model")] == [
            "org/kept"
        ]
        users = (await fresh.expect("user_stats"))["data"]
        by_guid = {u["guid"]: u for u in users}
        assert by_guid[victim_guid]["is_banned"] is False
        assert by_guid[banned_guid]["is_banned"] is True


async def test_sysop_messages_succeed_for_the_sysop(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    broker = realm.broker
    async with (
        broker.bus(api_key=realm.sysop_key) as sysop,
        broker.bus(cookie=await broker.guest_cookie()) as guest,
    ):
        await greeted(sysop)
        guest_guid = (await greeted(guest))["guid"]

        async def ok(message: dict[str, Any], kind: str = "ok") -> dict[str, Any]:
            reply = await sysop.request(message)
            assert reply["type"] == kind, (message, reply)
            return reply

        stats = await ok({"type": "get_stats"}, "system_stats")
        assert stats["data"]["connected_users"] >= 2
        worker = {"name": "w1", "address": rentahal_stub.address, "kind": "rentahal"}
        await ok({"type": "add_worker", "worker": worker})
        assert await workers_seen_by_sysop(broker, realm.sysop_key) == ["w1"]
        await ok({"type": "add_huggingface_model", "model": {"name": "org/model"}})
        update = await guest.expect(
            "huggingface_update", lambda m: "org/model" in {x["name"] for x in m["models"]}
        )
        assert update["models"]
        await ok({"type": "remove_huggingface_model", "model_name": "org/model"})
        await guest.expect(
            "huggingface_update", lambda m: "org/model" not in {x["name"] for x in m["models"]}
        )
        await ok({"type": "terminate_query", "user_guid": guest_guid})
        await sysop.send({"type": "sysop_message", "message": "hello, everyone"})
        for client in (guest, sysop):
            await client.expect("sysop_message", lambda m: m["message"] == "hello, everyone")
        await ok({"type": "ban_user", "user_guid": guest_guid})
        await guest.expect("user_banned")
        await ok({"type": "unban_user", "user_guid": guest_guid})
        await ok({"type": "remove_worker", "worker_name": "w1"})
        assert await workers_seen_by_sysop(broker, realm.sysop_key) == []
        # Refusals that are about the target, not the sender's role.
        reply = await sysop.request({"type": "ban_user", "user_guid": uuid.uuid4().hex})
        assert reply["type"] == "error" and reply["code"] == "not_found", reply


# --- REST ----------------------------------------------------------------------------------


def concrete(path: str, guid: str) -> str:
    """An OpenAPI path with its parameters filled in (ids get the guest's own guid)."""
    return re.sub(r"\{([^}]+)\}", lambda m: guid if "id" in m.group(1) else "w1", path)


@pytest.mark.shared_realm  # guests of its own; registers nothing, adds no worker
async def test_no_route_makes_a_guest_a_sysop(realm: Realm) -> None:
    broker = realm.broker
    escalate = {
        "role": "sysop",
        "is_sysop": True,
        "user_guid": "",
        "prompt": "make me sysop",
        "name": "w1",
        "address": "127.0.0.1:9",
    }
    async with httpx.AsyncClient(base_url=broker.url) as http:
        schema = (await http.get("/openapi.json")).json()
        routes = [
            (method.upper(), path)
            for path, operations in schema["paths"].items()
            for method in operations
            if method in ("get", "post", "put", "patch", "delete")
        ]
        assert ("POST", "/api/v1/workers") in routes and ("GET", "/api/v1/me") in routes

        cookie = await broker.guest_cookie()
        guid = (await http.get("/api/v1/me", headers=as_cookie(cookie))).json()["guid"]
        cookies_handed_out: list[str] = []
        for method, path in routes:
            headers = as_cookie(cookie) | {"Origin": broker.url}
            body = escalate | {"user_guid": guid} if method in ("POST", "PUT", "PATCH") else None
            response = await http.request(method, concrete(path, guid), headers=headers, json=body)
            assert response.status_code != 500, (method, path, response.text)
            if path.startswith("/api/v1/workers") or path == "/api/v1/stats":
                assert response.status_code == 403, (method, path, response.status_code)
            for header in response.headers.get_list("set-cookie"):
                if header.startswith(f"{SESSION}="):
                    value = header.split(";", 1)[0].split("=", 1)[1]
                    if value.strip('"'):
                        cookies_handed_out.append(value.strip('"'))
            mine = await http.get("/api/v1/me", headers=as_cookie(cookie))
            if mine.status_code == 401:  # the route logged the guest out; carry on as new
                assert (method, path) == ("DELETE", "/api/v1/session")
                cookie = await broker.guest_cookie()
                guid = (await http.get("/api/v1/me", headers=as_cookie(cookie))).json()["guid"]
                continue
            assert mine.status_code == 200, mine.text
            assert mine.json()["role"] == "guest" and mine.json()["is_sysop"] is False, (
                method,
                path,
            )

        for handed_out in cookies_handed_out:
            response = await http.get("/api/v1/me", headers=as_cookie(handed_out))
            assert response.status_code == 401 or response.json()["role"] == "guest"

        # The seed's debug routes are gone (one of them made any GUID a sysop).
        for method, path in [
            ("GET", "/debug/"),
            ("POST", "/debug/init_db"),
            ("GET", f"/debug/check_sysop/{guid}"),
            ("POST", f"/debug/set_sysop/{guid}"),
            ("GET", "/debug/system_status"),
        ]:
            response = await http.request(
                method, path, headers=as_cookie(cookie) | {"Origin": broker.url}
            )
            assert response.status_code == 404, (method, path, response.status_code)
        assert (await http.get("/api/v1/me", headers=as_cookie(cookie))).json()["role"] == "guest"

    # The only sysop is still the one made with the CLI.
    async with broker.bus(api_key=realm.sysop_key) as sysop:
        users = (await sysop.expect("user_stats"))["data"]
        assert [u["nickname"] for u in users if u["is_sysop"] or u["role"] == "sysop"] == ["hal"]
    async with broker.bus(cookie=cookie) as guest:
        info = await greeted(guest)
        assert info["role"] == "guest" and info["guid"] == guid


async def test_rest_requires_credentials_and_sysop_role(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    broker = realm.broker
    cookie = await broker.guest_cookie()
    async with httpx.AsyncClient(base_url=broker.url) as http:
        for path in ("/api/v1/me", "/api/v1/queries", "/api/v1/workers", "/api/v1/stats"):
            response = await http.get(path)
            assert response.status_code == 401, (path, response.status_code)
        response = await http.post("/api/v1/queries", json={"prompt": "hi"})
        assert response.status_code == 401

        guest = as_cookie(cookie) | {"Origin": broker.url}
        assert (await http.get("/api/v1/me", headers=guest)).json()["role"] == "guest"
        assert (await http.get("/api/v1/queries", headers=guest)).status_code == 200
        assert (await http.get("/api/v1/workers", headers=guest)).status_code == 403
        assert (await http.get("/api/v1/stats", headers=guest)).status_code == 403
        worker = {"name": "w1", "address": rentahal_stub.address, "kind": "rentahal"}
        assert (await http.post("/api/v1/workers", headers=guest, json=worker)).status_code == 403

        sysop = bearer(realm.sysop_key)
        assert (await http.get("/api/v1/me", headers=sysop)).json()["role"] == "sysop"
        response = await http.get("/api/v1/workers", headers=sysop)
        assert response.status_code == 200 and response.json() == []
        response = await http.post("/api/v1/workers", headers=sysop, json=worker)
        assert response.status_code == 201, response.text
        assert response.json()["address"] == rentahal_stub.address
        assert (await http.delete("/api/v1/workers/w1", headers=guest)).status_code == 403
        listed = (await http.get("/api/v1/workers", headers=sysop)).json()
        assert [w["name"] for w in listed] == ["w1"]
        assert (await http.delete("/api/v1/workers/w1", headers=sysop)).status_code == 204
        assert (await http.get("/api/v1/workers", headers=sysop)).json() == []
        assert (await http.delete("/api/v1/workers/w1", headers=sysop)).status_code == 404


# --- credentials that must not work --------------------------------------------------------


def flip(text: str, index: int) -> str:
    """`text` with the character at `index` replaced by a different URL-safe one."""
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


async def test_forged_tampered_and_foreign_credentials_are_refused(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    env = FAST_ENV | {"RENTAHAL_SECRET_KEY": key}
    async with BrokerProcess(tmp_path, env=env) as broker:
        valid = await broker.guest_cookie()
        owner = await me(broker, valid)
        assert owner.status_code == 200
        guid = owner.json()["guid"]

        payload, signature = valid.rsplit(".", 1)
        _, token = URLSafeSerializer("any", salt=SESSION_SALT).loads_unsafe(valid)
        assert isinstance(token, str) and token
        # Control: the same token signed with the broker's key is that user's session.
        resigned = URLSafeSerializer(key, salt=SESSION_SALT).dumps(token)
        assert (await me(broker, resigned)).json()["guid"] == guid

        bad_cookies = {
            "forged": secrets.token_urlsafe(40),
            "tampered payload": flip(valid, 0),
            "tampered signature": f"{payload}.{flip(signature, len(signature) // 2)}",
            "signed with another key": URLSafeSerializer("another key", salt=SESSION_SALT).dumps(
                token
            ),
            "unsigned token": token,
            "validly signed unknown token": URLSafeSerializer(key, salt=SESSION_SALT).dumps(
                secrets.token_urlsafe(32)
            ),
            "oversized": valid + "A" * 4096,
        }
        for name, cookie in bad_cookies.items():
            response = await me(broker, cookie)
            assert response.status_code == 401, (name, response.status_code)
            async with broker.bus(cookie=cookie) as bus:
                info = await greeted(bus)
                assert info["guid"] != guid, name
                assert info["role"] == "guest", name
                assert SESSION in bus.response_headers.get("set-cookie", ""), name

        async with broker.bus(cookie=valid) as bus:
            assert (await greeted(bus))["guid"] == guid  # the real cookie still works

        # A bad API key is refused outright, even alongside a valid cookie.
        fake_key = "rah_" + secrets.token_urlsafe(32)
        for headers in (
            bearer(fake_key),
            bearer("not-even-a-key"),
            bearer(fake_key) | as_cookie(valid),
        ):
            # 401 at the handshake: a client can tell a bad key from a refused origin (403).
            with pytest.raises(InvalidStatus) as refused:
                async with BusClient(broker.ws_url, headers):
                    pass
            assert refused.value.response.status_code == 401
            async with httpx.AsyncClient(base_url=broker.url) as http:
                response = await http.get("/api/v1/me", headers=headers)
            assert response.status_code == 401, (headers, response.status_code)


@pytest.mark.shared_realm  # guests of its own; registers nothing, adds no worker
async def test_session_cookie_and_page_security_headers(realm: Realm) -> None:
    broker = realm.broker
    async with httpx.AsyncClient(base_url=broker.url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        (set_cookie,) = [
            h for h in page.headers.get_list("set-cookie") if h.startswith(f"{SESSION}=")
        ]
        attributes = {a.strip().split("=", 1)[0].lower(): a.strip() for a in set_cookie.split(";")}
        assert "httponly" in attributes
        assert attributes["samesite"].lower() == "samesite=lax"
        assert attributes["path"] == "Path=/"
        assert "domain" not in attributes

        csp = page.headers["content-security-policy"]
        directives = {
            d.split()[0]: d.split()[1:] for d in (part.strip() for part in csp.split(";")) if d
        }
        script_src = directives.get("script-src", directives.get("default-src"))
        assert script_src is not None, csp
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        assert not any(s.startswith(("http:", "https:", "*")) for s in script_src), csp
        assert directives.get("frame-ancestors") == ["'none'"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"

        # No CDN: every script and stylesheet comes from the broker itself.
        html = page.text
        references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        assert references, html[:500]
        for reference in references:
            assert not reference.startswith(("http:", "https:", "//")), reference
            if reference.startswith("/static/"):
                asset = await http.get(reference)
                assert asset.status_code == 200, reference
                assert asset.headers["x-content-type-options"] == "nosniff"
                assert not re.findall(r"https?://(?!www\.w3\.org/)", asset.text), reference
        assert not re.findall(r"https?://(?!www\.w3\.org/)", html)
        assert "<script>" not in html.replace(" ", "")  # no inline script for CSP to allow


# --- origins and CSRF ----------------------------------------------------------------------


@pytest.mark.shared_realm  # guests of its own; registers nothing, adds no worker
async def test_cross_site_websocket_and_csrf_are_refused(realm: Realm) -> None:
    broker = realm.broker
    cookie = await broker.guest_cookie()
    guid = (await me(broker, cookie)).json()["guid"]

    for origin in (EVIL, "null", f"http://127.0.0.1:{broker.port}.evil.example"):
        await ws_refused(broker, as_cookie(cookie) | {"Origin": origin})
    async with BusClient(broker.ws_url, as_cookie(cookie) | {"Origin": broker.url}) as bus:
        assert (await greeted(bus))["guid"] == guid

    query = {"prompt": "hello", "query_type": "chat"}
    async with httpx.AsyncClient(base_url=broker.url) as http:

        async def post(headers: dict[str, str]) -> httpx.Response:
            return await http.post("/api/v1/queries", headers=headers, json=query)

        for name, extra in {
            "evil Origin": {"Origin": EVIL},
            "no Origin or Referer": {},
            "evil Referer": {"Referer": f"{EVIL}/page"},
            "evil Origin, good Referer": {"Origin": EVIL, "Referer": f"{broker.url}/"},
        }.items():
            response = await post(as_cookie(cookie) | extra)
            assert response.status_code == 403, (name, response.status_code)
            assert response.json()["detail"]["code"] == "forbidden", name
        for name, extra in {
            "same Origin": {"Origin": broker.url},
            "same-site Referer": {"Referer": f"{broker.url}/"},
        }.items():
            response = await post(as_cookie(cookie) | extra)
            assert response.status_code in (202, 503), (name, response.status_code)
            if response.status_code == 503:
                assert response.json()["detail"]["code"] == "no_worker"
        # An API key cannot be ridden by another site, so it needs no Origin.
        response = await post(bearer(realm.sysop_key))
        assert response.status_code in (202, 503), response.status_code

        # Logging out cross-site is refused too: the session survives.
        response = await http.delete(
            "/api/v1/session", headers=as_cookie(cookie) | {"Origin": EVIL}
        )
        assert response.status_code == 403
    assert (await me(broker, cookie)).status_code == 200


# --- bans and termination ------------------------------------------------------------------


async def test_ban_takes_effect_at_once_on_every_connection(realm: Realm) -> None:
    broker = realm.broker
    cookie = await broker.guest_cookie()
    async with (
        broker.bus(api_key=realm.sysop_key) as sysop,
        broker.bus(cookie=cookie) as tab1,
        broker.bus(cookie=cookie) as tab2,
    ):
        await greeted(sysop)
        guid = (await greeted(tab1))["guid"]
        assert (await greeted(tab2))["guid"] == guid

        started = time.monotonic()
        reply = await sysop.request({"type": "ban_user", "user_guid": guid})
        assert reply["type"] == "ok", reply
        for tab in (tab1, tab2):
            banned = await tab.expect("user_banned", within=3)
            assert banned["guid"] == guid
            await asyncio.wait_for(tab.closed.wait(), 3)
            assert tab.close_code == 4003, tab.close_code
        assert time.monotonic() - started < 3
        await sysop.expect("user_banned", lambda m: m["guid"] == guid)

        async with broker.bus(cookie=cookie) as again:
            error = await again.expect("error")
            assert error["code"] == "banned"
            await asyncio.wait_for(again.closed.wait(), 3)
            assert again.close_code == 4003
            assert not any(m["type"] == "user_info" for m in again.seen)
        async with httpx.AsyncClient(base_url=broker.url) as http:
            response = await http.get("/api/v1/me", headers=as_cookie(cookie))
            assert response.status_code == 403
            assert response.json()["detail"]["code"] == "banned"
            response = await http.post(
                "/api/v1/queries",
                headers=as_cookie(cookie) | {"Origin": broker.url},
                json={"prompt": "let me in"},
            )
            assert response.status_code == 403

        reply = await sysop.request({"type": "unban_user", "user_guid": guid})
        assert reply["type"] == "ok", reply
        async with broker.bus(cookie=cookie) as back:
            info = await greeted(back)
            assert info["guid"] == guid and info["is_banned"] is False
            await assert_alive(back)
        assert (await me(broker, cookie)).status_code == 200


async def test_terminate_query_stops_a_running_query(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=5)
    await realm.add_worker("w1", rentahal_stub)
    broker = realm.broker

    def in_flight(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await rentahal_stub.stats())["in_flight"] == count

        return check

    async with (
        broker.bus(api_key=realm.sysop_key) as sysop,
        broker.bus(cookie=await broker.guest_cookie()) as guest,
    ):
        await greeted(sysop)
        guid = (await greeted(guest))["guid"]
        for target in ("user_guid", "query_id"):
            disconnected = (await rentahal_stub.stats())["disconnected"]
            query_id = await submit(guest, f"long job by {target}")
            await guest.expect(
                "query_status",
                lambda m, q=query_id: m["query_id"] == q and m["state"] == "dispatched",
            )
            await eventually(in_flight(1), within=5)
            started = time.monotonic()
            command = {
                "type": "terminate_query",
                target: guid if target == "user_guid" else query_id,
            }
            reply = await sysop.request(command)
            assert reply["type"] == "ok" and "1" in reply["message"], reply
            terminated = await guest.expect(
                "query_terminated", lambda m, q=query_id: m["query_id"] == q
            )
            assert terminated["guid"] == guid
            error = await guest.expect("error", lambda m, q=query_id: m.get("query_id") == q)
            assert error["code"] == "cancelled"

            async def worker_saw_disconnect(before: int = disconnected) -> bool:
                return (await rentahal_stub.stats())["disconnected"] > before

            await eventually(worker_saw_disconnect, within=3)
            assert time.monotonic() - started < 3
            await eventually(in_flight(0), within=3)
        assert not any(m["type"] == "query_result" for m in guest.seen)
        await assert_alive(guest)  # terminating queries does not disconnect the user


# --- what a browser may see ----------------------------------------------------------------


async def test_worker_addresses_reach_sysops_only(realm: Realm, rentahal_stub: StubServer) -> None:
    await rentahal_stub.reset()
    broker = realm.broker
    async with (
        broker.bus(api_key=realm.sysop_key) as sysop,
        broker.bus(cookie=await broker.guest_cookie()) as early,
    ):
        await greeted(sysop)
        await greeted(early)
        await realm.add_worker("w1", rentahal_stub)

        def has_w1(message: dict[str, Any]) -> bool:
            return any(w["name"] == "w1" for w in message["workers"])

        full = await sysop.expect("worker_update", has_w1)
        assert {w["name"]: w["address"] for w in full["workers"]} == {"w1": rentahal_stub.address}
        redacted = await early.expect("worker_update", has_w1)
        assert [w["address"] for w in redacted["workers"]] == [""]

        async with broker.bus(cookie=await broker.guest_cookie()) as late:
            await greeted(late)
            greeting = await late.expect("worker_update")
            assert [(w["name"], w["address"]) for w in greeting["workers"]] == [("w1", "")]
            await assert_alive(late)
            await assert_alive(early)
            for guest in (early, late):
                assert rentahal_stub.address not in json.dumps(guest.seen)
                assert f":{rentahal_stub.port}" not in json.dumps(guest.seen)
                assert SYSOP_ONLY_EVENTS.isdisjoint(m["type"] for m in guest.seen)
