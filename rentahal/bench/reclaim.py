"""The cluster's take-over benchmark: a broker SIGKILLed with jobs at a worker and jobs
waiting; how long until another broker has finished every one, and whether any was lost or
run twice.

One run:

1. starts a broker of a cluster: a new PostgreSQL database, a Redis namespace of the run's
   own, a lease of L seconds;
2. starts one stub worker with c slots that answers after `latency`;
3. a guest submits N jobs. Up to c reach the worker at once, and the rest wait in the
   shared line;
4. once c are at the worker, a second broker of the cluster starts, and the first is
   SIGKILLed;
5. the guest reconnects to the second broker and waits for every result.

The jobs the dead broker had at the worker can only run again once its lease has lapsed and
the second broker has taken them over (the worker slots it held lapse with the lease too).
Their results come that long after the kill, plus the worker's latency. The report gives:

- the take-over: the seconds from the kill until those jobs were sent to the worker again;
- the seconds from the kill to the first and to the last result;
- the lease, beside them;
- how many jobs never came back (must be 0);
- how many times the worker completed each job (must be 1: an attempt cut off by the kill
  is not a completion).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from rentahal.bench.console import note
from rentahal.bench.provenance import measured_now, this_machine
from rentahal.bench.realm import BenchBroker, BenchmarkError, bench_brokers, limits_out_of_the_way
from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually

DEFAULT_LEASE = 10.0  # the product's own `cluster_lease`
QUICK_LEASE = 2.0
PROMPT = "reclaim job {}"


@dataclass(frozen=True)
class ReclaimParams:
    """By default the product's lease (10 s), 16 jobs, a worker with 4 slots answering in
    2 s; `quick`: a 2 s lease (a smoke run, figures not judged)."""

    database_url: str
    redis_url: str
    lease: float = DEFAULT_LEASE
    jobs: int = 16
    concurrency: int = 4
    latency: float = 2.0
    quick: bool = False

    def __post_init__(self) -> None:
        if self.jobs < self.concurrency:
            raise ValueError("jobs must be at least the worker's slots (some must be running)")
        if self.lease < 1 or self.latency <= 0:
            raise ValueError("the lease is at least 1 s and the latency positive")

    def broker_env(self) -> dict[str, str]:
        return limits_out_of_the_way(1) | {"RENTAHAL_CLUSTER_LEASE": str(self.lease)}


@dataclass(frozen=True)
class ReclaimReport:
    params: ReclaimParams
    first_result: float  # seconds from the kill
    last_result: float
    # Seconds from the kill until the jobs the dead broker had at the worker were sent to it
    # again (their first result, less the worker's latency).
    takeover: float
    lost: int  # jobs whose result never came
    completions: dict[str, int]  # per job: how often the worker completed it
    measured_at: str = field(default_factory=measured_now)
    machine: str = field(default_factory=this_machine)

    @property
    def run_twice(self) -> int:
        return sum(1 for count in self.completions.values() if count > 1)

    @property
    def missing(self) -> bool:
        return self.lost > 0 or self.run_twice > 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] |= {"database_url": "(hidden)", "redis_url": "(hidden)"}
        return data | {"run_twice": self.run_twice}


async def run_reclaim(params: ReclaimParams, *, console: Console | None = None) -> ReclaimReport:
    async with AsyncExitStack() as stack:
        note(console, f"starting a broker (lease {params.lease:g} s) and a stub worker")
        (doomed,) = await stack.enter_async_context(
            bench_brokers(
                params.broker_env(),
                postgres_server_url=params.database_url,
                redis_url=params.redis_url,
            )
        )
        stub = await stack.enter_async_context(StubServer("rentahal", latency=params.latency))
        await doomed.add_workers([stub], max_concurrency=params.concurrency)
        cookie = await doomed.process.guest_cookie()
        first_bus = await stack.enter_async_context(doomed.process.bus(cookie=cookie))
        await first_bus.expect("user_info")
        prompts: dict[str, str] = {}  # query id → its prompt
        for n in range(params.jobs):
            accepted = await first_bus.request({"type": "chat", "prompt": PROMPT.format(n)})
            if accepted.get("type") != "query_accepted":
                raise BenchmarkError(f"the broker refused job {n}: {accepted}")
            prompts[accepted["query_id"]] = PROMPT.format(n)

        async def worker_full() -> bool:
            return (await stub.stats())["in_flight"] >= params.concurrency

        await eventually(worker_full, within=30)
        # The second broker joins now, so every job at the worker is the first one's.
        note(console, "starting a second broker of the cluster")
        data = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rentahal-bench-"))
        stack.callback(shutil.rmtree, data, ignore_errors=True)
        survivor = BenchBroker(BrokerProcess(data, env=doomed.process.env), doomed.sysop_key)
        await stack.enter_async_context(survivor.process)
        await survivor.wait_for_workers(1)
        at_worker = {str(r["json"]["prompt"]) for r in await stub.requests() if _running(r)}
        note(console, f"{len(at_worker)} jobs at the worker: SIGKILL the first broker")
        await doomed.process.kill()
        killed = time.monotonic()
        finished = {m["query_id"] for m in first_bus.inbox if m.get("type") == "query_result"}
        arrived: dict[str, float] = {}  # query id → seconds from the kill
        deadline = params.lease * 3 + params.jobs * params.latency / params.concurrency + 30
        async with survivor.process.bus(cookie=cookie) as bus:
            try:
                while len(finished | set(arrived)) < params.jobs:
                    left = deadline - (time.monotonic() - killed)
                    result = await bus.expect("query_result", within=max(0.1, left))
                    arrived.setdefault(result["query_id"], time.monotonic() - killed)
            except TimeoutError:
                pass
        completions = Counter(
            str(r["json"]["prompt"])
            for r in await stub.requests()
            if r["path"] == "/predict" and r["outcome"] == "completed"
        )
    taken_over = [t for q, t in arrived.items() if prompts.get(q) in at_worker]
    return ReclaimReport(
        params=params,
        first_result=min(arrived.values(), default=math.nan),
        last_result=max(arrived.values(), default=math.nan),
        # Those jobs were run again from nothing: what came before is the take-over.
        takeover=min(taken_over, default=math.nan) - params.latency,
        lost=params.jobs - len(finished | set(arrived)),
        completions={p: completions[p] for p in map(PROMPT.format, range(params.jobs))},
    )


def _running(request: dict[str, Any]) -> bool:
    return request["path"] == "/predict" and request["outcome"] is None
