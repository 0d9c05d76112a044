"""A job cancelled in the instant between its dispatch and the first step of its task: the
broker runs in this test's process, so the test can cancel in that instant for certain."""

from __future__ import annotations

from pathlib import Path

from rentahal.auth import Principal
from rentahal.broker import Broker
from rentahal.config.settings import load_settings
from rentahal.core.specs import QuerySpec, WorkerSpec
from rentahal.store import QueryState, Role
from rentahal.testing.process import StubServer


async def test_a_job_cancelled_before_its_task_begins_ends_cancelled_and_frees_its_slot(
    tmp_path: Path, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    broker = Broker(load_settings(data_dir=tmp_path, health_check_interval=60))
    await broker.start()
    try:
        spec = WorkerSpec(name="w1", address=rentahal_stub.address, kind="rentahal", type="chat")
        await broker.catalog.add_worker(None, spec)
        user = await broker.store.users.create(role=Role.USER)
        # The worker is free, so the job is dispatched as it is accepted: its task is made,
        # and has not begun when the submit returns (nothing has awaited since).
        query, _ = await broker.queries.submit(
            Principal(user, "api_key"), QuerySpec(prompt="never sent", query_type="chat")
        )
        assert await broker.scheduler.cancel(query.id, reason="changed my mind")

        stored = await broker.store.queries.get(query.id)
        assert stored is not None and stored.state == QueryState.CANCELLED.value
        worker = broker.registry.get("w1")
        assert worker is not None and worker.in_flight == 0
        assert [r for r in await rentahal_stub.requests() if r["path"] == "/predict"] == []
    finally:
        await broker.stop()
