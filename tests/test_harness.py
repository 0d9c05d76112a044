"""The test harness itself: brokers forked from the fork server behave as processes of their
own, and a traceback in a broker's output is found wherever its lines are cut."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx
import pytest

from rentahal.testing.broker import BrokerProcess, base_env, take_tracebacks
from rentahal.testing.forkserver import ForkServer
from rentahal.testing.process import ServerProcess

LOG = b"""2026-01-01T00:00:00Z [info     ] broker.started
2026-01-01T00:00:01Z [error    ] ws.handler_failed
Traceback (most recent call last):
  File "x.py", line 1, in f
    raise KeyError(1)
KeyError: 1

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "y.py", line 2, in g
ValueError: boom
2026-01-01T00:00:02Z [info     ] after
{"event": "json.log", "exception": "Traceback (most recent call last):\\n  File \\"z.py\\""}
2026-01-01T00:00:03Z [info     ] the end"""


@pytest.mark.allow_broker_tracebacks(reason="feeds made-up tracebacks to the scanner")
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_tracebacks_are_found_in_output_cut_anywhere(tmp_path: Path, size: int) -> None:
    take_tracebacks()
    broker = BrokerProcess(tmp_path)
    for start in range(0, len(LOG), size):
        broker._received(LOG[start : start + size])
    broker._received(b"")
    found = take_tracebacks()
    assert [t.head for t in found] == [
        "2026-01-01T00:00:01Z [error    ] ws.handler_failed\nValueError: boom",
        "2026-01-01T00:00:02Z [info     ] after\n" + LOG.decode().splitlines()[-2],
    ]
    assert "During handling" in found[0].text and "the end" not in found[1].text


async def test_a_forked_broker_is_a_process_of_its_own(tmp_path: Path) -> None:
    own = ServerProcess.fork_server is None  # the session's is off: this test makes its own
    if own:
        ServerProcess.fork_server = ForkServer(env=base_env())
    try:
        await _forked_brokers(tmp_path)
    finally:
        if own and ServerProcess.fork_server is not None:
            ServerProcess.fork_server.close()
            ServerProcess.fork_server = None


async def _forked_brokers(tmp_path: Path) -> None:
    server = ServerProcess.fork_server
    assert server is not None
    env = {"RENTAHAL_MAX_PROMPT_CHARS": "7"}
    assert server.can_run([sys.executable, "-m", "rentahal"], {**server.env, **env})
    assert not server.can_run(["rentahal", "serve"], server.env)
    assert not server.can_run([sys.executable, "-m", "rentahal"], {"PYTHONPATH": "/elsewhere"})
    first = BrokerProcess(tmp_path / "a", env=env)
    second = BrokerProcess(tmp_path / "b")
    async with first, second, httpx.AsyncClient() as http:
        assert first.pid != second.pid
        # Each reads its own environment: one refuses an 8-character prompt as too long, the
        # other looks for a worker to answer it.
        codes = []
        for broker in (first, second):
            async with broker.bus(cookie=await broker.guest_cookie()) as bus:
                reply = await bus.request({"type": "chat", "prompt": "8 chars!"})
                codes.append(reply.get("code"))
        assert codes[0] != codes[1] and codes[1] == "no_worker", codes
        assert (await http.get(f"{second.url}/readyz")).status_code == 200
        await second.kill()
        assert second.returncode == -signal.SIGKILL and not second.running
        assert (await http.get(f"{first.url}/readyz")).status_code == 200
    assert first.returncode is not None and "broker.stopped" in first.output


async def test_a_fork_server_refuses_nothing_it_cannot_run_and_cleans_up(tmp_path: Path) -> None:
    server = ForkServer(preload=["json"])
    try:
        child = await server.spawn(
            [sys.executable, "-m", "json.tool", "--help"], server.env, tmp_path
        )
        assert await child.wait() == 0
        assert child.stdout is not None and b"usage" in await child.stdout.read()
        with pytest.raises(ProcessLookupError):
            child.kill()
    finally:
        server.close()
