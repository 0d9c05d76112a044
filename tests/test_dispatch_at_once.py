"""A query that need not wait is dispatched as it is accepted: its row is inserted with the
attempt already recorded (one write), before the worker hears of it; a query that must wait
goes through the line as before, its attempt written while the worker works. The broker runs in
this test's process, so the test can read the store while the worker holds the request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

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


async def test_a_waiting_query_reaches_its_worker_while_its_attempt_is_written(
    tmp_path: Path, rentahal_stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker hears of a job from the line without waiting for the attempt's commit, and
    its slot is free again as soon as it has answered; the outcome is recorded only after
    the attempt is."""
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=30)
    broker = Broker(load_settings(data_dir=tmp_path, health_check_interval=60))
    await broker.start()
    try:
        spec = WorkerSpec(
            name="w1",
            address=rentahal_stub.address,
            kind="rentahal",
            type="chat",
            max_concurrency=1,
        )
        await broker.catalog.add_worker(None, spec)
        worker = broker.registry.get("w1")
        assert worker is not None
        principal = Principal(await broker.store.users.create(role=Role.USER), "api_key")
        first, _ = await broker.queries.submit(
            principal, QuerySpec(prompt="first", query_type="chat")
        )
        second, _ = await broker.queries.submit(
            principal, QuerySpec(prompt="second", query_type="chat")
        )

        # The store's write of the attempt is held until the test lets it go.
        held = asyncio.Event()
        order: list[str] = []
        mark_dispatched, finish_done = (
            broker.store.queries.mark_dispatched,
            broker.store.queries.finish_done,
        )

        async def slow_attempt(*args: Any, **kwargs: Any) -> None:
            await held.wait()
            await mark_dispatched(*args, **kwargs)
            order.append("attempt")

        async def outcome(*args: Any, **kwargs: Any) -> Any:
            order.append("outcome")
            return await finish_done(*args, **kwargs)

        monkeypatch.setattr(broker.store.queries, "mark_dispatched", slow_attempt)
        monkeypatch.setattr(broker.store.queries, "finish_done", outcome)

        await rentahal_stub.configure(latency=0)
        assert await broker.scheduler.cancel(first.id, reason="enough")

        async def answered_and_slot_free() -> bool:
            requests = await rentahal_stub.requests()
            answered = [
                r["json"]["prompt"]
                for r in requests
                if r["path"] == "/predict" and r["outcome"] == "completed"
            ]
            return answered == ["second"] and worker.in_flight == 0

        await eventually(answered_and_slot_free)
        stored = await broker.store.queries.get(second.id)
        assert stored is not None
        assert stored.state != QueryState.DONE.value and stored.attempts == 0
        assert order == []

        held.set()
        done = await broker.queries.outcome(second.id, 20)
        assert (done.state, done.attempts) == (QueryState.DONE.value, 1)
        assert order == ["attempt", "outcome"]
    finally:
        await broker.stop()
