"""The credit ledger: after a mixed run of queries by several users on workers of two owners,
every balance is the sum of its rows, every charge is the cost formula, and every worker's
owner earned the per-second price of the seconds it served; budgets refuse a query with
`insufficient_credit`; the sysop exports it all."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from rentahal.config import load_settings
from rentahal.store import Role, Store
from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from tests.conftest import FAST_ENV, Realm, create_sysop

BASE, PER_SECOND = 0.01, 0.001  # the defaults: base_cost_per_query, cost_per_second


async def make_user(data_dir: Path, nickname: str) -> tuple[str, str]:
    store = await Store(load_settings(data_dir=data_dir).resolved_database_url).open()
    try:
        user = await store.users.create(role=Role.USER, nickname=nickname)
        return user.id, await store.credentials.create_api_key(user.id)
    finally:
        await store.close()


async def ask(bus: BusClient, prompt: str, model: str, **options: Any) -> dict[str, Any]:
    query = {"prompt": prompt, "model_name": model, "options": options}
    accepted = await bus.request({"type": "submit_query", "query": query})
    assert accepted["type"] == "query_accepted", accepted
    return await bus.expect(
        "query_result", lambda m: m["query_id"] == accepted["query_id"], within=20
    )


async def test_balances_charges_and_earnings_add_up_after_a_mixed_run(tmp_path: Path) -> None:
    ann_key = await create_sysop(tmp_path, "ann")  # owns the Ollama worker
    bob_key = await create_sysop(tmp_path, "bob")  # owns the OpenAI-compatible ones
    cat_id, cat_key = await make_user(tmp_path, "cat")
    async with (
        StubServer("ollama", models=["llama3"]) as ollama,
        StubServer("openai", models=["gpt-4o-mini", "tts-1"]) as openai,
        BrokerProcess(tmp_path, env=FAST_ENV) as broker,
    ):
        await Realm(broker, ann_key).add_worker("ann-llm", ollama)
        bob = Realm(broker, bob_key)
        await bob.add_worker("bob-llm", openai, models=["gpt-4o-mini"])
        await bob.add_worker("bob-voice", openai, type="tts", models=["tts-1"])
        results = []
        async with (
            broker.bus(api_key=cat_key) as cat,
            broker.bus(cookie=await broker.guest_cookie()) as guest,
            broker.bus(api_key=ann_key) as ann,
        ):
            for bus, model in [
                (cat, "llama3"),
                (cat, "gpt-4o-mini"),
                (guest, "llama3"),
                (ann, "gpt-4o-mini"),
            ]:
                results.append(await ask(bus, "hello", model))
            # Answered by Ann's worker, spoken by Bob's: both owners earn from one query.
            results.append(await ask(cat, "say hi", "llama3", speak=True))
            guest_id = (await guest.request({"type": "get_previous_queries"}))["data"][0]
        headers = {"Authorization": f"Bearer {ann_key}"}
        async with httpx.AsyncClient(base_url=broker.url, headers=headers) as http:
            ann_id = (await http.get("/api/v1/me")).json()["guid"]
            rows = (await http.get("/api/v1/export/ledger", params={"format": "json"})).json()
            queries = {
                q["id"]: q
                for q in (
                    await http.get("/api/v1/export/queries", params={"format": "json"})
                ).json()
            }
            users = {r["user_id"] for r in rows}
            credits = {u: (await http.get(f"/api/v1/users/{u}/credits")).json() for u in users}

    by_user: dict[str, float] = defaultdict(float)
    for row in rows:
        by_user[row["user_id"]] += row["amount"]
    for user_id, credit in credits.items():
        assert credit["balance"] == pytest.approx(by_user[user_id], abs=1e-9)
    assert len(users) == 4  # cat, the guest and ann pay; ann and bob earn

    assert len(queries) == len(results) == 5
    for result in results:
        query = queries[result["query_id"]]
        cost = BASE + PER_SECOND * query["processing_time"]
        assert query["cost"] == pytest.approx(cost, abs=1e-9)
        mine = [r for r in rows if r["query_id"] == query["id"]]
        (charge,) = [r for r in mine if r["kind"] == "query"]
        assert (charge["user_id"], charge["amount"]) == (
            query["user_id"],
            pytest.approx(-cost, abs=1e-6),
        )
        # The energy view: the watt rate (premium for Ann, a sysop) over the seconds served.
        watts = 1000 if query["user_id"] == ann_id else 500
        kwh = watts * query["processing_time"] / 3_600_000
        assert query["energy_kwh"] == pytest.approx(kwh, rel=1e-9)
        assert query["energy_cost"] == pytest.approx(kwh * 0.25, rel=1e-9)
        earned = [r for r in mine if r["kind"] == "earning"]
        assert sum(r["amount"] for r in earned) == pytest.approx(
            PER_SECOND * query["processing_time"], abs=2e-6
        )
    spoken = [
        r for r in rows if r["query_id"] == results[-1]["query_id"] and r["kind"] == "earning"
    ]
    assert sorted(r["worker_name"] for r in spoken) == ["ann-llm", "bob-voice"]
    assert guest_id["query_id"] in queries
    assert credits[cat_id]["balance"] < 0 and not credits[cat_id]["budget_enforced"]


async def test_an_enforced_budget_needs_credit_and_a_grant_gives_it(
    realm: Realm, ollama_stub: StubServer, tmp_path: Path
) -> None:
    await ollama_stub.reset()
    await realm.add_worker("llm", ollama_stub)
    user_id, user_key = await make_user(tmp_path, "dora")
    sysop = {"Authorization": f"Bearer {realm.sysop_key}"}
    user = {"Authorization": f"Bearer {user_key}"}
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        budget = await http.put(
            f"/api/v1/users/{user_id}/budget", json={"enforced": True}, headers=sysop
        )
        assert budget.status_code == 200 and budget.json()["budget_enforced"] is True
        async with realm.broker.bus(api_key=user_key) as bus:
            refused = await bus.request({"type": "submit_query", "query": {"prompt": "hi"}})
            assert refused["code"] == "insufficient_credit", refused
            assert "ask the sysop" in refused["message"]
            rest = await http.post("/api/v1/queries", json={"prompt": "hi"}, headers=user)
            assert (
                rest.status_code == 402 and rest.json()["detail"]["code"] == "insufficient_credit"
            )
            openai = await http.post(
                "/v1/chat/completions",
                json={"model": "", "messages": [{"role": "user", "content": "hi"}]},
                headers=user,
            )
            assert (
                openai.status_code == 429 and openai.json()["error"]["type"] == "insufficient_quota"
            )

            granted = await http.post(
                f"/api/v1/users/{user_id}/credits",
                json={"amount": 0.015, "memo": "welcome"},
                headers=sysop,
            )
            assert granted.status_code == 201 and granted.json()["balance"] == pytest.approx(0.015)
            await ask(bus, "first", "")  # 0.015 covers one query (0.01 and a little)…
            again = await bus.request({"type": "submit_query", "query": {"prompt": "second"}})
            assert again["code"] == "insufficient_credit"  # …and what is left does not
        mine = (await http.get("/api/v1/credits", headers=user)).json()
        assert [e["kind"] for e in mine["entries"]] == ["query", "grant"]
        assert mine["balance"] == pytest.approx(sum(e["amount"] for e in mine["entries"]))
        assert mine["entries"][1]["memo"] == "welcome"

        # Only a sysop grants, sets budgets and exports.
        for method, path, body in [
            ("POST", f"/api/v1/users/{user_id}/credits", {"amount": 5}),
            ("PUT", f"/api/v1/users/{user_id}/budget", {"enforced": False}),
            ("GET", "/api/v1/export/ledger", None),
            ("GET", f"/api/v1/users/{user_id}/credits", None),
        ]:
            response = await http.request(method, path, json=body, headers=user)
            assert response.status_code == 403, (path, response.status_code)
        audit = (await http.get("/api/v1/audit", headers=sysop)).json()
        assert [e["action"] for e in audit[:2]] == ["grant_credit", "set_budget"]
        exported = await http.get("/api/v1/export/ledger", headers=sysop)
        assert exported.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["kind"] for r in table if r["user_id"] == user_id] == ["grant", "query"]
        assert float(table[0]["amount"]) == pytest.approx(0.015)


async def test_a_realm_can_enforce_every_users_budget(tmp_path: Path) -> None:
    sysop_key = await create_sysop(tmp_path)
    async with (
        StubServer("ollama", models=["llama3"]) as stub,
        BrokerProcess(tmp_path, env=FAST_ENV | {"RENTAHAL_ENFORCE_BUDGETS": "true"}) as broker,
    ):
        await Realm(broker, sysop_key).add_worker("llm", stub)
        async with broker.bus(cookie=await broker.guest_cookie()) as guest:
            guid = (await guest.expect("user_info"))["data"]["guid"]
            refused = await guest.request({"type": "submit_query", "query": {"prompt": "hi"}})
            assert refused["code"] == "insufficient_credit", refused
            async with httpx.AsyncClient(base_url=broker.url) as http:
                granted = await http.post(
                    f"/api/v1/users/{guid}/credits",
                    json={"amount": 1},
                    headers={"Authorization": f"Bearer {sysop_key}"},
                )
                assert granted.status_code == 201
            answered = await ask(guest, "now", "")
            assert answered["result"] == "echo: now"
        async with broker.bus(api_key=sysop_key) as sysop:  # a sysop is never refused
            assert (await ask(sysop, "free", ""))["result"] == "echo: free"
