"""A throwaway broker for a benchmark: fresh store, a sysop key, stub workers registered.

Every benchmark run starts from an empty store (a new temporary data directory, or a new
PostgreSQL database created for the run and dropped after it), so figures never depend on
what an earlier run left behind, and a run never touches a store somebody cares about.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rentahal.config import Settings
from rentahal.store import Role, Store
from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer

HEALTH_CHECK_INTERVAL = 5.0
"""Seconds between a bench broker's health probes: frequent enough to be realistic, rare
enough that probes are not a noticeable part of the load."""

PLENTY = 1_000_000
"""A queue limit no benchmark reaches."""


class BenchmarkError(RuntimeError):
    """The benchmark could not produce trustworthy figures (setup failed, jobs were lost)."""


def limits_out_of_the_way(clients: int) -> dict[str, str]:
    """``RENTAHAL_*`` settings that take the broker's limits out of the way of a benchmark
    with up to ``clients`` connections open at once, so that it measures the broker's work,
    not its limits: every client comes from 127.0.0.1, and a user (a guest on the bus, or the
    one user whose API key makes the `/v1` queries) may have every job queued or running.

    Health probes every :data:`HEALTH_CHECK_INTERVAL` seconds; the queue wait allowed is an
    hour. Every bench that starts a broker for load passes these (and may add its own).
    """
    room = str(clients + 50)
    plenty = str(PLENTY)
    return {
        "RENTAHAL_HEALTH_CHECK_INTERVAL": str(HEALTH_CHECK_INTERVAL),
        "RENTAHAL_MAX_CONNECTIONS": room,
        "RENTAHAL_MAX_HTTP_CONNECTIONS": room,
        "RENTAHAL_MAX_CONNECTIONS_PER_IP": "0",
        "RENTAHAL_MAX_QUEUE_SIZE": plenty,
        "RENTAHAL_MAX_QUEUED_PER_USER": plenty,
        "RENTAHAL_MAX_RUNNING_PER_USER": plenty,
        "RENTAHAL_QUEUE_TIMEOUT": "3600",
        "RENTAHAL_QUERIES_PER_MINUTE_GUEST": "0",
        "RENTAHAL_QUERIES_PER_MINUTE_USER": "0",
        "RENTAHAL_QUERIES_PER_MINUTE_PREMIUM": "0",
        "RENTAHAL_QUERIES_PER_MINUTE_PER_KEY": "0",
        "RENTAHAL_QUERIES_PER_MINUTE_PER_IP": "0",
        "RENTAHAL_QUERIES_PER_DAY_GUEST": "0",
        "RENTAHAL_QUERIES_PER_DAY_USER": "0",
        "RENTAHAL_QUERIES_PER_DAY_PREMIUM": "0",
        "RENTAHAL_REGISTRATIONS_PER_HOUR_PER_IP": "0",
    }


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process from /proc (None where there is no /proc, or for
    no ``pid``).

    A read of procfs is served from kernel memory and never blocks on a disk, so it is
    fine to do in the event loop.
    """
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchBroker:
    """A running broker and the API key of its sysop."""

    process: BrokerProcess
    sysop_key: str

    async def add_workers(self, stubs: Sequence[StubServer], *, max_concurrency: int) -> None:
        """Register each stub as a `rentahal` chat worker named ``bench-<i>``, as a sysop
        does on the bus (the broker probes each one before it answers)."""
        async with self.process.bus(api_key=self.sysop_key) as sysop:
            for index, stub in enumerate(stubs, start=1):
                worker = {
                    "name": f"bench-{index}",
                    "address": stub.address,
                    "kind": stub.protocol,
                    "type": "chat",
                    "max_concurrency": max_concurrency,
                }
                reply = await sysop.request({"type": "add_worker", "worker": worker}, within=30)
                if reply.get("type") != "ok":
                    raise BenchmarkError(f"the broker refused worker {worker}: {reply}")

    async def wait_for_workers(self, count: int, within: float = 10.0) -> None:
        """Wait until this broker lists `count` live workers (another broker of its cluster
        added them)."""
        headers = {"Authorization": f"Bearer {self.sysop_key}"}
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.process.url, headers=headers) as http:
            while time.monotonic() < deadline:
                workers = (await http.get("/api/v1/workers")).json()
                if sum(1 for w in workers if w["health_score"] > 0) >= count:
                    return
                await asyncio.sleep(0.1)
        raise BenchmarkError(f"the broker at {self.process.url} did not see the workers")


def sqlite_url(data_dir: Path) -> str:
    """The SQLite store the broker would use in ``data_dir`` (absolute) by default.

    Computed here and passed to the broker explicitly, so the sysop created by the
    benchmark and the broker's store are the same whatever ``RENTAHAL_*`` variables the
    developer's shell holds.
    """
    name = Settings.model_fields["database_name"].default
    return f"sqlite+aiosqlite:///{data_dir / name}"


async def create_sysop(store_url: str, nickname: str = "benchsysop") -> str:
    """Make a sysop in the store (what `rentahal admin create-sysop` does) and return its
    API key; the benchmark needs one to register the stub workers."""
    store = await Store(store_url).open()
    try:
        user = await store.users.create(role=Role.SYSOP, nickname=nickname)
        return await store.credentials.create_api_key(user.id)
    finally:
        await store.close()


@asynccontextmanager
async def scratch_postgres(server_url: str) -> AsyncIterator[str]:
    """Create an empty database on the PostgreSQL server ``server_url`` names, yield its
    store URL, and drop it afterwards (even if the broker still holds connections).

    The database in ``server_url`` is only used to connect while creating and dropping;
    the role needs the CREATEDB privilege.
    """
    try:
        url = make_url(server_url)
    except ArgumentError as exc:
        raise BenchmarkError(f"--database-url is not a database URL: {exc}") from None
    if url.get_backend_name() != "postgresql":
        raise BenchmarkError(f"--database-url must be a postgresql:// URL, not {url.drivername}")
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"rentahal_bench_{secrets.token_hex(6)}"

    async def execute(sql: str) -> None:
        try:
            connection = await asyncpg.connect(admin_dsn, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            shown = url.render_as_string(hide_password=True)
            raise BenchmarkError(
                f"cannot reach PostgreSQL at {shown}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    await execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        await execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def bench_broker(
    env: Mapping[str, str], *, postgres_server_url: str | None = None
) -> AsyncIterator[BenchBroker]:
    """Run `rentahal serve` on a fresh store with a sysop; remove every trace afterwards.

    ``env`` holds ``RENTAHAL_*`` settings for the broker. With ``postgres_server_url`` the
    store is a new database on that server, otherwise SQLite in the temporary data dir.
    """
    async with bench_brokers(env, postgres_server_url=postgres_server_url) as (broker,):
        yield broker


@asynccontextmanager
async def bench_brokers(
    env: Mapping[str, str],
    *,
    count: int = 1,
    postgres_server_url: str | None = None,
    redis_url: str | None = None,
) -> AsyncIterator[Sequence[BenchBroker]]:
    """`bench_broker`, or with ``redis_url`` ``count`` brokers of one cluster: one new
    PostgreSQL database, one Redis namespace made for the run, one secret, one sysop."""
    if count > 1 and (redis_url is None or postgres_server_url is None):
        raise BenchmarkError("more than one broker needs --redis-url and --database postgresql")
    data_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rentahal-bench-"))
    try:
        async with (
            _store_url(data_dir, postgres_server_url) as store_url,
            AsyncExitStack() as stack,
        ):
            key = await create_sysop(store_url)
            broker_env = {**env, "RENTAHAL_DATABASE_URL": store_url}
            if redis_url is not None:
                broker_env |= {
                    "RENTAHAL_REDIS_URL": redis_url,
                    "RENTAHAL_CLUSTER_NAME": f"bench_{secrets.token_hex(6)}",
                    "RENTAHAL_SECRET_KEY": secrets.token_urlsafe(32),
                }
            processes = [BrokerProcess(data_dir / f"b{n}", env=broker_env) for n in range(count)]
            for process in processes:
                await stack.enter_async_context(process)
            yield [BenchBroker(process, key) for process in processes]
    finally:
        await asyncio.to_thread(shutil.rmtree, data_dir, ignore_errors=True)


@asynccontextmanager
async def _store_url(data_dir: Path, postgres_server_url: str | None) -> AsyncIterator[str]:
    if postgres_server_url is None:
        yield sqlite_url(data_dir)
        return
    async with scratch_postgres(postgres_server_url) as url:
        yield url
