"""Nothing accepted is lost across a broker restart, graceful or SIGKILL."""

from __future__ import annotations

from pathlib import Path

import pytest

from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm, create_sysop


async def _add_worker(broker: BrokerProcess, key: str, stub: StubServer, **fields: object) -> None:
    await Realm(broker, key).add_worker("w1", stub, **fields)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The broker's environment for each database: its SQLite default, or a fresh
    PostgreSQL database through `RENTAHAL_DATABASE_URL`."""
    if request.param == "sqlite":
        return dict(FAST_ENV)
    return FAST_ENV | {"RENTAHAL_DATABASE_URL": request.getfixturevalue("fresh_pg_url")}


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


async def test_jobs_survive_sigkill(tmp_path: Path, rentahal_stub: StubServer) -> None:
    """A running job and a queued one, the broker SIGKILLed: after the restart both run,
    and their results reach the owner when they reconnect."""
    await rentahal_stub.reset()
    key = await create_sysop(tmp_path)
    broker = BrokerProcess(tmp_path, env=FAST_ENV)
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
    async with BrokerProcess(tmp_path, env=FAST_ENV) as broker, broker.bus(cookie=cookie) as bus:
        results = {(await bus.expect("query_result", within=20))["query_id"] for _ in range(2)}
    assert results == {running["query_id"], queued["query_id"]}
    prompts = [
        r["json"]["prompt"] for r in await rentahal_stub.requests() if r["path"] == "/predict"
    ]
    assert prompts.count("running") == 2  # the interrupted attempt, then the one that finished
    assert prompts.count("queued") == 1
