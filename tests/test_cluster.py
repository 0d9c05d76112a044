"""Many brokers, one installation (issue 17): broker processes sharing a real PostgreSQL
database and a real Redis, each test in a Redis namespace (`cluster_name`) of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from rentahal.cluster.node import ClusterNode
from rentahal.cluster.rate_limits import RedisBuckets
from rentahal.limits import Limit
from rentahal.net import free_port
from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import ServerProcess, StubServer
from rentahal.testing.waiting import eventually
from rentahal.testing.worker import WorkerProcess
from tests.conftest import FAST_ENV, Realm, create_sysop
from tests.test_scheduler import peak_stats

REDIS_URL = os.environ.get("RENTAHAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LEASE = 2.0  # seconds; short, so that a dead broker's jobs are taken over quickly


def cluster_env(database_url: str, redis_url: str = REDIS_URL) -> dict[str, str]:
    """One installation: one database, one Redis namespace, one secret."""
    return FAST_ENV | {
        "RENTAHAL_DATABASE_URL": database_url,
        "RENTAHAL_REDIS_URL": redis_url,
        "RENTAHAL_CLUSTER_NAME": f"test_{secrets.token_hex(6)}",
        "RENTAHAL_CLUSTER_LEASE": str(LEASE),
        "RENTAHAL_SECRET_KEY": secrets.token_urlsafe(32),
    }


async def start_brokers(
    stack: AsyncExitStack, tmp_path: Path, env: dict[str, str], count: int
) -> list[BrokerProcess]:
    brokers = [BrokerProcess(tmp_path / f"broker{n}", env=env) for n in range(count)]
    for broker in brokers:
        await stack.enter_async_context(broker)
    return brokers


async def worker_names(broker: BrokerProcess, key: str) -> list[str]:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        response = await http.get("/api/v1/workers", headers={"Authorization": f"Bearer {key}"})
    return [w["name"] for w in response.json()]


async def greeted(bus: BusClient) -> str:
    return str((await bus.expect("user_info"))["data"]["guid"])


async def completions(stub: StubServer, prompt: str) -> int:
    return sum(
        1
        for r in await stub.requests()
        if r["path"] == "/predict" and r["json"]["prompt"] == prompt and r["outcome"] == "completed"
    )


async def test_a_worker_added_on_one_broker_is_used_by_all_and_never_oversubscribed(
    tmp_path: Path, rentahal_stub: StubServer, fresh_pg_url: str
) -> None:
    """Three brokers, a worker with one slot added on the first: every broker lists it within
    a second, users on all three are answered, and the worker never has two jobs at once."""
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=0.15)
    key = await create_sysop(tmp_path, database_url=fresh_pg_url)
    async with AsyncExitStack() as stack:
        brokers = await start_brokers(stack, tmp_path, cluster_env(fresh_pg_url), 3)
        await Realm(brokers[0], key).add_worker("w1", rentahal_stub, max_concurrency=1)
        for broker in brokers[1:]:

            async def listed(broker: BrokerProcess = broker) -> bool:
                return await worker_names(broker, key) == ["w1"]

            await eventually(listed, within=1.0)

        cookie = await brokers[0].guest_cookie()  # one session, valid on every broker
        buses = [await stack.enter_async_context(b.bus(cookie=cookie)) for b in brokers]
        guids = {await greeted(bus) for bus in buses}
        assert len(guids) == 1
        # One user on three brokers and a sysop on one: two users connected, said by each.
        sysop = await stack.enter_async_context(brokers[1].bus(api_key=key))
        await greeted(sysop)

        async def two_connected() -> bool:
            stats = await sysop.request({"type": "get_stats"})
            return bool(stats["data"]["connected_users"] == 2)

        await eventually(two_connected, within=5)
        prompts = [f"p{n}-{i}" for n in range(3) for i in range(3)]
        for n, bus in enumerate(buses):
            for i in range(3):
                await bus.send({"type": "chat", "prompt": f"p{n}-{i}"})
        for n, bus in enumerate(buses):
            got = set()
            while len(got) < 3:
                result = await bus.expect(
                    "query_result", lambda m, n=n: m["result"].startswith(f"echo: p{n}-"), 20
                )
                got.add(result["result"])
        stats = await peak_stats(rentahal_stub)
        assert stats["peak_in_flight"] == 1, stats
        assert sorted([await completions(rentahal_stub, p) for p in prompts]) == [1] * 9


async def test_broadcasts_bans_and_roles_reach_every_broker(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    """A sysop on one broker; a user on another. The sysop sees the user among those
    connected, the sysop's message reaches the user, the user's promotion reaches their
    socket, and a ban closes it and refuses their next request there at once (the other
    broker's cached credentials are dropped too)."""
    key = await create_sysop(tmp_path, database_url=fresh_pg_url)
    async with AsyncExitStack() as stack:
        a, b = await start_brokers(stack, tmp_path, cluster_env(fresh_pg_url), 2)
        sysop = await stack.enter_async_context(a.bus(api_key=key))
        await greeted(sysop)
        cookie = await b.guest_cookie()
        user = await stack.enter_async_context(b.bus(cookie=cookie))
        guid = await greeted(user)
        # The sysop sees who is connected to every broker.
        await sysop.expect("active_users", lambda m: guid in m["users"], 3)
        stats = await sysop.request({"type": "get_stats"})
        assert stats["data"]["connected_users"] == 2, stats
        session = {"Cookie": f"rentahal_session={cookie}"}
        async with httpx.AsyncClient(base_url=b.url, headers=session) as http:
            made = await http.post(
                "/api/v1/keys", json={"name": "script"}, headers={"Origin": b.url}
            )
            assert made.status_code == 201, made.text
            as_key = {"Authorization": f"Bearer {made.json()['key']}"}
            me = await http.get("/api/v1/me", headers=as_key)  # B now has the key cached
            assert me.status_code == 200, me.text

            assert (await sysop.request({"type": "sysop_message", "message": "noon"}))[
                "type"
            ] == "ok"
            said = await user.expect("sysop_message", within=3)
            assert said["message"] == "noon"

            promoted = await sysop.request(
                {"type": "set_role", "user_guid": guid, "role": "premium"}
            )
            assert promoted["type"] == "ok", promoted
            await user.expect("user_info", lambda m: m["data"]["role"] == "premium", 3)
            assert (await http.get("/api/v1/me")).json()["role"] == "premium"

            reply = await sysop.request({"type": "ban_user", "user_guid": guid})
            assert reply["type"] == "ok", reply
            await asyncio.wait_for(user.closed.wait(), 3)
            assert user.close_code == 4003
            for headers in ({}, as_key):
                banned = await http.get("/api/v1/me", headers=headers)
                assert banned.status_code == 403, banned.text


async def test_a_killed_brokers_jobs_are_taken_over_and_finish_once(
    tmp_path: Path, rentahal_stub: StubServer, fresh_pg_url: str
) -> None:
    """A broker SIGKILLed with a job at the worker and one waiting: within a lease another
    broker takes over the first and dispatches the second, each completes at the worker
    exactly once, and the user, back on the living broker, receives both results."""
    await rentahal_stub.reset()
    key = await create_sysop(tmp_path, database_url=fresh_pg_url)
    env = cluster_env(fresh_pg_url)
    async with AsyncExitStack() as stack:
        doomed = BrokerProcess(tmp_path / "doomed", env=env)
        await doomed.start()
        stack.push_async_callback(doomed.stop)
        await Realm(doomed, key).add_worker("w1", rentahal_stub, max_concurrency=1)
        await rentahal_stub.configure(latency=30)
        cookie = await doomed.guest_cookie()
        async with doomed.bus(cookie=cookie) as bus:
            await greeted(bus)
            running = await bus.request({"type": "chat", "prompt": "running"})
            queued = await bus.request({"type": "chat", "prompt": "queued"})

            async def worker_has_it() -> bool:
                return (await rentahal_stub.stats())["in_flight"] == 1

            await eventually(worker_has_it)
            # The survivor joins now, so the job at the worker is the doomed broker's; the
            # waiting one is in the shared line, where the survivor finds it.
            (survivor,) = await start_brokers(stack, tmp_path, env, 1)
            await rentahal_stub.configure(latency=0)
            await doomed.kill()
            killed_at = asyncio.get_running_loop().time()

        async with survivor.bus(cookie=cookie) as bus:
            ids = {
                (await bus.expect("query_result", within=LEASE * 4 + 10))["query_id"]
                for _ in range(2)
            }
        assert ids == {running["query_id"], queued["query_id"]}
        assert asyncio.get_running_loop().time() - killed_at < LEASE * 4 + 10
        assert await completions(rentahal_stub, "running") == 1
        assert await completions(rentahal_stub, "queued") == 1
        keys = Counter(
            r["headers"].get("idempotency-key")
            for r in await rentahal_stub.requests()
            if r["path"] == "/predict" and r["json"]["prompt"] == "running"
        )
        assert set(keys) == {f"{running['query_id']}.0"}  # the same job, however often sent


class RedisServer(ServerProcess):
    """A Redis of the test's own, on a free port, that it may stop and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        executable = shutil.which("redis-server") or "redis-server"
        super().__init__(
            [executable, *("--port", str(port), "--bind", "127.0.0.1"), "--save", ""],
            None,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        await super().start()
        client = Redis.from_url(self.url)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except RedisError:
                return False

        try:
            await eventually(answers)
        finally:
            await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def own_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            await server.stop()


async def test_redis_going_away_is_said_and_refused_and_recovered_from(
    tmp_path: Path, rentahal_stub: StubServer, fresh_pg_url: str, own_redis: RedisServer
) -> None:
    """Redis stopped under a running cluster, with a job at the worker and one waiting in
    the shared line: `/readyz` says so, new queries are refused as `unavailable` (nothing is
    accepted that could not be shared), the log says it once. Redis back on the same port,
    empty (no persistence): the broker recovers by itself, queues its waiting job again from
    the database, and every accepted job is answered."""
    await rentahal_stub.reset()
    key = await create_sysop(tmp_path, database_url=fresh_pg_url)
    async with AsyncExitStack() as stack:
        (broker,) = await start_brokers(
            stack, tmp_path, cluster_env(fresh_pg_url, own_redis.url), 1
        )
        await Realm(broker, key).add_worker("w1", rentahal_stub, max_concurrency=1)
        bus = await stack.enter_async_context(broker.bus(api_key=key))
        await greeted(bus)
        await rentahal_stub.configure(latency=1.0)
        for prompt in ("running", "waiting"):
            await bus.request({"type": "chat", "prompt": prompt})
        await eventually(lambda: _at_worker(rentahal_stub, "running"))
        async with httpx.AsyncClient(base_url=broker.url) as http:
            await own_redis.stop()

            async def not_ready() -> bool:
                return (await http.get("/readyz")).status_code == 503

            await eventually(not_ready, within=10)
            assert (await http.get("/readyz")).json()["cluster"] == "unavailable"
            refused = await bus.request({"type": "chat", "prompt": "during"})
            assert refused["type"] == "error" and refused["code"] == "unavailable", refused

            await own_redis.start()

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready, within=15)
            await bus.send({"type": "chat", "prompt": "after"})
            for prompt in ("running", "waiting", "after"):
                await bus.expect(
                    "query_result", lambda m, p=prompt: m["result"] == f"echo: {p}", 15
                )
        assert broker.output.count("redis.unavailable") == 1, broker.output
        assert "redis.recovered" in broker.output


@pytest.mark.parametrize("database_url", [None])
def test_a_cluster_needs_postgresql(database_url: str | None) -> None:
    from pydantic import ValidationError

    from rentahal.config import Settings

    with pytest.raises(ValidationError, match="redis_url needs a PostgreSQL database_url"):
        Settings(redis_url=REDIS_URL, database_url=database_url)


async def test_rate_limits_are_counted_in_redis_all_or_nothing() -> None:
    """The shared buckets behave as the in-process ones: a token from every bucket or from
    none, and the wait until each has one."""
    node = ClusterNode(REDIS_URL, f"test_{secrets.token_hex(6)}", LEASE)
    buckets, elsewhere = RedisBuckets(node, "queries"), RedisBuckets(node, "queries")
    try:
        tight, loose = Limit("user:u", 2), Limit("ip:1.2.3.4", 5)
        assert await buckets.take([tight, loose]) == 0
        assert await elsewhere.take([tight, loose]) == 0  # another broker's view: the same
        wait = await buckets.take([tight, loose])
        assert 29 < wait <= 30  # a token of 2 a minute comes back in 30 s
        # The refused request took nothing from the looser bucket: 3 of its 5 remain.
        assert [await elsewhere.take([loose]) for _ in range(3)] == [0, 0, 0]
        assert await buckets.take([loose]) > 0
        assert await buckets.take([Limit("user:u", 0)]) == 0  # 0: no limit
    finally:
        await node.redis.aclose()


async def test_a_users_rate_limit_holds_across_brokers(tmp_path: Path, fresh_pg_url: str) -> None:
    """Three queries a minute for a guest, asked alternately of two brokers: the fourth is
    refused, whichever broker gets it."""
    env = cluster_env(fresh_pg_url) | {"RENTAHAL_QUERIES_PER_MINUTE_GUEST": "3"}
    async with AsyncExitStack() as stack:
        a, b = await start_brokers(stack, tmp_path, env, 2)
        cookie = await a.guest_cookie()
        buses = [await stack.enter_async_context(x.bus(cookie=cookie)) for x in (a, b)]
        for bus in buses:
            await greeted(bus)
        replies = [
            await buses[n % 2].request({"type": "chat", "prompt": f"q{n}"}) for n in range(4)
        ]
    # No worker serves chat: the three within the limit are refused for that, not the limit.
    assert [r.get("code") for r in replies] == ["no_worker"] * 3 + ["rate_limited"], replies


async def test_users_take_turns_across_brokers(
    tmp_path: Path, rentahal_stub: StubServer, fresh_pg_url: str
) -> None:
    """One worker slot; a user on one broker queues six jobs, then a user on another broker
    queues one. The lines are shared, so the newcomer waits for one of the first user's jobs
    beyond the one running, not for all six (each broker alone would run its own first)."""
    async with AsyncExitStack() as stack:
        a, b, _ = await two_brokers_one_slot(stack, tmp_path, rentahal_stub, fresh_pg_url, 0.3)
        heavy = await stack.enter_async_context(a.bus(cookie=await a.guest_cookie()))
        light = await stack.enter_async_context(b.bus(cookie=await b.guest_cookie()))
        await greeted(heavy)
        await greeted(light)
        for n in range(6):
            await heavy.request({"type": "chat", "prompt": f"heavy{n}"})

        async def worker_has_one() -> bool:
            return (await rentahal_stub.stats())["in_flight"] == 1

        await eventually(worker_has_one)
        await light.request({"type": "chat", "prompt": "light"})
        await light.expect("query_result", lambda m: m["result"] == "echo: light", 10)
    order = [r["json"]["prompt"] for r in await rentahal_stub.requests() if r["path"] == "/predict"]
    assert order.index("light") <= 2, order  # heavy0 running, at most heavy1, then light


async def two_brokers_one_slot(
    stack: AsyncExitStack, tmp_path: Path, stub: StubServer, database_url: str, latency: float
) -> tuple[BrokerProcess, BrokerProcess, str]:
    """Two brokers of one cluster and a worker with one slot, added on the first and seen by
    both; returns them and the sysop's key."""
    await stub.reset()
    await stub.configure(latency=latency)
    key = await create_sysop(tmp_path, database_url=database_url)
    a, b = await start_brokers(stack, tmp_path, cluster_env(database_url), 2)
    await Realm(a, key).add_worker("w1", stub, max_concurrency=1)

    async def listed() -> bool:
        return await worker_names(b, key) == ["w1"]

    await eventually(listed, within=5.0)
    return a, b, key


async def test_an_openai_request_is_answered_by_the_broker_asked_when_another_runs_it(
    tmp_path: Path, rentahal_stub: StubServer, fresh_pg_url: str
) -> None:
    """The one worker slot is busy with broker A's job; `/v1/chat/completions` asked of
    broker B waits in the shared line, and B is paused (SIGSTOP) so that A takes it when the
    slot frees. B, resumed, answers its client with the result A's run produced."""
    async with AsyncExitStack() as stack:
        a, b, key = await two_brokers_one_slot(stack, tmp_path, rentahal_stub, fresh_pg_url, 1.0)
        sysop = await stack.enter_async_context(a.bus(api_key=key))
        await greeted(sysop)
        await sysop.request({"type": "chat", "prompt": "hold"})
        await eventually(lambda: _at_worker(rentahal_stub, "hold"))

        async def ask() -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=b.url, headers=headers, timeout=20) as http:
                body = {"model": "w1", "messages": [{"role": "user", "content": "across"}]}
                return await http.post("/v1/chat/completions", json=body)

        asking = asyncio.create_task(ask())
        await eventually(lambda: _queued(fresh_pg_url, "across"))
        assert b.pid is not None
        os.kill(b.pid, signal.SIGSTOP)
        try:
            await eventually(lambda: _at_worker(rentahal_stub, "across"), within=5)
        finally:
            os.kill(b.pid, signal.SIGCONT)
        response = await asyncio.wait_for(asking, 20)
    assert response.status_code == 200, response.text
    assert "across" in response.json()["choices"][0]["message"]["content"]
    runs = await _dispatchers(fresh_pg_url)
    assert runs["across"] == runs["hold"]  # A ran it, and B answered


async def _at_worker(stub: StubServer, prompt: str) -> bool:
    return any(
        r["path"] == "/predict" and prompt in str(r["json"]["prompt"])
        for r in await stub.requests()
    )


async def _queued(database_url: str, prompt: str) -> bool:
    rows = await _fetch(
        database_url, "SELECT state FROM queries WHERE prompt LIKE $1", f"%{prompt}%"
    )
    return [row["state"] for row in rows] == ["queued"]


async def _dispatchers(database_url: str) -> dict[str, str]:
    """The broker that ran each query, by prompt."""
    rows = await _fetch(database_url, "SELECT prompt, broker_id FROM queries")
    return {row["prompt"].split(":")[-1].strip(): row["broker_id"] for row in rows}


async def _fetch(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


async def test_a_users_running_jobs_are_limited_across_brokers(
    tmp_path: Path, rentahal_stub: StubServer, fresh_pg_url: str
) -> None:
    """`max_running_per_user` 1 and a worker with room for four: a guest asking two brokers
    for two answers each never has two running at once, whichever brokers run them."""
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=0.3)
    key = await create_sysop(tmp_path, database_url=fresh_pg_url)
    env = cluster_env(fresh_pg_url) | {"RENTAHAL_MAX_RUNNING_PER_USER": "1"}
    async with AsyncExitStack() as stack:
        a, b = await start_brokers(stack, tmp_path, env, 2)
        await Realm(a, key).add_worker("w1", rentahal_stub, max_concurrency=4)
        cookie = await a.guest_cookie()
        buses = [await stack.enter_async_context(x.bus(cookie=cookie)) for x in (a, b)]
        for bus in buses:
            await greeted(bus)
        for n in range(4):
            await buses[n % 2].request({"type": "chat", "prompt": f"one at a time {n}"})
        for n in range(4):
            echo = f"echo: one at a time {n}"
            await buses[0].expect("query_result", lambda m, e=echo: m["result"] == e, 15)
    assert (await peak_stats(rentahal_stub))["peak_in_flight"] == 1


async def test_a_circuit_opened_on_one_broker_is_open_on_every_broker(
    tmp_path: Path, rentahal_stub: StubServer, fresh_pg_url: str
) -> None:
    """A worker fails the jobs one broker sends it until its circuit opens there: the other
    broker stops sending it jobs too, at once, rather than failing its own first."""
    await rentahal_stub.reset()
    await rentahal_stub.configure(fail_status=500)
    key = await create_sysop(tmp_path, database_url=fresh_pg_url)
    env = cluster_env(fresh_pg_url) | {
        "RENTAHAL_HEALTH_CHECK_INTERVAL": "60",  # no check half-opens it meanwhile
        "RENTAHAL_CIRCUIT_FAILURES": "2",
        "RENTAHAL_MAX_ATTEMPTS": "1",
    }
    async with AsyncExitStack() as stack:
        a, b = await start_brokers(stack, tmp_path, env, 2)
        await Realm(a, key).add_worker("w1", rentahal_stub)

        async def circuit_on_b(state: str) -> bool:
            async with httpx.AsyncClient(base_url=b.url) as http:
                listed = await http.get(
                    "/api/v1/workers", headers={"Authorization": f"Bearer {key}"}
                )
            return [(w["name"], w["circuit"]) for w in listed.json()] == [("w1", state)]

        await eventually(lambda: circuit_on_b("closed"), within=5.0)
        bus = await stack.enter_async_context(a.bus(api_key=key))
        await greeted(bus)
        assert b.pid is not None
        os.kill(b.pid, signal.SIGSTOP)  # so that a runs (and sees fail) every job
        try:
            for n in range(2):
                failed = await bus.request({"type": "chat", "prompt": f"fails {n}"})
                await bus.expect(
                    "error", lambda m, q=failed["query_id"]: m.get("query_id") == q, within=10
                )
        finally:
            os.kill(b.pid, signal.SIGCONT)
        await eventually(lambda: circuit_on_b("open"), within=3.0)


async def test_an_outbound_worker_on_one_broker_serves_queries_asked_of_another(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    """A worker behind NAT keeps a socket open to broker A only. A user on broker B asks
    for answers: B accepts them, A runs them from the shared line through the socket, and
    B's checks leave the worker alone (B cannot reach it; A vouches for it)."""
    key = await create_sysop(tmp_path, database_url=fresh_pg_url)
    env = cluster_env(fresh_pg_url) | {"RENTAHAL_WORKER_HEARTBEAT_INTERVAL": "0.3"}
    async with AsyncExitStack() as stack:
        a, b = await start_brokers(stack, tmp_path, env, 2)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=a.url, headers=headers) as http:
            made = await http.post("/api/v1/keys", json={"name": "rig", "scopes": ["worker"]})
        args = ("--engine", "echo", "--name", "behind-nat", "--broker", a.url)
        worker = WorkerProcess(
            "chat", *args, outbound=True, env={"RENTAHAL_WORKER_TOKEN": made.json()["key"]}
        )
        await stack.enter_async_context(worker)

        async def listed_on_b() -> bool:
            return await worker_names(b, key) == ["behind-nat"]

        await eventually(listed_on_b, within=20)
        user = await stack.enter_async_context(b.bus(cookie=await b.guest_cookie()))
        await greeted(user)
        for n in range(3):
            accepted = await user.request({"type": "chat", "prompt": f"via a {n}"})
            assert accepted["type"] == "query_accepted", accepted
        for n in range(3):
            result = await user.expect(
                "query_result", lambda m, n=n: m["result"] == f"echo: via a {n}", 20
            )
            assert result["worker"] == "behind-nat"
        async with httpx.AsyncClient(base_url=b.url, headers=headers) as http:
            (seen_on_b,) = (await http.get("/api/v1/workers")).json()
        assert seen_on_b["health_score"] == 100 and not seen_on_b["is_blacklisted"]
