"""The health score rules, and the monitor applying them to real workers over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rentahal.broker import Broker
from rentahal.config.settings import load_settings
from rentahal.core.specs import WorkerSpec
from rentahal.routing.health import HealthChange, Probe, next_health
from rentahal.testing.broker import BusClient
from rentahal.testing.process import StubServer, free_port
from tests.conftest import Realm


@pytest.mark.parametrize(
    ("score", "blacklisted", "probe", "exempt", "expected"),
    [
        (50, False, Probe.OK, False, HealthChange(60, False)),
        (95, False, Probe.OK, False, HealthChange(100, False)),  # capped at 100
        (50, False, Probe.BAD_STATUS, False, HealthChange(40, False)),
        (50, False, Probe.ERROR, False, HealthChange(45, False)),
        (10, False, Probe.BAD_STATUS, False, HealthChange(0, True, "blacklisted")),
        (3, False, Probe.ERROR, False, HealthChange(0, True, "blacklisted")),  # floor at 0
        (10, False, Probe.BAD_STATUS, True, HealthChange(0, False)),  # NO_BLACKLIST_IMAGINE
        (0, True, Probe.BAD_STATUS, False, HealthChange(0, True)),  # stays out, no new event
        (0, True, Probe.OK, False, HealthChange(50, False, "readmitted")),  # back at 50
    ],
)
def test_next_health(
    score: float, blacklisted: bool, probe: Probe, exempt: bool, expected: HealthChange
) -> None:
    assert next_health(score, blacklisted, probe, exempt=exempt) == expected


Reading = tuple[float, bool]


async def _scores(
    sysop: BusClient, name: str, until: int, since: Reading | None = None
) -> list[Reading]:
    """Health readings of worker `name` from the sysop's worker_health events, in order,
    until `until` new ones have arrived (a reading equal to the one before, starting from
    `since`, is not new)."""
    readings: list[Reading] = []
    while len(readings) < until:
        event = await sysop.expect("worker_health", within=10)
        for worker in event["data"]:
            reading = (worker["health_score"], worker["is_blacklisted"])
            previous = readings[-1] if readings else since
            if worker["name"] == name and reading != previous:
                readings.append(reading)
    return readings


async def test_failing_worker_is_blacklisted_then_readmitted(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await realm.add_worker("flaky", rentahal_stub)
    guest = await realm.broker.guest_cookie()
    async with (
        realm.broker.bus(api_key=realm.sysop_key) as sysop,
        realm.broker.bus(cookie=guest) as user,
    ):
        await sysop.expect("worker_health")
        await rentahal_stub.configure(health_status=503)
        sysop.inbox.clear()
        readings = await _scores(sysop, "flaky", until=10, since=(100.0, False))
        assert [score for score, _ in readings] == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
        assert readings[-1] == (0, True)
        await sysop.expect(
            "sysop_message",
            lambda m: m["message"] == "Worker flaky blacklisted due to health score 0",
        )

        refused = await user.request({"type": "chat", "prompt": "anyone there?"})
        assert refused["type"] == "error" and refused["code"] == "no_worker"

        await rentahal_stub.configure(health_status=200)
        recovering = await _scores(sysop, "flaky", until=2, since=readings[-1])
        assert recovering == [(50, False), (60, False)]
        await sysop.expect("sysop_message", lambda m: "Worker flaky readmitted" in m["message"])

        accepted = await user.request({"type": "chat", "prompt": "back again?"})
        assert accepted["type"] == "query_accepted"
        result = await user.expect("query_result")
        assert result["result"] == "echo: back again?"


async def test_unreachable_worker_loses_five_per_check(realm: Realm) -> None:
    async with realm.broker.bus(api_key=realm.sysop_key) as sysop:
        reply = await sysop.request(
            {
                "type": "add_worker",
                "worker": {"name": "ghost", "address": f"127.0.0.1:{free_port()}", "type": "chat"},
            }
        )
        assert reply["type"] == "ok"
        readings = await _scores(sysop, "ghost", until=3)
        # The probe right after add_worker is the first −5.
        assert [score for score, _ in readings][:3] in ([95, 90, 85], [100, 95, 90])
        assert all(not blacklisted for _, blacklisted in readings)


async def test_a_worker_reports_its_own_capacity(realm: Realm, rentahal_stub: StubServer) -> None:
    """A RENT A HAL worker's `/health` may say how many jobs it runs at once (`load.slots`);
    that beats what the sysop guessed when adding it."""
    await rentahal_stub.reset()
    await rentahal_stub.configure(slots=7)
    await realm.add_worker("sized", rentahal_stub, max_concurrency=2)
    async with realm.broker.bus(api_key=realm.sysop_key) as sysop:
        event = await sysop.expect(
            "worker_health",
            lambda m: any(w["name"] == "sized" and w["max_concurrency"] == 7 for w in m["data"]),
        )
    assert [w["max_concurrency"] for w in event["data"] if w["name"] == "sized"] == [7]


async def test_a_worker_probed_twice_at_once_loses_health_once(tmp_path: Path) -> None:
    """A tick and the probe of a worker just added may meet: the second leaves the worker to
    the probe already out, so one unanswered check costs five, not ten."""
    broker = Broker(load_settings(data_dir=tmp_path))
    await broker.start()
    try:
        await broker.monitor.stop()  # no ticks of its own: the test makes the probes that meet
        spec = WorkerSpec(name="ghost", address=f"127.0.0.1:{free_port()}", type="chat")
        worker = await broker.catalog.add_worker(None, spec)
        assert worker.health_score == 95  # the probe on adding it
        await asyncio.gather(broker.monitor.check([worker]), broker.monitor.check([worker]))
        assert worker.health_score == 90
        await broker.monitor.check([worker])  # nothing out now: probed again
        assert worker.health_score == 85
    finally:
        await broker.stop()
