"""The broker's PostgreSQL stops under load and comes back: nothing accepted is lost, nothing
runs twice, every refusal says why, and the log tells the operator what happened once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm, create_sysop
from tests.pg_server import PrivatePostgres

IN_FLIGHT = 6


class Load:
    """Submits a chat query every few milliseconds and keeps what each submission got."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.answers: list[tuple[str, int, dict[str, Any]]] = []
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            prompt = f"load {n}"
            n += 1
            response = await self.http.post(
                "/api/v1/queries", json={"query_type": "chat", "prompt": prompt}
            )
            self.answers.append((prompt, response.status_code, response.json()))
            await asyncio.sleep(0.05)

    def refused(self) -> list[tuple[str, int, dict[str, Any]]]:
        return [a for a in self.answers if a[1] != 202]

    def accepted(self) -> dict[str, str]:
        return {prompt: body["query_id"] for prompt, code, body in self.answers if code == 202}


async def test_a_store_outage_loses_nothing_runs_nothing_twice_and_is_explained(
    tmp_path: Path,
) -> None:
    async with PrivatePostgres() as pg, StubServer("openai", models=["m1"]) as stub:
        await stub.configure(latency=1.0)
        key = await create_sysop(tmp_path, database_url=pg.url)
        env = FAST_ENV | {"RENTAHAL_DATABASE_URL": pg.url}
        async with BrokerProcess(tmp_path, env=env) as broker:
            await Realm(broker, key).add_worker("w1", stub, type="chat", max_concurrency=8)
            headers = {"Authorization": f"Bearer {key}"}
            async with (
                httpx.AsyncClient(base_url=broker.url, headers=headers, timeout=30) as http,
                broker.bus(api_key=key) as bus,
            ):
                before = [
                    (
                        await http.post(
                            "/api/v1/queries", json={"query_type": "chat", "prompt": f"before {i}"}
                        )
                    ).json()["query_id"]
                    for i in range(IN_FLIGHT)
                ]

                # Clients already waiting for an answer that arrives during the outage.
                waiting_v1 = asyncio.create_task(
                    http.post(
                        "/v1/chat/completions",
                        json={"model": "m1", "messages": [{"role": "user", "content": "v1 wait"}]},
                    )
                )
                waiting_rest = asyncio.create_task(
                    http.post(
                        "/api/v1/queries",
                        params={"wait": 30},
                        json={"query_type": "chat", "prompt": "rest wait"},
                    )
                )

                async def at_the_worker() -> bool:
                    return (await stub.stats())["in_flight"] >= IN_FLIGHT + 2

                await eventually(at_the_worker)
                load = Load(http)
                loading = asyncio.create_task(load.run())
                visitor = await broker.guest_cookie()  # a browser that loaded the page
                await pg.stop()

                async def finished_at_the_worker() -> bool:
                    return (await stub.stats())["completed"] >= IN_FLIGHT + 2

                # The workers finish their jobs while the store is away.
                await eventually(finished_at_the_worker)

                refused = await http.post(
                    "/api/v1/queries", json={"query_type": "chat", "prompt": "refused rest"}
                )
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "5"
                assert refused.json()["detail"]["code"] == "unavailable"

                openai = await http.post(
                    "/v1/chat/completions",
                    json={"model": "m1", "messages": [{"role": "user", "content": "refused v1"}]},
                )
                assert openai.status_code == 503, openai.text
                assert openai.headers["retry-after"] == "5"
                assert openai.json()["error"]["code"] == "unavailable"
                assert openai.json()["error"]["type"] == "server_error"

                on_bus = await bus.request({"type": "chat", "prompt": "refused bus"})
                assert (on_bus["type"], on_bus["code"]) == ("error", "unavailable")
                assert on_bus["retry_after"] == 5.0

                # A new socket whose session only the store can vouch for is refused at the
                # handshake, with why. (An API key in use before the outage is known without
                # the store: see the credential cache.)
                with pytest.raises(InvalidStatus) as handshake:
                    async with broker.bus(cookie=visitor):
                        pass
                assert handshake.value.response.status_code == 503
                assert json.loads(handshake.value.response.body)["code"] == "unavailable"

                ready = await http.get("/readyz")
                assert (ready.status_code, ready.json()) == (
                    503,
                    {"ready": False, "store": "unavailable"},
                )

                await pg.start()

                async def ready_again() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await eventually(ready_again, within=15)
                # The same socket is still usable once the store is back.
                again = await bus.request({"type": "chat", "prompt": "after, on the bus"})
                assert again["type"] == "query_accepted", again
                await bus.expect(
                    "query_result", lambda m: m["query_id"] == again["query_id"], within=15
                )
                load.stopped.set()
                await loading

                # They get their answers, not an error for a job that ran.
                v1, rest = await waiting_v1, await waiting_rest
                assert v1.status_code == 200, v1.text
                assert v1.json()["choices"][0]["message"]["content"] == "echo: v1 wait"
                assert rest.status_code == 202, rest.text
                assert rest.json()["query"]["result"] == "echo: rest wait"
                accepted = {f"before {i}": query_id for i, query_id in enumerate(before)}
                accepted |= {"rest wait": rest.json()["query_id"]}
                accepted |= load.accepted()
                for prompt, query_id in accepted.items():
                    view = await http.get(f"/api/v1/queries/{query_id}", params={"wait": 15})
                    assert view.json()["state"] == "done", (prompt, view.json())
        output = broker.output
        requests = [r for r in await stub.requests() if r["method"] == "POST"]

    # Every refusal during the outage was the typed 503, never a 500 or a dropped connection.
    assert load.refused(), "the load never met the outage"
    for prompt, code, body in load.refused():
        assert (code, body["detail"]["code"]) == (503, "unavailable"), (prompt, code, body)
    # Each accepted query ran exactly once; nothing refused ran at all.
    completed = Counter(_prompt(r) for r in requests if r["outcome"] == "completed")
    assert {p: completed[p] for p in accepted} == dict.fromkeys(accepted, 1)
    assert not {p for p, *_ in load.refused()} & set(completed)
    assert not {"refused rest", "refused v1", "refused bus"} & set(completed)
    # The operator reads one warning when it stopped and one when it came back.
    assert "Traceback" not in output, output[-4000:]
    assert output.count("store.unavailable") == 1, output[-4000:]
    assert output.count("store.recovered") == 1, output[-4000:]


def _prompt(request: dict[str, Any]) -> str:
    return str(request["json"]["messages"][-1]["content"])
