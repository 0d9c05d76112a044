"""A query that need not wait is dispatched as it is accepted: its row is inserted with the
attempt already recorded (one write), before the worker hears of it; a query that must wait
goes through the line as before. The broker runs in this test's process, so the test can read
the store while the worker holds the request."""

from __future__ import annotations

from pathlib import Path

from rentahal.auth import Principal
from rentahal.broker import Broker
from rentahal.config.settings import load_settings
from rentahal.core.specs import QuerySpec, WorkerSpec
from rentahal.store import QueryState, Role
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually


async def test_a_query_with_a_free_worker_is_recorded_dispatched_before_the_worker_hears_of_it(
    tmp_path: Path, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=30)
    broker = Broker(load_settings(data_dir=tmp_path, health_check_interval=60))
    await broker.start()
    try:
        address = rentahal_stub.address
        spec = WorkerSpec(
            name="w1", address=address, kind="rentahal", type="chat", max_concurrency=1
        )
        await broker.catalog.add_worker(None, spec)
        user = await broker.store.users.create(role=Role.USER)
        principal = Principal(user, "api_key")

        first, position = await broker.queries.submit(
            principal, QuerySpec(prompt="first", query_type="chat")
        )
        assert position == 1
        # Accepted already dispatched: the caller's object says so before anything else runs.
        assert (first.state, first.worker_name, first.attempts) == ("dispatched", "w1", 1)

        async def at_the_worker() -> bool:
            return (await rentahal_stub.stats())["in_flight"] == 1

        await eventually(at_the_worker)
        stored = await broker.store.queries.get(first.id)
        assert stored is not None
        assert (stored.state, stored.worker_name, stored.attempts) == ("dispatched", "w1", 1)
        assert stored.dispatched_at is not None

        # The worker's one slot is taken: the next query waits in line, its attempt not begun.
        second, position = await broker.queries.submit(
            principal, QuerySpec(prompt="second", query_type="chat")
        )
        assert position == 1
        stored = await broker.store.queries.get(second.id)
        assert stored is not None
        assert (stored.state, stored.worker_name, stored.attempts) == ("queued", None, 0)

        # Freed, the slot goes to the waiting query through the line: one attempt each.
        await rentahal_stub.configure(latency=0)
        assert await broker.scheduler.cancel(first.id, reason="enough")
        done = await broker.queries.outcome(second.id, 20)
        assert (done.state, done.attempts) == (QueryState.DONE.value, 1)
        requests = await rentahal_stub.requests()
        prompts = [r["json"]["prompt"] for r in requests if r["path"] == "/predict"]
        assert prompts == ["first", "second"]
    finally:
        await broker.stop()
