"""The bus protocol on `/ws` (SPEC §3): greetings, errors that keep the connection usable,
`id`/`response_to`, nicknames, queries (submit, cancel, concurrency, delivery on reconnect)
and the heartbeat. Everything runs against a real broker process and real stub workers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import Realm

SESSION = "rentahal_session"


def as_cookie(cookie: str) -> dict[str, str]:
    """Request headers that present `cookie` as the session (as a browser would)."""
    return {"Cookie": f"{SESSION}={cookie}"}


SYSOP_ONLY_GREETINGS = {"system_stats", "user_stats", "worker_health", "active_users"}


async def assert_alive(bus: BusClient) -> None:
    """The connection still answers: a `ping` request gets its `pong`."""
    reply = await bus.request({"type": "ping"})
    assert reply["type"] == "pong", reply
    assert not bus.closed.is_set()


def chat_query(prompt: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "submit_query",
        "query": {
            "prompt": prompt,
            "query_type": "chat",
            "model_type": "worker_node",
            "model_name": "",
        }
        | fields,
    }


async def submit(bus: BusClient, prompt: str) -> str:
    reply = await bus.request(chat_query(prompt))
    assert reply["type"] == "query_accepted", reply
    return str(reply["query_id"])


async def slow_stub(stub: StubServer, latency: float) -> None:
    await stub.reset()
    await stub.configure(latency=latency)


# --- greeting ------------------------------------------------------------------------------


async def test_guest_and_sysop_greetings(realm: Realm) -> None:
    cookie = await realm.broker.guest_cookie()
    async with realm.broker.bus(cookie=cookie) as guest:
        info = await guest.expect("user_info")
        # First the names the broker knows: the page offers these, not lists of its own.
        assert [m["type"] for m in guest.seen[:2]] == ["vocabulary", "user_info"]
        assert guest.seen[0] == {
            "type": "vocabulary",
            "query_types": ["chat", "vision", "imagine", "speech", "tts", "stt"],
            "worker_kinds": ["rentahal", "ollama", "openai", "a1111", "claude", "huggingface"],
            "strategies": [
                "auto",
                "health",
                "round_robin",
                "least_busy",
                "random",
                "fastest",
                "power_of_two",
            ],
            "roles": ["user", "premium", "sysop"],
        }
        assert re.fullmatch(r"user_[0-9a-f]{8}", info["data"]["nickname"]), info
        assert info["data"]["role"] == "guest"
        assert info["data"]["is_sysop"] is False
        assert re.fullmatch(r"[0-9a-f]{32}", info["data"]["guid"])
        assert (await guest.expect("previous_queries"))["data"] == []
        queue = await guest.expect("queue_update")
        assert queue["depth"] == 0 and queue["total"] == 0
        assert (await guest.expect("worker_update"))["workers"] == []
        assert isinstance((await guest.expect("huggingface_update"))["models"], list)
        await assert_alive(guest)
        # The greeting was sent before the pong, so nothing sysop-only is still on its way.
        assert SYSOP_ONLY_GREETINGS.isdisjoint(m["type"] for m in guest.seen)
        guest_guid = info["data"]["guid"]

    async with realm.broker.bus(api_key=realm.sysop_key) as sysop:
        info = await sysop.expect("user_info")
        assert info["data"]["role"] == "sysop" and info["data"]["is_sysop"] is True
        assert info["data"]["nickname"] == "hal"
        for kind in ("previous_queries", "queue_update", "worker_update", "huggingface_update"):
            await sysop.expect(kind)
        stats = await sysop.expect("system_stats")
        assert {"total_queries", "connected_users", "average_times"} <= stats["data"].keys()
        users = await sysop.expect("user_stats")
        guids = {u["guid"] for u in users["data"]}
        # A guest that only connected was never stored (guests are stored when they act).
        assert info["data"]["guid"] in guids and guest_guid not in guids
        assert isinstance((await sysop.expect("worker_health"))["data"], list)
        active = await sysop.expect("active_users")
        assert info["data"]["guid"] in active["users"]


# --- bad input -----------------------------------------------------------------------------


async def test_bad_frames_get_errors_and_the_connection_survives(realm: Realm) -> None:
    limit = 1_048_576  # max_message_size default
    cookie = await realm.broker.guest_cookie()
    async with (
        realm.broker.bus(cookie=cookie) as bus,
        realm.broker.bus(api_key=realm.sysop_key) as sysop,
    ):
        await bus.expect("user_info")
        await sysop.expect("user_info")

        async def refused(
            client: BusClient, frame: str | bytes, code: str, response_to: object = None
        ) -> dict[str, Any]:
            await client.send(frame)
            error = await client.expect("error")
            assert error["code"] == code, (frame[:100], error)
            assert error.get("response_to") == response_to, error
            await assert_alive(client)
            return error

        await refused(bus, "{not json", "malformed")
        await refused(bus, "[1, 2, 3]", "malformed")
        await refused(bus, '"just a string"', "malformed")
        await refused(bus, b"\xff\xfe\x00garbage", "malformed")
        await refused(bus, json.dumps({"type": "no_such_type", "id": "u1"}), "unknown_type", "u1")
        await refused(bus, json.dumps({"type": "no_such_type"}), "unknown_type")
        await refused(bus, json.dumps({"id": "m1", "prompt": "hi"}), "invalid", "m1")
        await refused(bus, json.dumps({"id": "m2", "type": 42}), "invalid", "m2")
        bogus = chat_query("hello", query_type="bogus") | {"id": "q1"}
        error = await refused(bus, json.dumps(bogus), "invalid", "q1")
        assert "query_type" in error["message"]
        await refused(bus, json.dumps({"type": "ping", "id": "x1", "extra": 1}), "invalid", "x1")
        not_hex = {"type": "ban_user", "id": "b1", "user_guid": "ZZ" * 16}
        await refused(sysop, json.dumps(not_hex), "invalid", "b1")
        await refused(sysop, json.dumps(not_hex | {"user_guid": "1; DROP TABLE"}), "invalid", "b1")

        # Sizes: exactly at the limit is parsed (and refused only for its unknown field);
        # one byte over is refused for its size.
        head = '{"type":"ping","id":"big","pad":"'
        at_limit = head + "x" * (limit - len(head) - 2) + '"}'
        assert len(at_limit) == limit
        await refused(bus, at_limit, "invalid", "big")
        over = head + "x" * (limit - len(head) - 1) + '"}'
        assert len(over) == limit + 1
        error = await refused(bus, over, "too_large")
        assert str(limit) in error["message"]
        await refused(bus, over.encode(), "too_large")

        # A binary frame holding valid JSON is a message like any other.
        await bus.send(json.dumps({"type": "ping", "id": "bin1"}).encode())
        assert (await bus.expect("pong", lambda m: m.get("response_to") == "bin1"))["type"]
        assert not any(m["type"] == "error" for m in bus.inbox)


async def test_frame_limit_counts_bytes_not_characters(realm: Realm) -> None:
    """`max_message_size` is a size in bytes (SPEC §15): a text frame with fewer characters
    than the limit but more UTF-8 bytes is over it, exactly like the same bytes sent binary."""
    limit = 1_048_576
    head = '{"type":"ping","id":"wide","pad":"'
    frame = head + "\u20ac" * (limit // 3 + 1) + '"}'  # 3 bytes a character in UTF-8
    assert len(frame) < limit < len(frame.encode())
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as bus:
        await bus.expect("user_info")
        await bus.send(frame.encode())
        assert (await bus.expect("error"))["code"] == "too_large"
        await bus.send(frame)
        error = await bus.expect("error")
        assert error["code"] == "too_large", error
        await assert_alive(bus)


async def test_id_is_echoed_as_response_to(realm: Realm) -> None:
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as bus:
        await bus.expect("user_info")
        for message_id in ("abc-1", 7, "x" * 128):
            await bus.send({"type": "ping", "id": message_id})
            pong = await bus.expect("pong", lambda m, i=message_id: m.get("response_to") == i)
            assert pong["response_to"] == message_id
        await bus.send({"type": "get_previous_queries", "id": "hist"})
        reply = await bus.expect(where=lambda m: m.get("response_to") == "hist")
        assert reply["type"] == "previous_queries"
        await bus.send({"type": "set_nickname", "id": 99, "nickname": "echo_me"})
        reply = await bus.expect(where=lambda m: m.get("response_to") == 99)
        assert reply["type"] == "user_info" and reply["data"]["nickname"] == "echo_me"
        # Without an id, a direct reply carries no response_to.
        await bus.send({"type": "ping"})
        assert "response_to" not in await bus.expect("pong")


# --- nicknames -----------------------------------------------------------------------------


async def test_set_nickname_rules(realm: Realm) -> None:
    broker = realm.broker
    alice_cookie, bob_cookie = await broker.guest_cookie(), await broker.guest_cookie()
    async with broker.bus(cookie=alice_cookie) as alice, broker.bus(cookie=bob_cookie) as bob:
        await alice.expect("user_info")
        bob_name = (await bob.expect("user_info"))["data"]["nickname"]

        reply = await alice.request({"type": "set_nickname", "nickname": "alice_1"})
        assert reply["type"] == "user_info", reply
        assert reply["data"]["nickname"] == "alice_1"

        async def refused(client: BusClient, nickname: str, codes: set[str]) -> None:
            reply = await client.request({"type": "set_nickname", "nickname": nickname})
            assert reply["type"] == "error" and reply["code"] in codes, (nickname, reply)
            await assert_alive(client)

        await refused(alice, bob_name, {"conflict"})  # another guest's nickname
        await refused(bob, "alice_1", {"conflict"})
        await refused(bob, "hal", {"conflict"})  # the sysop's
        for reserved in ("sysop", "Admin", "SYSOP", "root"):
            await refused(bob, reserved, {"conflict", "forbidden", "invalid"})
        for bad in ("ab", "", "<script>", "a b c", "x" * 33, "a\u0000b", "../../etc"):
            await refused(alice, bad, {"invalid"})

    async with httpx.AsyncClient(base_url=broker.url) as http:
        me = await http.get("/api/v1/me", headers=as_cookie(alice_cookie))
        assert me.json()["nickname"] == "alice_1"
        me = await http.get("/api/v1/me", headers=as_cookie(bob_cookie))
        assert me.json()["nickname"] == bob_name
    async with broker.bus(cookie=alice_cookie) as again:
        assert (await again.expect("user_info"))["data"]["nickname"] == "alice_1"


# --- queries -------------------------------------------------------------------------------


async def test_submit_refusals_then_chat_end_to_end(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    cookie = await realm.broker.guest_cookie()
    async with realm.broker.bus(cookie=cookie) as bus:
        await bus.expect("user_info")
        reply = await bus.request(chat_query("anyone there?"))
        assert reply["type"] == "error" and reply["code"] == "no_worker", reply
        reply = await bus.request({"type": "chat", "prompt": "anyone there?"})
        assert reply["type"] == "error" and reply["code"] == "no_worker", reply
        # Refused at submit time: no job was created to wait forever.
        async with httpx.AsyncClient(base_url=realm.broker.url) as http:
            history = await http.get("/api/v1/queries", headers=as_cookie(cookie))
            assert history.status_code == 200 and history.json() == []

        await realm.add_worker("w1", rentahal_stub)
        for empty in ("", "   \n\t"):
            reply = await bus.request(chat_query(empty))
            assert reply["type"] == "error" and reply["code"] == "invalid", reply

        reply = await bus.request({"type": "chat", "prompt": "hello there"})
        assert reply["type"] == "query_accepted", reply
        query_id = reply["query_id"]
        result = await bus.expect("query_result", lambda m: m["query_id"] == query_id)
        assert result["result"] == "echo: hello there"

        reply = await bus.request({"type": "get_previous_queries"})
        assert reply["type"] == "previous_queries"
        (finished,) = [q for q in reply["data"] if q["query_id"] == query_id]
        assert finished["state"] == "done"
        assert finished["prompt"] == "hello there"
        assert finished["result"] == "echo: hello there"
        assert finished["worker"] == "w1"
    sent = [r for r in await rentahal_stub.requests() if r["method"] == "POST"]
    assert [r["json"]["prompt"] for r in sent] == ["hello there"]


async def test_cancel_own_running_query(realm: Realm, rentahal_stub: StubServer) -> None:
    await slow_stub(rentahal_stub, latency=5)
    await realm.add_worker("w1", rentahal_stub)
    broker = realm.broker
    async with (
        broker.bus(cookie=await broker.guest_cookie()) as owner,
        broker.bus(cookie=await broker.guest_cookie()) as other,
    ):
        await owner.expect("user_info")
        await other.expect("user_info")
        before = (await rentahal_stub.stats())["disconnected"]
        query_id = await submit(owner, "take your time")
        await owner.expect(
            "query_status", lambda m: m["query_id"] == query_id and m["state"] == "dispatched"
        )

        async def stub_busy() -> bool:
            return (await rentahal_stub.stats())["in_flight"] >= 1

        await eventually(stub_busy, within=5)

        # Someone else's query is not theirs to cancel (and not even visible to them).
        reply = await other.request({"type": "cancel_query", "query_id": query_id})
        assert reply["type"] == "error" and reply["code"] == "not_found", reply
        reply = await owner.request({"type": "cancel_query", "query_id": "0" * 32})
        assert reply["type"] == "error" and reply["code"] == "not_found", reply
        assert (await rentahal_stub.stats())["in_flight"] == 1
        assert not any(
            m["type"] == "query_status" and m["state"] == "cancelled" for m in owner.seen
        )

        started = time.monotonic()
        cancelled = await owner.request({"type": "cancel_query", "query_id": query_id})
        assert cancelled["type"] == "ok", cancelled  # the direct reply echoes the id
        await owner.expect(
            "query_status", lambda m: m["query_id"] == query_id and m["state"] == "cancelled"
        )
        error = await owner.expect("error", lambda m: m.get("query_id") == query_id)
        assert error["code"] == "cancelled"

        async def worker_saw_disconnect() -> bool:
            return (await rentahal_stub.stats())["disconnected"] > before

        await eventually(worker_saw_disconnect, within=3)
        assert time.monotonic() - started < 3  # well before the stub's 5 s answer
        assert not any(m["type"] == "query_result" for m in owner.seen)
        assert not any(m.get("query_id") == query_id for m in other.seen)

        reply = await owner.request({"type": "cancel_query", "query_id": query_id})
        assert reply["type"] == "error" and reply["code"] == "conflict", reply
        await assert_alive(owner)


async def test_two_users_share_one_slow_worker_concurrently(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await slow_stub(rentahal_stub, latency=1.0)
    await realm.add_worker("w1", rentahal_stub)  # max_concurrency 4 by default
    broker = realm.broker
    async with (
        broker.bus(cookie=await broker.guest_cookie()) as first,
        broker.bus(cookie=await broker.guest_cookie()) as second,
    ):
        await first.expect("user_info")
        await second.expect("user_info")
        started = time.monotonic()
        ids = await asyncio.gather(submit(first, "one"), submit(second, "two"))
        results = await asyncio.gather(
            first.expect("query_result", lambda m: m["query_id"] == ids[0]),
            second.expect("query_result", lambda m: m["query_id"] == ids[1]),
        )
        elapsed = time.monotonic() - started
    assert [r["result"] for r in results] == ["echo: one", "echo: two"]
    assert 1.0 <= elapsed < 1.8, f"two 1 s queries took {elapsed:.2f} s: not run in parallel"


async def test_results_finished_while_away_are_delivered_on_reconnect(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await slow_stub(rentahal_stub, latency=1.0)
    await realm.add_worker("w1", rentahal_stub)
    broker = realm.broker
    cookie = await broker.guest_cookie()
    async with broker.bus(cookie=cookie) as bus:
        await bus.expect("user_info")
        query_id = await submit(bus, "tell me later")
        await bus.expect(
            "query_status", lambda m: m["query_id"] == query_id and m["state"] == "dispatched"
        )
    assert not any(m["type"] == "query_result" for m in bus.seen)

    async with httpx.AsyncClient(base_url=broker.url, headers=as_cookie(cookie)) as http:

        async def finished() -> bool:
            response = await http.get(f"/api/v1/queries/{query_id}", params={"wait": 5})
            assert response.status_code == 200, response.text
            return bool(response.json()["state"] == "done")

        await eventually(finished, within=15)

    async with broker.bus(cookie=cookie) as back:
        result = await back.expect("query_result", lambda m: m["query_id"] == query_id)
        assert result["result"] == "echo: tell me later"
        assert result["processing_time"] >= 1.0
    async with broker.bus(cookie=cookie) as again:
        await again.expect("user_info")
        # Missed results are queued during the greeting, before any reply to a request.
        await assert_alive(again)
        assert not any(m["type"] == "query_result" for m in again.seen)


# --- heartbeat -----------------------------------------------------------------------------


async def test_ping_pong_and_silent_clients_are_dropped(tmp_path: Path) -> None:
    interval = 0.5
    env = {"RENTAHAL_PING_INTERVAL": str(interval)}
    async with BrokerProcess(tmp_path, env=env) as broker, broker.bus() as polite:
        await polite.expect("user_info")
        await assert_alive(polite)  # the broker answers ping with pong

        # A raw client that reads but never answers the broker's pings.
        received: list[dict[str, Any]] = []
        started = time.monotonic()
        async with connect(broker.ws_url, ping_interval=None) as silent:

            async def read_until_closed() -> None:
                try:
                    async for raw in silent:
                        received.append(json.loads(raw))
                except ConnectionClosed:
                    pass

            await asyncio.wait_for(read_until_closed(), timeout=10 * interval)
            dropped_after = time.monotonic() - started
            assert silent.close_code == 1001, silent.close_code
        assert [m["type"] for m in received[:2]] == ["vocabulary", "user_info"]
        assert any(m["type"] == "ping" for m in received)
        assert 2 * interval <= dropped_after < 5 * interval, dropped_after

        # The client that answers pings (BusClient does) outlived it and is still served.
        assert sum(m["type"] == "ping" for m in polite.seen) >= 2
        assert not polite.closed.is_set()
        await assert_alive(polite)
