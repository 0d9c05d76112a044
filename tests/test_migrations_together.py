"""Brokers started together on one new PostgreSQL database (a cluster coming up, issue 17):
one of them migrates the schema, the others wait for it, and all of them serve."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from rentahal.testing.broker import BrokerProcess
from tests.conftest import FAST_ENV

BROKERS = 6


async def test_brokers_starting_together_migrate_once_and_all_serve(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    env = FAST_ENV | {"RENTAHAL_DATABASE_URL": fresh_pg_url}
    brokers = [BrokerProcess(tmp_path / f"broker{n}", env=env) for n in range(BROKERS)]
    async with AsyncExitStack() as stack:
        started = await asyncio.gather(
            *(stack.enter_async_context(broker) for broker in brokers), return_exceptions=True
        )
        failed = [str(outcome) for outcome in started if isinstance(outcome, BaseException)]
        assert not failed, "brokers that did not start:\n" + "\n".join(failed)
        for broker in brokers:
            async with httpx.AsyncClient(base_url=broker.url) as http:
                ready = await http.get("/readyz")
            assert ready.status_code == 200, broker.output
