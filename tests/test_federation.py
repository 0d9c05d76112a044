"""Two installations federating (issue 17, SPEC §12): each a real broker with its own store,
talking over real HTTP with peer keys their sysops issued."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from tests.conftest import FAST_ENV, Realm, create_sysop


@dataclass
class Installation:
    broker: BrokerProcess
    sysop_key: str

    def http(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or self.sysop_key}"}
        return httpx.AsyncClient(base_url=self.broker.url, headers=headers, timeout=30)

    async def issue_peer_key(self, name: str) -> str:
        async with self.http() as http:
            made = await http.post("/api/v1/keys", json={"name": name, "scopes": ["federation"]})
        assert made.status_code == 201, made.text
        return str(made.json()["key"])

    async def add_peer(self, name: str, other: Installation, key: str) -> dict[str, Any]:
        async with self.http() as http:
            added = await http.post(
                "/api/v1/federation/peers",
                json={"name": name, "url": other.broker.url, "key": key},
            )
        assert added.status_code == 201, added.text
        peer: dict[str, Any] = added.json()
        return peer

    async def credits(self, user_id: str) -> dict[str, Any]:
        async with self.http() as http:
            response = await http.get(f"/api/v1/users/{user_id}/credits")
        assert response.status_code == 200, response.text
        credit: dict[str, Any] = response.json()
        return credit

    async def account_named(self, nickname: str) -> str:
        async with self.http() as http:
            users = (await http.get("/api/v1/users")).json()
        return next(u["guid"] for u in users if u["nickname"] == nickname)


@asynccontextmanager
async def installations(
    tmp_path: Path, **x_settings: str
) -> AsyncIterator[tuple[Installation, Installation]]:
    """Installations x (with `x_settings`, RENTAHAL_* variables) and y, each a broker on its
    own SQLite store, with a sysop."""
    async with AsyncExitStack() as stack:
        made = []
        for name, extra in (("x", x_settings), ("y", {})):
            data = tmp_path / name
            key = await create_sysop(data)
            env = FAST_ENV | {"RENTAHAL_FEDERATION_ID": name} | extra
            broker = BrokerProcess(data, env=env)
            await stack.enter_async_context(broker)
            made.append(Installation(broker, key))
        yield made[0], made[1]


@pytest_asyncio.fixture(loop_scope="session")
async def two(tmp_path: Path) -> AsyncIterator[tuple[Installation, Installation]]:
    async with installations(tmp_path) as (x, y):
        yield x, y


async def test_an_imagine_query_x_cannot_serve_is_run_by_peer_y(
    two: tuple[Installation, Installation],
) -> None:
    """y has a Stable Diffusion worker, x none. y's sysop issues x a peer key; x's sysop
    adds y. A user of x asks for an image: y runs it as x's account there, the image comes
    back to the user as if x had made it (its worker shown as the peer), and both ledgers
    record it: y charged x's account, x credited y's."""
    x, y = two
    async with StubServer("a1111", models=["sd15"]) as painter:
        await Realm(y.broker, y.sysop_key).add_worker(
            "painter", painter, type="imagine", models=["sd15"]
        )
        key = await y.issue_peer_key("peer-x")
        peer = await x.add_peer("y", y, key)
        assert peer["reachable"] and "imagine" in peer["query_types"], peer
        async with x.http() as http:
            assert [p["name"] for p in (await http.get("/api/v1/federation/peers")).json()] == ["y"]

        async with x.broker.bus(cookie=await x.broker.guest_cookie()) as user:
            await user.expect("user_info")
            query = {"query_type": "imagine", "prompt": "a lighthouse at dusk"}
            await user.send({"type": "submit_query", "query": query})
            result = await user.expect("query_result", within=20)
        assert result["result_type"] == "image" and len(result["result"]) > 100
        assert result["worker"] == "y/painter"  # the peer, and its worker that served it
        painted = [r["json"] for r in await painter.requests() if r["method"] == "POST"]
        assert [p["prompt"] for p in painted] == ["a lighthouse at dusk"]

    y_account = await y.account_named("peer-x")
    charged = await y.credits(y_account)
    assert charged["balance"] < 0 and charged["entries"][0]["kind"] == "query", charged
    owed = await x.credits(peer["account_id"])
    assert owed["balance"] > 0 and owed["entries"][0]["worker_name"] == "y", owed


async def test_two_peers_that_both_lack_a_capability_answer_no_worker_at_once(
    two: tuple[Installation, Installation],
) -> None:
    """x and y are each other's peers and neither can chat: a chat query is refused
    `no_worker` at once on both sides, never passed back and forth."""
    x, y = two
    await x.add_peer("y", y, await y.issue_peer_key("peer-x"))
    await y.add_peer("x", x, await x.issue_peer_key("peer-y"))
    for installation in (x, y):
        async with installation.broker.bus(cookie=await installation.broker.guest_cookie()) as bus:
            await bus.expect("user_info")
            started = time.monotonic()
            refused = await bus.request({"type": "chat", "prompt": "anyone?"})
            assert refused["type"] == "error" and refused["code"] == "no_worker", refused
            assert time.monotonic() - started < 2


async def test_a_query_back_at_an_installation_it_came_through_is_refused(
    two: tuple[Installation, Installation],
) -> None:
    """`/route` with this installation in the hop list is a loop: 508, nothing queued."""
    _, y = two
    key = await y.issue_peer_key("peer-x")
    body = {"type": "chat", "prompt": "hi", "hops": ["x", "y"], "deadline": time.time() + 30}
    async with y.http(key) as http:
        looped = await http.post("/api/v1/federation/route", json=body)
        assert looped.status_code == 508, looped.text
        assert looped.json()["detail"]["code"] == "loop_detected"
        too_far = await http.post(
            "/api/v1/federation/route",
            json=body | {"hops": ["a", "b", "c", "d"]},  # over federation_max_hops (3)
        )
        assert too_far.status_code == 508, too_far.text
        late = await http.post(
            "/api/v1/federation/route", json=body | {"hops": ["x"], "deadline": time.time() - 1}
        )
        assert late.status_code == 504, late.text


@pytest.mark.parametrize("who", ["nobody", "user", "sysop", "worker token"])
async def test_the_federation_routes_want_a_peer_key(
    two: tuple[Installation, Installation], who: str
) -> None:
    """No key: 401. A user's key, a sysop's own key, a worker token: 403."""
    _, y = two
    headers: dict[str, str] = {}
    async with y.http() as http:
        if who == "user":
            cookie = await y.broker.guest_cookie()
            made = await http.post(
                "/api/v1/keys",
                json={"name": "mine", "scopes": ["chat"]},
                headers={"Authorization": "", "Cookie": f"rentahal_session={cookie}"}
                | {"Origin": y.broker.url},
            )
            assert made.status_code == 201, made.text
            headers = {"Authorization": f"Bearer {made.json()['key']}"}
        elif who == "sysop":
            headers = {"Authorization": f"Bearer {y.sysop_key}"}
        elif who == "worker token":
            made = await http.post("/api/v1/keys", json={"name": "w", "scopes": ["worker"]})
            headers = {"Authorization": f"Bearer {made.json()['key']}"}
    async with httpx.AsyncClient(base_url=y.broker.url) as http:
        for method, path in (("GET", "advertise"), ("POST", "route")):
            response = await http.request(
                method, f"/api/v1/federation/{path}", headers=headers, json={}
            )
            expected = 401 if who == "nobody" else 403
            assert response.status_code == expected, (who, path, response.text)


async def test_a_peer_key_is_good_for_the_federation_routes_only(
    two: tuple[Installation, Installation],
) -> None:
    """Only a sysop issues one; it cannot ask anything else of the REST API or open the
    bus; a user cannot add peers."""
    _, y = two
    key = await y.issue_peer_key("peer-x")
    async with y.http(key) as http:
        assert (await http.get("/api/v1/federation/advertise")).status_code == 200
        assert (await http.get("/api/v1/me")).status_code == 403
        assert (await http.get("/api/v1/workers")).status_code == 403
        chat = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}
        assert (await http.post("/v1/chat/completions", json=chat)).status_code in (401, 403)
    with pytest.raises(Exception, match="401"):
        async with y.broker.bus(api_key=key) as bus:
            await bus.expect("user_info", within=2)
    cookie = await y.broker.guest_cookie()
    async with httpx.AsyncClient(base_url=y.broker.url) as http:
        as_guest = {"Cookie": f"rentahal_session={cookie}", "Origin": y.broker.url}
        refused = await http.post(
            "/api/v1/keys", json={"name": "sneaky", "scopes": ["federation"]}, headers=as_guest
        )
        assert refused.status_code == 403, refused.text
        added = await http.post(
            "/api/v1/federation/peers",
            json={"name": "z", "url": "http://127.0.0.1:9", "key": "k" * 20},
            headers=as_guest,
        )
        assert added.status_code == 403, added.text


async def test_a_peer_key_is_named_for_its_peer_and_nobody_else_may_take_such_a_name(
    two: tuple[Installation, Installation],
) -> None:
    _, y = two
    async with y.http() as http:
        for name in ("x", "peer-", "peer-a b"):
            made = await http.post("/api/v1/keys", json={"name": name, "scopes": ["federation"]})
            assert made.status_code == 422, (name, made.text)
        mixed = await http.post(
            "/api/v1/keys", json={"name": "peer-x", "scopes": ["federation", "chat"]}
        )
        assert mixed.status_code == 422, mixed.text
        cookie = await y.broker.guest_cookie()
        as_guest = {"Authorization": "", "Cookie": f"rentahal_session={cookie}"}
        taken = await http.post(
            "/api/v1/account",
            json={"nickname": "peer-z", "password": "correct horse battery"},
            headers=as_guest | {"Origin": y.broker.url},
        )
        assert taken.status_code == 409, taken.text


async def test_a_query_that_waited_too_long_here_goes_to_a_peer(tmp_path: Path) -> None:
    """x has a chat worker of its own, busy for a while; with `federation_forward_after`
    0.5 s, a second query that has waited that long is answered by y's worker instead."""
    async with (
        installations(tmp_path, RENTAHAL_FEDERATION_FORWARD_AFTER="0.5") as (x, y),
        StubServer("rentahal") as slow,
        StubServer("rentahal") as quick,
    ):
        await slow.configure(latency=5)
        await Realm(x.broker, x.sysop_key).add_worker("slow", slow, max_concurrency=1)
        await Realm(y.broker, y.sysop_key).add_worker("quick", quick)
        await x.add_peer("y", y, await y.issue_peer_key("peer-x"))
        async with x.broker.bus(cookie=await x.broker.guest_cookie()) as user:
            await user.expect("user_info")
            first = await user.request({"type": "chat", "prompt": "first"})
            second = await user.request({"type": "chat", "prompt": "second"})
            result = await user.expect("query_result", within=15)
        assert result["query_id"] == second["query_id"] != first["query_id"]
        assert result["worker"] == "y/quick"


async def test_a_forwarded_query_sent_again_is_not_run_again(
    two: tuple[Installation, Installation],
) -> None:
    """The same `/route` call twice at once, and once more after, with one idempotency key
    (x's broker died mid-forward and another took the job over): y runs it once and answers
    all three with that run's outcome."""
    _, y = two
    async with StubServer("rentahal") as stub:
        await stub.configure(latency=1.0)
        await Realm(y.broker, y.sysop_key).add_worker("w", stub)
        key = await y.issue_peer_key("peer-x")
        body = {"type": "chat", "prompt": "once", "hops": ["x"], "deadline": time.time() + 30}
        headers = {"Idempotency-Key": "q123.0"}
        async with y.http(key) as http:

            async def forward() -> dict[str, Any]:
                response = await http.post("/api/v1/federation/route", json=body, headers=headers)
                assert response.status_code == 200, response.text
                outcome: dict[str, Any] = response.json()
                return outcome

            outcomes = await asyncio.gather(forward(), forward())
            outcomes.append(await forward())
        assert {o["query_id"] for o in outcomes} == {outcomes[0]["query_id"]}
        assert [o["result"] for o in outcomes] == ["echo: once"] * 3
        # At most the repeat's own attempt was started and cut off; one run completed.
        runs = [r["outcome"] for r in await stub.requests() if r["path"] == "/predict"]
        assert runs.count("completed") == 1, runs


async def test_peers_named_in_the_config_are_added_at_start(tmp_path: Path) -> None:
    """`federation_peers` (a secret: it holds their keys) adds the peers the store does not
    have when the broker starts; they are asked what they serve at once."""
    async with AsyncExitStack() as stack:
        y_data = tmp_path / "y"
        y = Installation(
            BrokerProcess(y_data, env=FAST_ENV | {"RENTAHAL_FEDERATION_ID": "y"}),
            await create_sysop(y_data),
        )
        await stack.enter_async_context(y.broker)
        async with StubServer("rentahal") as stub:
            await Realm(y.broker, y.sysop_key).add_worker("w", stub)
            key = await y.issue_peer_key("peer-x")
            peers = json.dumps([{"name": "y", "url": y.broker.url, "key": key}])
            x_data = tmp_path / "x"
            x = Installation(
                BrokerProcess(x_data, env=FAST_ENV | {"RENTAHAL_FEDERATION_PEERS": peers}),
                await create_sysop(x_data),
            )
            await stack.enter_async_context(x.broker)
            async with x.http() as http:
                (peer,) = (await http.get("/api/v1/federation/peers")).json()
            assert (peer["name"], peer["reachable"], peer["query_types"]) == ("y", True, ["chat"])
            assert key not in x.broker.output  # the key is never logged
