"""Workers joining a realm by themselves: worker tokens, REST registration with heartbeats,
and outbound workers that take jobs over a socket they opened (SPEC §5, §6)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from rentahal.testing.broker import BrokerProcess, base_env
from rentahal.testing.process import StubServer, free_port
from rentahal.testing.waiting import eventually
from rentahal.testing.worker import WorkerProcess
from tests.conftest import FAST_ENV, create_sysop

JOIN_ENV = FAST_ENV | {
    "RENTAHAL_WORKER_HEARTBEAT_INTERVAL": "0.3",
    "RENTAHAL_TUNNEL_RECONNECT_GRACE": "2",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class JoinRealm:
    def __init__(self, broker: BrokerProcess, sysop_key: str, other_sysop_key: str) -> None:
        self.broker = broker
        self.sysop_key = sysop_key
        self.other_sysop_key = other_sysop_key

    async def worker_token(self, key: str | None = None) -> str:
        async with httpx.AsyncClient(base_url=self.broker.url) as http:
            made = await http.post(
                "/api/v1/keys",
                json={"name": "rig", "scopes": ["worker"]},
                headers=bearer(key or self.sysop_key),
            )
            assert made.status_code == 201, made.text
            return str(made.json()["key"])

    async def workers(self) -> dict[str, dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.broker.url) as http:
            listed = await http.get("/api/v1/workers", headers=bearer(self.sysop_key))
            listed.raise_for_status()
            return {w["name"]: w for w in listed.json()}

    async def chat(self, prompt: str, model_name: str = "") -> dict[str, Any]:
        """The query's final event (or the refusal at submit)."""
        query = {"prompt": prompt, "query_type": "chat", "model_name": model_name}
        async with self.broker.bus(api_key=self.sysop_key) as bus:
            accepted = await bus.request({"type": "submit_query", "query": query})
            if accepted["type"] != "query_accepted":
                return accepted
            return await bus.expect(
                where=lambda m: (
                    m.get("query_id") == accepted["query_id"]
                    and m["type"] in ("query_result", "error")
                ),
                within=20,
            )


@pytest_asyncio.fixture(loop_scope="session")
async def join_realm(tmp_path: Path) -> AsyncIterator[JoinRealm]:
    key = await create_sysop(tmp_path)
    other = await create_sysop(tmp_path, "dave")
    async with BrokerProcess(tmp_path, env=JOIN_ENV) as broker:
        yield JoinRealm(broker, key, other)
    print(f"--- broker output ---\n{broker.output}")


def echo_worker(
    realm: JoinRealm, token: str, name: str, *, outbound: bool = False
) -> WorkerProcess:
    return WorkerProcess(
        "chat",
        "--engine",
        "echo",
        "--name",
        name,
        "--broker",
        realm.broker.url,
        outbound=outbound,
        env={"RENTAHAL_WORKER_TOKEN": token},
    )


async def test_only_a_sysop_issues_worker_tokens_and_they_grant_nothing_else(
    join_realm: JoinRealm,
) -> None:
    token = await join_realm.worker_token()
    async with httpx.AsyncClient(base_url=join_realm.broker.url) as http:
        # A full-scope key of a user who is not a sysop cannot make one.
        cookie = await join_realm.broker.guest_cookie()
        guest = {"Cookie": f"rentahal_session={cookie}", "Origin": join_realm.broker.url}
        refused = await http.post("/api/v1/keys", json={"scopes": ["worker"]}, headers=guest)
        assert refused.status_code == 403
        mixed = await http.post(
            "/api/v1/keys",
            json={"scopes": ["worker", "chat"]},
            headers=bearer(join_realm.sysop_key),
        )
        assert mixed.status_code == 422
        # A worker token is no sysop key, however it was made.
        assert (await http.get("/api/v1/workers", headers=bearer(token))).status_code == 403
        # And a sysop's full key is not a worker token.
        register = await http.post(
            "/api/v1/workers/register",
            json={"name": "w", "role": "chat", "key": "k" * 20, "address": "http://127.0.0.1:9"},
            headers=bearer(join_realm.sysop_key),
        )
        assert register.status_code == 403
    async with join_realm.broker.bus(api_key=token) as bus:
        chat = await bus.request({"type": "chat", "prompt": "hello"})
        assert chat["type"] == "error" and chat["code"] == "forbidden"


async def test_a_registered_worker_serves_the_realm_and_leaves_when_stopped(
    join_realm: JoinRealm,
) -> None:
    token = await join_realm.worker_token()
    worker = echo_worker(join_realm, token, "echo-1")
    async with worker:

        async def listed() -> bool:
            return "echo-1" in await join_realm.workers()

        await eventually(listed)
        view = (await join_realm.workers())["echo-1"]
        assert view["address"] == worker.url and view["capabilities"] == ["chat"]
        assert view["models"] == ["echo"]
        result = await join_realm.chat("hello over REST")
        assert result["type"] == "query_result" and result["result"] == "echo: hello over REST"
        assert result["worker"] == "echo-1"
        # The worker takes jobs only from the broker it joined: it holds the key.
        async with httpx.AsyncClient() as http:
            direct = await http.post(f"{worker.url}/predict", json={"prompt": "sneak"})
            assert direct.status_code == 401
    assert worker.returncode == 0, worker.output

    async def gone() -> bool:
        return "echo-1" not in await join_realm.workers()

    await eventually(gone)


async def test_a_killed_worker_loses_health_and_is_blacklisted(join_realm: JoinRealm) -> None:
    token = await join_realm.worker_token()
    worker = echo_worker(join_realm, token, "doomed")
    await worker.start()
    try:

        async def healthy() -> bool:
            view = (await join_realm.workers()).get("doomed")
            return view is not None and view["health_score"] == 100

        await eventually(healthy)
    finally:
        await worker.kill()

    async def blacklisted() -> bool:
        view = (await join_realm.workers())["doomed"]
        return bool(view["is_blacklisted"]) and view["health_score"] == 0

    await eventually(blacklisted, within=20)


async def run_to_exit(*args: str, token: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rentahal",
        "worker",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=base_env() | {"RENTAHAL_WORKER_TOKEN": token},
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.mark.parametrize("outbound", [False, True])
async def test_a_worker_with_a_bad_token_is_refused(join_realm: JoinRealm, outbound: bool) -> None:
    args = ["--role", "chat", "--engine", "echo", "--broker", join_realm.broker.url]
    args += ["--outbound"] if outbound else ["--port", str(free_port())]
    status, output = await run_to_exit(*args, token="rah_not-a-real-token")
    assert status == 3, output
    assert "refused" in output
    assert await join_realm.workers() == {}


async def test_a_worker_name_belongs_to_its_first_owner(join_realm: JoinRealm) -> None:
    mine = await join_realm.worker_token()
    theirs = await join_realm.worker_token(join_realm.other_sysop_key)
    body = {"name": "rig-7", "role": "chat", "key": "k" * 24, "address": "http://127.0.0.1:9"}
    async with httpx.AsyncClient(base_url=join_realm.broker.url) as http:
        first = await http.post("/api/v1/workers/register", json=body, headers=bearer(mine))
        assert first.status_code == 201, first.text
        assert first.json()["heartbeat_interval"] == 0.3
        again = await http.post("/api/v1/workers/register", json=body, headers=bearer(mine))
        assert again.status_code == 201  # the owner may replace their registration
        taken = await http.post("/api/v1/workers/register", json=body, headers=bearer(theirs))
        assert taken.status_code == 409
        beat = await http.post(
            "/api/v1/workers/rig-7/heartbeat", json={"slots": 2}, headers=bearer(theirs)
        )
        assert beat.status_code == 404
        leave = await http.delete("/api/v1/workers/rig-7/registration", headers=bearer(theirs))
        assert leave.status_code == 404
        bad = await http.post(
            "/api/v1/workers/register", json=body | {"address": "ftp://x"}, headers=bearer(mine)
        )
        assert bad.status_code == 422
    assert "rig-7" in await join_realm.workers()


async def test_an_outbound_worker_with_no_open_port_serves_jobs(join_realm: JoinRealm) -> None:
    token = await join_realm.worker_token()
    worker = echo_worker(join_realm, token, "behind-nat", outbound=True)
    async with worker:
        assert worker.port is None

        async def healthy() -> bool:
            view = (await join_realm.workers()).get("behind-nat")
            return view is not None and view["health_score"] == 100

        await eventually(healthy, within=20)
        assert (await join_realm.workers())["behind-nat"]["address"] == "tunnel://behind-nat"
        results = await asyncio.gather(
            *(join_realm.chat(f"through the tunnel {i}") for i in range(3))
        )
        assert sorted(r["result"] for r in results) == [
            f"echo: through the tunnel {i}" for i in range(3)
        ]
        assert {r["worker"] for r in results} == {"behind-nat"}
    assert worker.returncode == 0, worker.output

    async def gone() -> bool:
        return "behind-nat" not in await join_realm.workers()

    await eventually(gone)


async def test_workers_rejoin_after_the_broker_restarts(tmp_path: Path) -> None:
    key = await create_sysop(tmp_path)
    broker = BrokerProcess(tmp_path, env=JOIN_ENV)
    await broker.start()
    realm = JoinRealm(broker, key, key)
    token = await realm.worker_token()
    workers = [
        echo_worker(realm, token, "rest-rig"),
        echo_worker(realm, token, "nat-rig", outbound=True),
    ]
    try:
        for worker in workers:
            await worker.start()
        await broker.stop()
        await broker.start()
        # The broker keeps no worker's key across a restart: the REST worker's next heartbeat
        # is told to register again, and the outbound worker reconnects with backoff.
        for name in ("rest-rig", "nat-rig"):

            async def serves(name: str = name) -> bool:
                result = await realm.chat(f"after the restart, {name}", model_name=name)
                return result.get("worker") == name

            await eventually(serves, within=30, every=0.5)
    finally:
        for worker in workers:
            await worker.stop()
        await broker.stop()


@pytest.mark.parametrize("outbound", [False, True], ids=["inbound", "outbound"])
async def test_a_proxy_puts_an_ollama_server_in_the_realm(
    join_realm: JoinRealm, ollama_stub: StubServer, outbound: bool
) -> None:
    await ollama_stub.reset()
    token = await join_realm.worker_token()
    name = f"ollama-{'nat' if outbound else 'lan'}"
    proxy = WorkerProcess(
        "proxy",
        "--upstream",
        ollama_stub.url,
        "--upstream-kind",
        "ollama",
        "--name",
        name,
        "--broker",
        join_realm.broker.url,
        outbound=outbound,
        env={"RENTAHAL_WORKER_TOKEN": token},
    )
    async with proxy:

        async def healthy() -> bool:
            view = (await join_realm.workers()).get(name)
            return view is not None and view["health_score"] == 100

        await eventually(healthy, within=20)
        view = (await join_realm.workers())[name]
        # The broker speaks Ollama's protocol through the proxy, and sees Ollama's models.
        assert view["kind"] == "ollama" and view["models"] == ["llama3:latest"]
        async with join_realm.broker.bus(api_key=join_realm.sysop_key) as bus:
            accepted = await bus.request(
                {
                    "type": "submit_query",
                    "query": {"prompt": "stream me", "query_type": "chat", "model_name": name},
                }
            )
            result = await bus.expect(
                "query_result", lambda m: m["query_id"] == accepted["query_id"], within=20
            )
            chunks = [
                m["delta"]
                for m in bus.seen
                if m.get("type") == "query_chunk" and m["query_id"] == accepted["query_id"]
            ]
        assert result["result"] == "echo: stream me" and result["worker"] == name
        assert len(chunks) > 1 and "".join(chunks) == result["result"]  # streamed through
        chats = [r for r in await ollama_stub.requests() if r["path"] == "/api/chat"]
        assert len(chats) == 1 and chats[0]["json"]["model"] == "llama3:latest"
        # The broker's key for the proxy stops at the proxy.
        assert "authorization" not in chats[0]["headers"]
        if not outbound:
            async with httpx.AsyncClient() as http:
                sneak = await http.get(f"{proxy.url}/api/tags")
                assert sneak.status_code == 401
                own = await http.get(f"{proxy.url}/_worker/health")
                assert own.json()["load"]["served"] >= 2  # health probes and the chat
