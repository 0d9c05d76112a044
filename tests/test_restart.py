"""Nothing accepted is lost across a broker restart, graceful or SIGKILL."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import Realm, create_sysop


async def _add_worker(broker: BrokerProcess, key: str, stub: StubServer, **fields: object) -> None:
    await Realm(broker, key).add_worker("w1", stub, **fields)


async def test_history_survives_a_restart(
    tmp_path: Path, rentahal_stub: StubServer, database_env: dict[str, str]
) -> None:
    await rentahal_stub.reset()
    key = await create_sysop(tmp_path, database_url=database_env.get("RENTAHAL_DATABASE_URL"))
    async with BrokerProcess(tmp_path, env=database_env) as broker:
        await _add_worker(broker, key, rentahal_stub)
        cookie = await broker.guest_cookie()
        async with broker.bus(cookie=cookie) as bus:
            guid = (await bus.expect("user_info"))["data"]["guid"]
            for prompt in ("first", "second"):
                await bus.send({"type": "chat", "prompt": prompt})
                await bus.expect("query_result", lambda m, p=prompt: m["result"] == f"echo: {p}")

    async with (
        BrokerProcess(tmp_path, env=database_env) as broker,
        broker.bus(cookie=cookie) as bus,
    ):
        info = await bus.expect("user_info")
        history = await bus.expect("previous_queries")
    assert info["data"]["guid"] == guid  # the same session, hence the same user
    assert info["data"]["query_count"] == 2
    assert [(q["prompt"], q["result"], q["state"]) for q in history["data"]] == [
        ("second", "echo: second", "done"),
        ("first", "echo: first", "done"),
    ]


async def test_jobs_survive_sigkill(
    tmp_path: Path, rentahal_stub: StubServer, database_env: dict[str, str]
) -> None:
    """A running job and a queued one, the broker SIGKILLed: after the restart both run,
    and their results reach the owner when they reconnect."""
    await rentahal_stub.reset()
    key = await create_sysop(tmp_path, database_url=database_env.get("RENTAHAL_DATABASE_URL"))
    broker = BrokerProcess(tmp_path, env=database_env)
    await broker.start()
    try:
        await _add_worker(broker, key, rentahal_stub, max_concurrency=1)
        await rentahal_stub.configure(latency=30)
        cookie = await broker.guest_cookie()
        async with broker.bus(cookie=cookie) as bus:
            running = await bus.request({"type": "chat", "prompt": "running"})
            queued = await bus.request({"type": "chat", "prompt": "queued"})
            await bus.expect(
                "query_status",
                lambda m: m["query_id"] == running["query_id"] and m["state"] == "dispatched",
            )

            async def worker_has_it() -> bool:
                return (await rentahal_stub.stats())["in_flight"] == 1

            await eventually(worker_has_it)  # the request is at the worker, mid-job
            await broker.kill()
    finally:
        await broker.stop()

    await rentahal_stub.configure(latency=0)
    async with (
        BrokerProcess(tmp_path, env=database_env) as broker,
        broker.bus(cookie=cookie) as bus,
    ):
        results = {(await bus.expect("query_result", within=20))["query_id"] for _ in range(2)}
    assert results == {running["query_id"], queued["query_id"]}
    prompts = [
        r["json"]["prompt"] for r in await rentahal_stub.requests() if r["path"] == "/predict"
    ]
    assert prompts.count("running") == 2  # the interrupted attempt, then the one that finished
    # Both attempts named the same job, so a worker that had finished it would not run it again.
    keys = {
        r["headers"].get("idempotency-key")
        for r in await rentahal_stub.requests()
        if r["path"] == "/predict" and r["json"]["prompt"] == "running"
    }
    assert keys == {f"{running['query_id']}.0"}
    assert prompts.count("queued") == 1


async def test_jobs_in_flight_at_a_sigkill_finish_once_after_restart(
    tmp_path: Path, database_env: dict[str, str]
) -> None:
    """A worker whose models only its health check knows, jobs at the worker and waiting,
    the broker SIGKILLed: the restarted broker dispatches them before its first probe of the
    worker, every one finishes (none failed, the circuit never opened), and each completes at
    the worker exactly once (the interrupted attempts were cut off, not finished)."""
    key = await create_sysop(tmp_path, database_url=database_env.get("RENTAHAL_DATABASE_URL"))
    headers = {"Authorization": f"Bearer {key}"}
    async with StubServer("openai", models=["m1"]) as stub:
        await stub.configure(latency=30)
        broker = BrokerProcess(tmp_path, env=database_env)
        await broker.start()
        try:
            await Realm(broker, key).add_worker("w1", stub, type="chat", max_concurrency=4)
            async with httpx.AsyncClient(base_url=broker.url, headers=headers) as http:

                async def models_known() -> bool:
                    workers = (await http.get("/api/v1/workers")).json()
                    return workers[0]["models"] == ["m1"]

                await eventually(models_known)
                ids = [
                    (
                        await http.post(
                            "/api/v1/queries", json={"query_type": "chat", "prompt": f"q{i}"}
                        )
                    ).json()["query_id"]
                    for i in range(12)
                ]

                async def four_at_the_worker() -> bool:
                    return (await stub.stats())["in_flight"] == 4

                await eventually(four_at_the_worker)
            await broker.kill()
        finally:
            await broker.stop()

        await stub.configure(latency=0.05)
        async with (
            BrokerProcess(tmp_path, env=database_env) as broker,
            httpx.AsyncClient(base_url=broker.url, headers=headers, timeout=30) as http,
        ):
            states = [
                (await http.get(f"/api/v1/queries/{i}", params={"wait": 20})).json()["state"]
                for i in ids
            ]
        requests = [r for r in await stub.requests() if r["method"] == "POST"]
    assert states == ["done"] * len(ids), broker.output[-3000:]
    completed = Counter(
        r["json"]["messages"][-1]["content"] for r in requests if r["outcome"] == "completed"
    )
    assert completed == Counter(f"q{i}" for i in range(12))
    cut_off = [r for r in requests if r["outcome"] == "disconnected"]
    assert len(cut_off) == 4


async def test_a_sigkill_amid_group_commits_loses_no_accepted_job(
    tmp_path: Path, database_env: dict[str, str]
) -> None:
    """Clients submitting as fast as they can, so that the store's writes go in batches (one
    transaction for many jobs' transitions), and the broker SIGKILLed mid-stream: after the
    restart every job whose submission was answered 202 is there and finishes, whatever
    batch it was in when the process died."""
    key = await create_sysop(tmp_path, database_url=database_env.get("RENTAHAL_DATABASE_URL"))
    headers = {"Authorization": f"Bearer {key}"}
    env = database_env | {"RENTAHAL_MAX_QUEUE_SIZE": "100000"}
    accepted: list[str] = []
    async with StubServer("openai", models=["m1"]) as stub:
        await stub.configure(latency=0.005)
        broker = BrokerProcess(tmp_path, env=env)
        await broker.start()
        try:
            await Realm(broker, key).add_worker("w1", stub, type="chat", max_concurrency=8)
            async with httpx.AsyncClient(base_url=broker.url, headers=headers) as http:

                async def submit_until_cut_off(client: int) -> None:
                    for i in range(10_000):
                        body = {"query_type": "chat", "prompt": f"c{client}-{i}"}
                        try:
                            answer = await http.post("/api/v1/queries", json=body)
                        except httpx.TransportError:
                            return  # the broker is gone
                        assert answer.status_code == 202, answer.text
                        accepted.append(answer.json()["query_id"])

                async def many_accepted() -> bool:
                    return len(accepted) >= 150

                clients = [asyncio.create_task(submit_until_cut_off(c)) for c in range(8)]
                await eventually(many_accepted, within=60)
                await broker.kill()
                await asyncio.gather(*clients)
        finally:
            await broker.stop()

        async with (
            BrokerProcess(tmp_path, env=env) as broker,
            httpx.AsyncClient(base_url=broker.url, headers=headers, timeout=60) as http,
        ):
            states = Counter()
            for query_id in accepted:
                found = await http.get(f"/api/v1/queries/{query_id}", params={"wait": 30})
                assert found.status_code == 200, (query_id, found.text)
                states[found.json()["state"]] += 1
    assert states == Counter(done=len(accepted)), broker.output[-3000:]
