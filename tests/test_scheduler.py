"""The scheduler against a real broker process and real stub workers (SPEC §4, §5): fair turns
and priority classes, worker slots, retries on another worker, passive health and the circuit
breaker, a worker or the broker dying mid-job, cancellation reaching the worker, and the
queue's limits and errors.

Timing is observed, never slept: tests wait on bus events, on the stubs' request logs (each
entry has an ``outcome``: ``None`` while in flight, then ``completed`` or ``disconnected``) and
on their counters.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import Realm, create_sysop

Message = dict[str, Any]


# --- fixtures and helpers ------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub_x() -> AsyncIterator[StubServer]:
    async with StubServer("rentahal") as stub:
        yield stub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub_y() -> AsyncIterator[StubServer]:
    async with StubServer("rentahal") as stub:
        yield stub


async def fresh(stub: StubServer, **behaviour: Any) -> None:
    """Reset the stub once the previous test's broker has hung up on it, then configure it."""
    await stub.reset()

    async def idle() -> bool:
        return (await stub.stats())["in_flight"] == 0

    await eventually(idle, within=10)
    await stub.reset()  # counters (and peak_in_flight) from zero, with nothing in flight
    if behaviour:
        await stub.configure(**behaviour)


async def peak_stats(stub: StubServer) -> dict[str, int]:
    """The stub's counters including ``peak_in_flight`` (opt-in: ``/_stub/stats?peak=1``)."""
    async with httpx.AsyncClient(base_url=stub.url, timeout=5.0, trust_env=False) as http:
        response = await http.get("/_stub/stats", params={"peak": 1})
    response.raise_for_status()
    stats: dict[str, int] = response.json()
    return stats


async def inference_calls(stub: StubServer) -> list[Message]:
    """The `/predict` calls the stub received, in arrival order (health probes left out)."""
    return [r for r in await stub.requests() if r["method"] == "POST"]


async def prompts(stub: StubServer) -> list[str]:
    return [r["json"]["prompt"] for r in await inference_calls(stub)]


async def running(stub: StubServer) -> list[str]:
    """Prompts of the inference calls the stub is answering right now."""
    return [r["json"]["prompt"] for r in await inference_calls(stub) if r["outcome"] is None]


async def wait_running(stub: StubServer, expected: list[str], within: float = 10.0) -> None:
    async def there() -> bool:
        return await running(stub) == expected

    await eventually(there, within=within)


def chat(prompt: str, model_name: str = "") -> Message:
    return {
        "type": "submit_query",
        "query": {
            "prompt": prompt,
            "query_type": "chat",
            "model_type": "worker_node",
            "model_name": model_name,
        },
    }


async def submit(bus: BusClient, prompt: str, model_name: str = "") -> Message:
    reply = await bus.request(chat(prompt, model_name))
    assert reply["type"] == "query_accepted", (prompt, reply)
    return reply


async def refused(bus: BusClient, prompt: str, code: str, model_name: str = "") -> Message:
    reply = await bus.request(chat(prompt, model_name))
    assert reply["type"] == "error" and reply["code"] == code, (prompt, reply)
    return reply


async def results(bus: BusClient, ids: Iterable[str], within: float = 15.0) -> dict[str, Message]:
    """Wait for each query's `query_result` (in any order of arrival)."""
    got: dict[str, Message] = {}
    for query_id in ids:

        def this_one(message: Message, wanted: str = query_id) -> bool:
            return bool(message["query_id"] == wanted)

        got[query_id] = await bus.expect("query_result", this_one, within=within)
    return got


async def failure(bus: BusClient, query_id: str, within: float = 10.0) -> Message:
    """The `error` that ends a query (carrying its query_id)."""
    return await bus.expect("error", lambda m: m.get("query_id") == query_id, within=within)


async def worker_health(sysop: BusClient) -> dict[str, Message]:
    """The workers as the sysop sees them now (`get_stats` sends a fresh `worker_health`)."""
    sysop.inbox.clear()
    reply = await sysop.request({"type": "get_stats"})
    assert reply["type"] == "system_stats", reply
    latest = [m for m in sysop.inbox if m["type"] == "worker_health"][-1]
    return {view["name"]: view for view in latest["data"]}


def statuses(bus: BusClient, query_id: str) -> list[tuple[str, str | None]]:
    return [
        (m["state"], m["worker"])
        for m in bus.seen
        if m["type"] == "query_status" and m["query_id"] == query_id
    ]


def finished_on(bus: BusClient, query_id: str) -> str | None:
    """The worker named by the query's `done` status (None if it never got there)."""
    done = [worker for state, worker in statuses(bus, query_id) if state == "done"]
    return done[-1] if done else None


# --- fairness and priority -----------------------------------------------------------------


async def test_round_robin_between_users_and_sysop_priority(
    realm: Realm, stub_x: StubServer
) -> None:
    await fresh(stub_x, latency=0.3)
    await realm.add_worker("w", stub_x, max_concurrency=1)
    broker = realm.broker

    # Alice queues six jobs, then Bob one: Bob waits for at most one more of Alice's.
    async with (
        broker.bus(cookie=await broker.guest_cookie()) as alice,
        broker.bus(cookie=await broker.guest_cookie()) as bob,
    ):
        await alice.expect("user_info")
        await bob.expect("user_info")
        accepted = [await submit(alice, f"a{i}") for i in range(6)]
        bobs = await submit(bob, "b0")
        await results(alice, [a["query_id"] for a in accepted])
        await results(bob, [bobs["query_id"]])

    queued_positions = [a["position"] for a in accepted[1:]]  # a0 went straight to the worker
    assert queued_positions == sorted(set(queued_positions)), queued_positions
    assert bobs["position"] == 2, bobs  # one of Alice's turns, then his
    calls = await inference_calls(stub_x)
    order = [c["json"]["prompt"] for c in calls]
    assert sorted(order) == [*(f"a{i}" for i in range(6)), "b0"], order  # each ran once
    # Bob waited for one of Alice's queued jobs at most: a0 was at the worker already (its
    # request may reach the stub after Bob is accepted, so the stub's clock cannot tell).
    assert order[: order.index("b0")] in (["a0"], ["a0", "a1"]), order

    # A guest's jobs wait; the sysop's job, submitted last, runs next.
    await fresh(stub_x, latency=0.6)
    async with (
        broker.bus(cookie=await broker.guest_cookie()) as guest,
        broker.bus(api_key=realm.sysop_key) as sysop,
    ):
        await guest.expect("user_info")
        await sysop.expect("user_info")
        guests = [await submit(guest, f"g{i}") for i in range(3)]
        await wait_running(stub_x, ["g0"])
        sysops = await submit(sysop, "s0")
        assert sysops["position"] == 1, sysops
        await results(guest, [g["query_id"] for g in guests])
        await results(sysop, [sysops["query_id"]])
    assert await prompts(stub_x) == ["g0", "s0", "g1", "g2"]


# --- slots ---------------------------------------------------------------------------------


async def test_slots_are_respected_and_every_worker_is_used(
    realm: Realm, stub_x: StubServer, stub_y: StubServer
) -> None:
    latency = 0.5
    for stub in (stub_x, stub_y):
        await fresh(stub, latency=latency)
    await realm.add_worker("x", stub_x, max_concurrency=2)
    await realm.add_worker("y", stub_y, max_concurrency=2)
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as bus:
        await bus.expect("user_info")
        started = time.monotonic()
        ids = [(await submit(bus, f"job{i}"))["query_id"] for i in range(10)]
        done = await results(bus, ids)
        elapsed = time.monotonic() - started

    assert {r["result"] for r in done.values()} == {f"echo: job{i}" for i in range(10)}
    assert {finished_on(bus, query_id) for query_id in ids} == {"x", "y"}
    for stub in (stub_x, stub_y):
        stats = await peak_stats(stub)
        assert 1 <= stats["peak_in_flight"] <= 2, stats
    assert len(await prompts(stub_x)) + len(await prompts(stub_y)) == 10
    # 10 jobs on 4 slots are 3 rounds of 0.5 s; one worker alone would need 5 rounds.
    assert elapsed < 2.5, f"10 jobs took {elapsed:.2f} s on 4 slots"


# --- retries, passive health, circuit breaker ----------------------------------------------


async def test_failed_attempt_is_retried_on_another_worker(
    realm: Realm, stub_x: StubServer, stub_y: StubServer
) -> None:
    await fresh(stub_x, fail_status=500)
    await fresh(stub_y)
    await realm.add_worker("x", stub_x)  # first of two equally healthy, idle workers: chosen first
    await realm.add_worker("y", stub_y)
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as bus:
        await bus.expect("user_info")
        ids = [(await submit(bus, f"r{i}"))["query_id"] for i in range(4)]
        done = await results(bus, ids)
        by_prompt = {r["result"].removeprefix("echo: "): r for r in done.values()}

    assert {finished_on(bus, query_id) for query_id in ids} == {"y"}
    at_x, at_y = await prompts(stub_x), await prompts(stub_y)
    assert at_x, "no job tried the failing worker: the test proves nothing"
    assert len(at_x) == len(set(at_x)), f"a job went back to the failing worker: {at_x}"
    assert sorted(at_y) == [f"r{i}" for i in range(4)]
    retried = by_prompt[at_x[0]]["query_id"]
    states = statuses(bus, retried)
    assert states[0] == ("dispatched", "x"), states
    assert ("queued", None) in states and states[-1] == ("done", "y"), states
    # The result itself names the worker that produced it.
    assert {r["worker"] for r in done.values()} == {"y"}, list(done.values())


async def test_hung_worker_times_out_then_passive_health_and_circuit_breaker(
    tmp_path: Path, stub_x: StubServer, stub_y: StubServer
) -> None:
    # Health checks every 30 s: none runs during the test, so every change is passive.
    env = {"RENTAHAL_HEALTH_CHECK_INTERVAL": "30", "RENTAHAL_QUERY_TIMEOUT": "1"}
    key = await create_sysop(tmp_path)
    await fresh(stub_x, latency=60)
    await fresh(stub_y, latency=0.5)
    async with BrokerProcess(tmp_path, env=env) as broker:
        realm = Realm(broker, key)
        await realm.add_worker("x", stub_x, max_concurrency=2)
        await realm.add_worker("y", stub_y, max_concurrency=2)
        async with (
            broker.bus(api_key=key) as sysop,
            broker.bus(cookie=await broker.guest_cookie()) as user,
        ):
            await sysop.expect("user_info")
            await user.expect("user_info")

            # x hangs: its attempts time out after 1 s and the jobs finish on y.
            ids = [(await submit(user, f"h{i}"))["query_id"] for i in range(4)]
            await results(user, ids)
            assert {finished_on(user, query_id) for query_id in ids} == {"y"}
            hung = await prompts(stub_x)
            assert hung and len(hung) == len(set(hung)), hung
            assert sorted(await prompts(stub_y)) == [f"h{i}" for i in range(4)]

            async def x_hung_up_on() -> bool:
                stats = await stub_x.stats()
                return stats["disconnected"] == len(hung) and stats["in_flight"] == 0

            await eventually(x_hung_up_on, within=5)
            workers = await worker_health(sysop)
            assert workers["x"]["health_score"] == 100 - 5 * len(hung), workers["x"]
            assert workers["y"]["health_score"] == 100, workers["y"]

            # x answers again: a success closes its circuit (consecutive failures back to 0).
            await stub_x.configure(latency=0)
            pinned = await submit(user, "to x", model_name="x")
            await results(user, [pinned["query_id"]])
            assert finished_on(user, pinned["query_id"]) == "x"
            score = (await worker_health(sysop))["x"]["health_score"]

            # Now x fails every call: each failure costs 10 at once; the 5th opens the circuit.
            await stub_x.configure(fail_status=500)
            for attempt in range(1, 6):
                accepted = await submit(user, f"fail{attempt}", model_name="x")
                assert (await failure(user, accepted["query_id"]))["code"] == "worker_error"
                view = (await worker_health(sysop))["x"]
                assert view["health_score"] == score - 10 * attempt, (attempt, view)
                assert view["circuit"] == ("open" if attempt == 5 else "closed"), (attempt, view)
                assert not view["is_blacklisted"]

            # While open, x (alive, idle) gets nothing, even with y's two slots full.
            calls_at_x = len(await inference_calls(stub_x))
            await stub_y.reset()
            await stub_y.configure(latency=0.5)
            ids = [(await submit(user, f"c{i}"))["query_id"] for i in range(5)]
            await results(user, ids)
            assert {finished_on(user, query_id) for query_id in ids} == {"y"}
            assert len(await inference_calls(stub_x)) == calls_at_x
            assert (await peak_stats(stub_y))["peak_in_flight"] == 2  # jobs did wait for y
            assert (await worker_health(sysop))["x"]["circuit"] == "open"


# --- dying workers and brokers -------------------------------------------------------------


async def test_worker_killed_mid_job_loses_no_job(realm: Realm, stub_y: StubServer) -> None:
    await fresh(stub_y)
    async with StubServer("rentahal", latency=30) as doomed:
        await realm.add_worker("x", doomed)  # first of two equal workers: chosen first
        await realm.add_worker("y", stub_y)
        async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as bus:
            await bus.expect("user_info")
            query_id = (await submit(bus, "survive"))["query_id"]
            await wait_running(doomed, ["survive"])
            await doomed.kill()
            result = (await results(bus, [query_id]))[query_id]
    assert result["result"] == "echo: survive"
    states = statuses(bus, query_id)
    assert states[0] == ("dispatched", "x") and states[-1] == ("done", "y"), states
    assert await prompts(stub_y) == ["survive"]
    assert result["worker"] == "y", result


async def test_broker_sigkill_every_result_exactly_once(
    tmp_path: Path, stub_x: StubServer, database_env: dict[str, str]
) -> None:
    await fresh(stub_x, latency=1.0)
    key = await create_sysop(tmp_path, database_url=database_env.get("RENTAHAL_DATABASE_URL"))
    broker = BrokerProcess(tmp_path, env=database_env)
    await broker.start()
    try:
        await Realm(broker, key).add_worker("w", stub_x, max_concurrency=1)
        cookie = await broker.guest_cookie()
        async with broker.bus(cookie=cookie) as first:
            await first.expect("user_info")
            ids = [(await submit(first, f"k{i}"))["query_id"] for i in range(3)]
            await wait_running(stub_x, ["k0"])  # k0 at the worker, k1 and k2 queued
            await broker.kill()
    finally:
        await broker.stop()

    async with BrokerProcess(tmp_path, env=database_env) as restarted:
        async with restarted.bus(cookie=cookie) as second:
            done = await results(second, ids, within=20)
            assert (await second.request({"type": "ping"}))["type"] == "pong"
        async with restarted.bus(cookie=cookie) as third:
            await third.expect("user_info")
            # Missed results are sent during the greeting, before any reply to a request.
            assert (await third.request({"type": "ping"}))["type"] == "pong"

    delivered = Counter(
        m["query_id"]
        for bus in (first, second, third)
        for m in bus.seen
        if m["type"] == "query_result"
    )
    assert delivered == Counter(ids), delivered
    assert {r["result"] for r in done.values()} == {"echo: k0", "echo: k1", "echo: k2"}
    calls = [(c["json"]["prompt"], c["outcome"]) for c in await inference_calls(stub_x)]
    assert Counter(p for p, _ in calls) == {"k0": 2, "k1": 1, "k2": 1}, calls
    assert calls[0] == ("k0", "disconnected"), calls  # the attempt the SIGKILL interrupted
    completed = Counter(p for p, outcome in calls if outcome == "completed")
    assert completed == {"k0": 1, "k1": 1, "k2": 1}, calls


# --- cancellation --------------------------------------------------------------------------


async def test_cancellation_reaches_the_worker(realm: Realm, stub_x: StubServer) -> None:
    await fresh(stub_x, latency=30)
    await realm.add_worker("w", stub_x, max_concurrency=1)
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as bus:
        await bus.expect("user_info")
        running_id = (await submit(bus, "running"))["query_id"]
        queued_id = (await submit(bus, "queued"))["query_id"]
        await wait_running(stub_x, ["running"])

        await bus.send({"type": "cancel_query", "query_id": queued_id})
        assert (await failure(bus, queued_id))["code"] == "cancelled"
        assert (await stub_x.stats())["disconnected"] == 0

        await stub_x.configure(latency=0)  # for what runs next; "running" keeps its 30 s
        await bus.send({"type": "cancel_query", "query_id": running_id})
        assert (await failure(bus, running_id))["code"] == "cancelled"

        async def worker_saw_disconnect() -> bool:
            return (await stub_x.stats())["disconnected"] == 1

        await eventually(worker_saw_disconnect, within=3)
        # The slot is free again: the next job runs at once, and the cancelled one never did.
        after_id = (await submit(bus, "after"))["query_id"]
        await results(bus, [after_id])
    calls = [(c["json"]["prompt"], c["outcome"]) for c in await inference_calls(stub_x)]
    assert calls == [("running", "disconnected"), ("after", "completed")]
    assert statuses(bus, queued_id) == [("cancelled", None)]


# --- limits and errors ---------------------------------------------------------------------


async def test_queue_limits_expiry_and_no_worker(tmp_path: Path, stub_x: StubServer) -> None:
    env = {
        "RENTAHAL_MAX_QUEUE_SIZE": "5",
        "RENTAHAL_MAX_QUEUED_PER_USER": "2",
        "RENTAHAL_QUEUE_TIMEOUT": "2",
        "RENTAHAL_HEALTH_CHECK_INTERVAL": "0.1",
    }
    await fresh(stub_x, latency=30)
    key = await create_sysop(tmp_path)
    async with BrokerProcess(tmp_path, env=env) as broker:
        await Realm(broker, key).add_worker("w", stub_x, max_concurrency=1)
        async with (
            broker.bus(api_key=key) as sysop,
            broker.bus(cookie=await broker.guest_cookie()) as alice,
            broker.bus(cookie=await broker.guest_cookie()) as bob,
        ):
            for bus in (sysop, alice, bob):
                await bus.expect("user_info")

            # Alice: one job running, two waiting (positions grow), a third is over her limit.
            a1 = await submit(alice, "a1")
            waiting = [await submit(alice, "a2"), await submit(alice, "a3")]
            assert [a["position"] for a in waiting] == [1, 2], waiting
            await refused(alice, "a4", "user_limit")
            # The sysop is exempt from the per-user limit: three waiting jobs of theirs.
            sysops = [await submit(sysop, f"s{i}") for i in range(3)]
            assert [s["position"] for s in sysops] == [1, 2, 3], sysops
            # Five jobs wait in the $CHAT realm: it is full.
            await refused(bob, "b1", "queue_full")

            # Waiting longer than queue_timeout expires them; the running job is untouched.
            for bus, accepted in [(alice, waiting), (sysop, sysops)]:
                for query in accepted:
                    error = await failure(bus, query["query_id"], within=6)
                    assert error["code"] == "expired", error
            assert await running(stub_x) == ["a1"]
            assert not any(
                m.get("query_id") == a1["query_id"] for m in alice.seen if m["type"] == "error"
            )
            b2 = await submit(bob, "b2")  # room in the queue again
            await bob.send({"type": "cancel_query", "query_id": b2["query_id"]})
            assert (await failure(bob, b2["query_id"]))["code"] == "cancelled"

            # The only worker blacklisted (health checks see 503): refused at submit.
            await stub_x.configure(health_status=503)
            await sysop.expect(
                "sysop_message",
                lambda m: m["message"] == "Worker w blacklisted due to health score 0",
                within=10,
            )
            await refused(bob, "b3", "no_worker")

            # Readmitted, then removed: refused again.
            await stub_x.configure(health_status=200)
            await sysop.expect(
                "sysop_message", lambda m: "Worker w readmitted" in m["message"], within=10
            )
            view = (await worker_health(sysop))["w"]
            assert not view["is_blacklisted"] and view["health_score"] > 0, view
            reply = await sysop.request({"type": "remove_worker", "worker_name": "w"})
            assert reply["type"] == "ok", reply
            await refused(bob, "b4", "no_worker")
    assert "b1" not in await prompts(stub_x)
