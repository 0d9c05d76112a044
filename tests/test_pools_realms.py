"""Pools and realms (SPEC §5, §12): pool and realm admin over the bus and REST, routing to a
pool, to a realm and across realms, specialisations, and the Prometheus `/metrics` page.

Everything runs against a real broker process and real stub workers.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import Realm

SESSION = "rentahal_session"
DEFAULT_REALMS = ["$CHAT", "$IMAGINE", "$SPEECH", "$VISION"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def other_stub() -> AsyncIterator[StubServer]:
    """A second worker-node stub, so two workers can behave differently (slow, unhealthy)."""
    async with StubServer("rentahal") as stub:
        yield stub


# --- helpers -------------------------------------------------------------------------------


def sysop_http(realm: Realm) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=realm.broker.url, headers={"Authorization": f"Bearer {realm.sysop_key}"}
    )


def guest_http(broker: BrokerProcess, cookie: str) -> httpx.AsyncClient:
    """A guest's browser: its cookie, and a same-origin `Origin`, so the CSRF check passes and
    only the sysop gate can refuse it."""
    return httpx.AsyncClient(
        base_url=broker.url, headers={"Cookie": f"{SESSION}={cookie}", "Origin": broker.url}
    )


def pool(name: str, members: list[str], strategy: str = "auto") -> dict[str, Any]:
    return {"name": name, "type": "chat", "members": members, "strategy": strategy}


def pools_in(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in event["pools"]}


def refused(reply: dict[str, Any], code: str) -> bool:
    return reply["type"] == "error" and reply["code"] == code


def detail_code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


async def submit(bus: BusClient, prompt: str, model_name: str = "") -> dict[str, Any]:
    """Submit a chat query; returns the direct reply (`query_accepted` or `error`)."""
    return await bus.request(
        {"type": "submit_query", "query": {"prompt": prompt, "model_name": model_name}}
    )


async def finished(bus: BusClient, query_id: str) -> dict[str, Any]:
    """The query's final event: `query_result`, or an `error` about it."""
    return await bus.expect(
        where=lambda m: (
            m.get("query_id") == query_id and m.get("type") in ("query_result", "error")
        ),
        within=15,
    )


async def served_by(bus: BusClient, prompt: str, model_name: str = "") -> str:
    """Run a chat query to its end; returns the name of the worker that served it.

    The worker is read from the `query_status` that reports the query done (the routing
    tests should not depend on `query_result.worker`, which has a test of its own below).
    """
    reply = await submit(bus, prompt, model_name)
    assert reply["type"] == "query_accepted", reply
    query_id = reply["query_id"]
    result = await finished(bus, query_id)
    assert result["type"] == "query_result", result
    assert result["result"] == f"echo: {prompt}", result
    done = await bus.expect(
        "query_status", lambda m: m["query_id"] == query_id and m["state"] == "done"
    )
    return str(done["worker"])


async def workers(realm: Realm) -> dict[str, dict[str, Any]]:
    async with sysop_http(realm) as http:
        response = await http.get("/api/v1/workers")
    assert response.status_code == 200, response.text
    return {w["name"]: w for w in response.json()}


async def idle(realm: Realm, worker: str) -> bool:
    """The worker's slots are all free."""
    return (await workers(realm))[worker]["in_flight"] == 0


async def realms(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get("/api/v1/realms")
    assert response.status_code == 200, response.text
    return {r["name"]: r for r in response.json()}


async def metrics_text(realm: Realm) -> str:
    async with sysop_http(realm) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return response.text


# --- pools: admin --------------------------------------------------------------------------


async def test_pool_crud_over_bus_and_rest(realm: Realm, rentahal_stub: StubServer) -> None:
    await rentahal_stub.reset()
    await realm.add_worker("a", rentahal_stub)
    await realm.add_worker("b", rentahal_stub)
    broker = realm.broker
    cookie = await broker.guest_cookie()
    async with (
        broker.bus(api_key=realm.sysop_key) as sysop,
        broker.bus(cookie=cookie) as guest,
        sysop_http(realm) as admin,
        guest_http(broker, cookie) as visitor,
    ):
        # Everyone is told the pools and realms on connect.
        for client in (sysop, guest):
            greeting = await client.expect("pool_update")
            assert greeting["pools"] == [] and greeting["realms"] == DEFAULT_REALMS, greeting

        # Create over the bus: an `ok` reply, and a pool_update to every client.
        reply = await sysop.request(
            {"type": "add_pool", "pool": pool("$FAST", ["a", "b"], "round_robin")}
        )
        assert reply["type"] == "ok", reply
        for client in (sysop, guest):
            update = await client.expect("pool_update", lambda m: "$FAST" in pools_in(m))
            assert pools_in(update)["$FAST"] == pool("$FAST", ["a", "b"], "round_robin")
            assert update["realms"] == DEFAULT_REALMS

        # Any user may list pools and realm names; nobody unauthenticated.
        listed = await visitor.get("/api/v1/pools")
        assert listed.status_code == 200, listed.text
        assert pools_in(listed.json()) == {"$FAST": pool("$FAST", ["a", "b"], "round_robin")}
        assert listed.json()["realms"] == DEFAULT_REALMS
        async with httpx.AsyncClient(base_url=broker.url) as anonymous:
            assert (await anonymous.get("/api/v1/pools")).status_code == 401

        # Bus errors: bad alias, unknown member, duplicate, a realm's name, a guest.
        for bad in ("fast", "$fast", "FAST", "$"):
            reply = await sysop.request({"type": "add_pool", "pool": pool(bad, ["a"])})
            assert refused(reply, "invalid"), (bad, reply)
        reply = await sysop.request({"type": "add_pool", "pool": pool("$X", ["a", "ghost"])})
        assert refused(reply, "not_found") and "ghost" in reply["message"], reply
        reply = await sysop.request({"type": "add_pool", "pool": pool("$FAST", ["a"])})
        assert refused(reply, "conflict"), reply
        reply = await sysop.request({"type": "add_pool", "pool": pool("$CHAT", ["a"])})
        assert refused(reply, "conflict"), reply
        reply = await sysop.request({"type": "update_pool", "pool": pool("$NOPE", ["a"])})
        assert refused(reply, "not_found"), reply
        reply = await sysop.request({"type": "remove_pool", "name": "$NOPE"})
        assert refused(reply, "not_found"), reply
        for message in (
            {"type": "add_pool", "pool": pool("$MINE", ["a"])},
            {"type": "update_pool", "pool": pool("$FAST", ["a"])},
            {"type": "remove_pool", "name": "$FAST"},
        ):
            reply = await guest.request(message)
            assert refused(reply, "forbidden"), (message, reply)

        # REST errors, the same cases.
        for bad in ("fast", "$fast"):
            response = await admin.post("/api/v1/pools", json=pool(bad, ["a"]))
            assert response.status_code == 422, (bad, response.text)
        response = await admin.post("/api/v1/pools", json=pool("$X", ["ghost"]))
        assert response.status_code == 404 and detail_code(response) == "not_found"
        response = await admin.post("/api/v1/pools", json=pool("$FAST", ["a"]))
        assert response.status_code == 409 and detail_code(response) == "conflict"
        response = await admin.post("/api/v1/pools", json=pool("$CHAT", ["a"]))
        assert response.status_code == 409 and detail_code(response) == "conflict"
        response = await admin.put("/api/v1/pools/$FAST", json=pool("$OTHER", ["a"]))
        assert response.status_code == 422, response.text
        response = await admin.put("/api/v1/pools/$NOPE", json=pool("$NOPE", ["a"]))
        assert response.status_code == 404, response.text
        response = await admin.put("/api/v1/pools/$FAST", json=pool("$FAST", ["ghost"]))
        assert response.status_code == 404, response.text
        for response in (
            await visitor.post("/api/v1/pools", json=pool("$MINE", ["a"])),
            await visitor.put("/api/v1/pools/$FAST", json=pool("$FAST", ["a"])),
            await visitor.delete("/api/v1/pools/$FAST"),
        ):
            assert response.status_code == 403 and detail_code(response) == "forbidden"
        listed = await visitor.get("/api/v1/pools")
        assert pools_in(listed.json()) == {"$FAST": pool("$FAST", ["a", "b"], "round_robin")}

        # PUT replaces members and strategy; everyone hears of it.
        response = await admin.put("/api/v1/pools/$FAST", json=pool("$FAST", ["b"], "least_busy"))
        assert response.status_code == 200, response.text
        assert pools_in(response.json())["$FAST"] == pool("$FAST", ["b"], "least_busy")
        update = await guest.expect(
            "pool_update", lambda m: pools_in(m).get("$FAST", {}).get("members") == ["b"]
        )
        assert pools_in(update)["$FAST"]["strategy"] == "least_busy"

        # update_pool over the bus does the same.
        reply = await sysop.request(
            {"type": "update_pool", "pool": pool("$FAST", ["a", "b"], "random")}
        )
        assert reply["type"] == "ok", reply
        await guest.expect(
            "pool_update", lambda m: pools_in(m).get("$FAST", {}).get("strategy") == "random"
        )

        # A pool created by REST, removed over the bus.
        response = await admin.post("/api/v1/pools", json=pool("$SLOW", ["a"]))
        assert response.status_code == 201, response.text
        assert set(pools_in(response.json())) == {"$FAST", "$SLOW"}
        await guest.expect("pool_update", lambda m: "$SLOW" in pools_in(m))
        reply = await sysop.request({"type": "remove_pool", "name": "$SLOW"})
        assert reply["type"] == "ok", reply
        await guest.expect("pool_update", lambda m: set(pools_in(m)) == {"$FAST"})

        # DELETE removes; a second DELETE finds nothing.
        response = await admin.delete("/api/v1/pools/$FAST")
        assert response.status_code == 204, response.text
        for client in (sysop, guest):
            await client.expect("pool_update", lambda m: m["pools"] == [])
        assert (await visitor.get("/api/v1/pools")).json()["pools"] == []
        response = await admin.delete("/api/v1/pools/$FAST")
        assert response.status_code == 404 and detail_code(response) == "not_found"


# --- pools: routing ------------------------------------------------------------------------


async def test_queries_to_a_pool_use_its_members_only(
    realm: Realm, rentahal_stub: StubServer, other_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await other_stub.reset()
    await realm.add_worker("a", rentahal_stub)
    await realm.add_worker("b", other_stub)
    await realm.add_worker("c", rentahal_stub)
    broker = realm.broker
    async with (
        broker.bus(api_key=realm.sysop_key) as sysop,
        broker.bus(cookie=await broker.guest_cookie()) as user,
    ):
        reply = await sysop.request(
            {"type": "add_pool", "pool": pool("$AB", ["a", "b"], "round_robin")}
        )
        assert reply["type"] == "ok", reply
        await user.expect("pool_update", lambda m: "$AB" in pools_in(m))

        servers = [await served_by(user, f"turn {i}", "$AB") for i in range(6)]
        assert set(servers) == {"a", "b"}, servers
        assert all(x != y for x, y in itertools.pairwise(servers)), servers

        # Members gone (one removed, one blacklisted): the pool has no worker, though `c`
        # still serves unaddressed queries.
        reply = await sysop.request({"type": "remove_worker", "worker_name": "a"})
        assert reply["type"] == "ok", reply
        await other_stub.configure(health_status=503)

        async def b_blacklisted() -> bool:
            return bool((await workers(realm))["b"]["is_blacklisted"])

        await eventually(b_blacklisted, within=15)
        reply = await submit(user, "anyone in the pool?", "$AB")
        assert refused(reply, "no_worker"), reply
        assert await served_by(user, "anyone at all?") == "c"
        reply = await submit(user, "no such pool", "$NOWHERE")
        assert refused(reply, "no_worker"), reply


async def test_a_pool_or_realm_name_never_reaches_a_worker_as_a_model(
    realm: Realm, ollama_stub: StubServer
) -> None:
    # Ollama serves named models only: a query for `$CHAT` must ask it for one of its own.
    await ollama_stub.reset()
    await realm.add_worker("lama", ollama_stub, models=["llama3"])
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as user:
        for target in ("$CHAT", "lama", ""):
            assert await served_by(user, f"via {target or 'anyone'}", target) == "lama"
    asked = [r["json"]["model"] for r in await ollama_stub.requests() if r["path"] == "/api/chat"]
    assert len(asked) == 3 and all(model.startswith("llama3") for model in asked), asked


# --- realms: routing and metrics -----------------------------------------------------------


async def test_backup_realm_takes_overflow_and_metrics(
    realm: Realm, rentahal_stub: StubServer, other_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await other_stub.reset()
    broker = realm.broker
    await realm.add_worker("main", other_stub, realm="$CHAT", max_concurrency=1)
    async with sysop_http(realm) as admin:
        response = await admin.post(
            "/api/v1/realms", json={"name": "$OVERFLOW", "backup_for": ["chat"]}
        )
        assert response.status_code == 201, response.text
        created = {r["name"]: r for r in response.json()}["$OVERFLOW"]
        assert created["backup_for"] == ["chat"] and created["primary_for"] == []
    await realm.add_worker("spare", rentahal_stub, realm="$OVERFLOW")

    cookie = await broker.guest_cookie()
    async with broker.bus(cookie=cookie) as user:
        # The primary is busy with a slow job: the next chat query overflows to the backup.
        await other_stub.configure(latency=20)
        busy = await submit(user, "take your time")
        assert busy["type"] == "query_accepted", busy
        await user.expect(
            "query_status",
            lambda m: m["query_id"] == busy["query_id"] and m["worker"] == "main",
        )
        assert await served_by(user, "overflow, please") == "spare"
        cross = 'rentahal_cross_realm_requests_total{realm="$CHAT",served_by="$OVERFLOW"} 1.0'
        assert cross in await metrics_text(realm)

        await user.send({"type": "cancel_query", "query_id": busy["query_id"]})
        await finished(user, busy["query_id"])
        await other_stub.configure(latency=0)

        # With the primary idle, its own realm serves; the backup waits. (Idle means its
        # slot is free: the broker frees it a moment after the result is delivered.)
        for i in range(3):
            await eventually(lambda: idle(realm, "main"))
            assert await served_by(user, f"primary {i}") == "main"
        # Naming the backup realm targets it directly (not counted as cross-realm).
        assert await served_by(user, "straight to overflow", "$OVERFLOW") == "spare"

    # /metrics: sysop only, Prometheus text, labelled by realm.
    async with httpx.AsyncClient(base_url=broker.url) as anonymous:
        response = await anonymous.get("/metrics")
        assert response.status_code == 401, response.text
    async with guest_http(broker, cookie) as visitor:
        response = await visitor.get("/metrics")
        assert response.status_code == 403, response.text

    async def queue_depth_exported() -> bool:
        return 'rentahal_queue_depth{realm="$CHAT"} 0.0' in await metrics_text(realm)

    await eventually(queue_depth_exported)
    text = await metrics_text(realm)
    lines = text.splitlines()
    assert cross in lines, text
    done = 'rentahal_queries_total{outcome="done",query_type="chat",realm="$CHAT"} 4.0'
    assert done in lines, text
    direct = 'rentahal_queries_total{outcome="done",query_type="chat",realm="$OVERFLOW"} 1.0'
    assert direct in lines, text
    cancelled = 'rentahal_queries_total{outcome="cancelled",query_type="chat",realm="$CHAT"} 1.0'
    assert cancelled in lines, text
    for worker in ("main", "spare"):
        assert any(
            line.startswith(f'rentahal_worker_health{{worker="{worker}"}} ') for line in lines
        )
    assert any(
        line.startswith("rentahal_query_processing_seconds_bucket{")
        and 'realm="$CHAT"' in line
        and 'worker="main"' in line
        for line in lines
    ), text


# --- realms: admin -------------------------------------------------------------------------


async def test_realm_admin(realm: Realm, other_stub: StubServer) -> None:
    await other_stub.reset()
    broker = realm.broker
    await realm.add_worker("w1", other_stub, max_concurrency=1)
    cookie = await broker.guest_cookie()
    async with (
        sysop_http(realm) as admin,
        guest_http(broker, cookie) as visitor,
        broker.bus(cookie=cookie) as user,
    ):
        # The defaults, each with its primary types, workers and queue depth.
        await other_stub.configure(latency=20)
        first, second = await submit(user, "one"), await submit(user, "two")
        assert first["type"] == second["type"] == "query_accepted", (first, second)
        listed = await realms(admin)
        assert sorted(listed) == DEFAULT_REALMS
        assert {name: r["primary_for"] for name, r in listed.items()} == {
            "$CHAT": ["chat"],
            "$IMAGINE": ["imagine"],
            "$SPEECH": ["speech", "stt", "tts"],
            "$VISION": ["vision"],
        }
        assert listed["$CHAT"]["workers"] == ["w1"] and listed["$VISION"]["workers"] == []
        assert listed["$CHAT"]["queue_depth"] == 1 and listed["$VISION"]["queue_depth"] == 0
        assert all(r["backup_for"] == [] for r in listed.values())

        # PATCH strategy, queue size, backups; the queue limit applies at once.
        response = await admin.patch(
            "/api/v1/realms/$CHAT",
            json={"strategy": "round_robin", "max_queue_size": 1, "backup_for": ["vision"]},
        )
        assert response.status_code == 200, response.text
        chat = {r["name"]: r for r in response.json()}["$CHAT"]
        assert chat["strategy"] == "round_robin" and chat["max_queue_size"] == 1
        assert chat["backup_for"] == ["vision"] and chat["primary_for"] == ["chat"]
        reply = await submit(user, "three")
        assert refused(reply, "queue_full"), reply
        for query in (second, first):
            await user.send({"type": "cancel_query", "query_id": query["query_id"]})
            await finished(user, query["query_id"])
        response = await admin.patch("/api/v1/realms/$CHAT", json={"max_queue_size": 50})
        assert response.status_code == 200, response.text
        assert (await realms(admin))["$CHAT"]["max_queue_size"] == 50
        response = await admin.patch("/api/v1/realms/$CHAT", json={"strategy": "nonsense"})
        assert response.status_code == 422, response.text
        response = await admin.patch("/api/v1/realms/$NOPE", json={"strategy": "random"})
        assert response.status_code == 404, response.text

        # A realm cannot drop a type it is primary for...
        response = await admin.patch("/api/v1/realms/$SPEECH", json={"primary_for": ["speech"]})
        assert response.status_code == 409 and detail_code(response) == "conflict"
        assert (await realms(admin))["$SPEECH"]["primary_for"] == ["speech", "stt", "tts"]
        # ...but another realm can take it over.
        response = await admin.post("/api/v1/realms", json={"name": "$BIG"})
        assert response.status_code == 201, response.text
        response = await admin.patch("/api/v1/realms/$BIG", json={"primary_for": ["chat"]})
        assert response.status_code == 200, response.text
        listed = await realms(admin)
        assert listed["$BIG"]["primary_for"] == ["chat"]
        assert listed["$CHAT"]["primary_for"] == []
        assert listed["$BIG"]["workers"] == ["w1"]  # a worker without a realm follows chat
        await other_stub.configure(latency=0)
        await eventually(lambda: idle(realm, "w1"))
        assert await served_by(user, "who serves chat now?") == "w1"

        # Delete: never a primary realm; a realm that is no longer primary may go.
        response = await admin.delete("/api/v1/realms/$VISION")
        assert response.status_code == 409 and detail_code(response) == "conflict"
        response = await admin.delete("/api/v1/realms/$CHAT")
        assert response.status_code == 204, response.text
        assert sorted(await realms(admin)) == ["$BIG", "$IMAGINE", "$SPEECH", "$VISION"]
        response = await admin.delete("/api/v1/realms/$CHAT")
        assert response.status_code == 404, response.text

        # Names: no duplicate, no pool's name, and only `$NAME` aliases.
        response = await admin.post("/api/v1/realms", json={"name": "$VISION"})
        assert response.status_code == 409, response.text
        response = await admin.post("/api/v1/pools", json=pool("$P", ["w1"]))
        assert response.status_code == 201, response.text
        response = await admin.post("/api/v1/realms", json={"name": "$P"})
        assert response.status_code == 409 and detail_code(response) == "conflict"
        response = await admin.post("/api/v1/realms", json={"name": "lower"})
        assert response.status_code == 422, response.text

        # A guest may do none of it.
        for response in (
            await visitor.get("/api/v1/realms"),
            await visitor.post("/api/v1/realms", json={"name": "$MINE"}),
            await visitor.patch("/api/v1/realms/$BIG", json={"strategy": "random"}),
            await visitor.delete("/api/v1/realms/$IMAGINE"),
        ):
            assert response.status_code == 403 and detail_code(response) == "forbidden"
        listed = await realms(admin)
        assert "$MINE" not in listed and "$IMAGINE" in listed
        assert listed["$BIG"]["strategy"] == "health"


# --- specialisations -----------------------------------------------------------------------


async def test_specialists_get_prompts_with_their_keywords(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    broker = realm.broker
    await realm.add_worker(
        "coder", rentahal_stub, realm="$CHAT", specializations={"code": ["python", "rust"]}
    )
    await realm.add_worker("poet", rentahal_stub, realm="$CHAT")
    async with sysop_http(realm) as admin:
        response = await admin.patch("/api/v1/realms/$CHAT", json={"strategy": "round_robin"})
        assert response.status_code == 200, response.text
        response = await admin.post(
            "/api/v1/pools", json=pool("$MIX", ["coder", "poet"], "round_robin")
        )
        assert response.status_code == 201, response.text

    async with broker.bus(cookie=await broker.guest_cookie()) as user:
        keyed = [
            "write some python",
            "Python: sort a list",
            "a RUST macro, please",
            "python or rust?",
            "port this to python",
        ]
        assert [await served_by(user, prompt) for prompt in keyed] == ["coder"] * len(keyed)
        # Keywords are words: "pythonic" is not "python".
        plain = ["tell me a story", "a haiku about autumn", "is this pythonic", "sing"]
        servers = [await served_by(user, prompt) for prompt in plain]
        assert set(servers) == {"coder", "poet"}, servers
        # The same preference inside a pool.
        assert [await served_by(user, p, "$MIX") for p in keyed[:3]] == ["coder"] * 3
        servers = [await served_by(user, p, "$MIX") for p in plain]
        assert set(servers) == {"coder", "poet"}, servers


# --- who served it -------------------------------------------------------------------------


async def test_query_result_names_the_worker(realm: Realm, rentahal_stub: StubServer) -> None:
    """`query_result.worker` is the worker that served the query, as `query_status` and the
    history say."""
    await rentahal_stub.reset()
    broker = realm.broker
    await realm.add_worker("solo", rentahal_stub)
    async with broker.bus(cookie=await broker.guest_cookie()) as user:
        reply = await submit(user, "who are you?")
        assert reply["type"] == "query_accepted", reply
        query_id = reply["query_id"]
        result = await finished(user, query_id)
        done = await user.expect(
            "query_status", lambda m: m["query_id"] == query_id and m["state"] == "done"
        )
        history = await user.request({"type": "get_previous_queries"})
        (stored,) = [q for q in history["data"] if q["query_id"] == query_id]
        assert done["worker"] == stored["worker"] == "solo", (done, stored)
        assert result["type"] == "query_result", result
        assert result["worker"] == "solo", result


async def test_realm_worker_limits(realm: Realm, other_stub: StubServer) -> None:
    """`max_workers` bounds a realm's membership; `min_workers` shows as a shortfall."""
    await other_stub.reset()
    async with sysop_http(realm) as admin:
        response = await admin.patch(
            "/api/v1/realms/$CHAT", json={"min_workers": 2, "max_workers": 1}
        )
        assert response.status_code == 200, response.text
        assert (await realms(admin))["$CHAT"]["workers_short"] == 2

        await realm.add_worker("only", other_stub)
        listed = await realms(admin)
        assert listed["$CHAT"]["workers"] == ["only"] and listed["$CHAT"]["workers_short"] == 1

        spec = {"name": "extra", "address": other_stub.address, "kind": "rentahal"}
        refused = await admin.post("/api/v1/workers", json=spec)
        assert refused.status_code == 409 and "full" in refused.json()["detail"]["message"]
        # Another realm still takes it.
        elsewhere = await admin.post("/api/v1/workers", json=spec | {"realm": "$SPEECH"})
        assert elsewhere.status_code == 201, elsewhere.text
        assert (await realms(admin))["$SPEECH"]["workers"] == ["extra"]
